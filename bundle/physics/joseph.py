"""Joseph ray-driven forward and back projection for arbitrary lines of response (LORs), non-TOF.

Conventions are those of parallelproj's ``joseph3d_fwd`` / ``joseph3d_back`` (v1):

* ``image`` has shape (n0, n1, n2); ``xstart`` / ``xend`` have shape (..., 3) and hold the LOR end points in
  mm in *array-axis order* (component k is the coordinate along image axis k);
* ``image_origin`` (3,) is the world coordinate (mm) of the centre of voxel [0, 0, 0] and ``voxel_size`` (3,)
  the voxel size in mm, so voxel [i, j, k] is centred at ``image_origin + (i, j, k) * voxel_size``;
* the forward projection is the line integral (mm × image units) sampled on the voxel-centre planes of the
  LOR's principal axis with bilinear interpolation (zero outside the image), see :mod:`.kernels.ray`;
* :func:`joseph_back` is the exact adjoint of :func:`joseph_forward` (same weights).

Backends (:class:`ProjectorBackend`): ``numba`` compiled kernels (CPU threads or CUDA, chosen by the tensor's
device), ``torch`` plain-torch reference (any device, slow), ``parallelproj`` when that optional package is
importable.  ``auto`` picks ``numba`` and falls back to ``torch`` (with a warning) when numba cannot drive the
tensor's device.  Both functions are differentiable in their first argument (the gradient is the exact adjoint).
"""

from __future__ import annotations

import enum
import functools
import warnings
from collections.abc import Sequence

import torch

from .kernels.reference import reference_back_project, reference_forward_project

__all__ = ["ProjectorBackend", "joseph_back", "joseph_forward", "resolve_backend"]


class ProjectorBackend(enum.StrEnum):
    """Which implementation runs the Joseph projector."""

    AUTO = "auto"
    NUMBA = "numba"
    TORCH = "torch"
    PARALLELPROJ = "parallelproj"


@functools.cache
def _numba_cuda_ok() -> bool:
    from .kernels.cuda import numba_cuda_available

    return numba_cuda_available()


def resolve_backend(backend: ProjectorBackend | str, device: torch.device) -> ProjectorBackend:
    """The concrete backend that ``backend`` means for tensors on ``device``."""
    try:
        backend = ProjectorBackend(backend)
    except ValueError:
        raise ValueError(
            f"backend must be one of {[b.value for b in ProjectorBackend]}, got {backend!r}"
        ) from None
    if backend is not ProjectorBackend.AUTO:
        if backend is ProjectorBackend.NUMBA and device.type == "cuda" and not _numba_cuda_ok():
            raise ValueError("backend='numba' was requested for CUDA tensors but numba cannot use the GPU here")
        if backend is ProjectorBackend.NUMBA and device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend='numba' supports cpu and cuda tensors, got device {device}")
        return backend
    if device.type == "cpu" or (device.type == "cuda" and _numba_cuda_ok()):
        return ProjectorBackend.NUMBA
    warnings.warn(
        f"no compiled Joseph kernel for device {device}; using the slow plain-torch reference projector",
        RuntimeWarning,
        stacklevel=3,
    )
    return ProjectorBackend.TORCH


def _as_vector3(value: torch.Tensor | Sequence[float], name: str, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.shape != (3,):
        raise ValueError(f"{name} must have 3 entries (mm, array-axis order), got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t.contiguous()


def _check_lors(xstart: torch.Tensor, xend: torch.Tensor, like: torch.Tensor, like_name: str) -> None:
    for name, x in (("xstart", xstart), ("xend", xend)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (..., 3), got {type(x).__name__}")
        if x.ndim < 1 or x.shape[-1] != 3:
            raise ValueError(f"{name} must have shape (..., 3) (mm, array-axis order), got {tuple(x.shape)}")
        if x.dtype != like.dtype:
            raise TypeError(f"{name} dtype {x.dtype} must equal the {like_name} dtype {like.dtype}")
        if x.device != like.device:
            raise ValueError(f"{name} is on {x.device} but {like_name} is on {like.device}; use one device")
    if xstart.shape != xend.shape:
        raise ValueError(f"xstart {tuple(xstart.shape)} and xend {tuple(xend.shape)} must have the same shape")


def _check_float(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")


def _check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf; expected finite values")


def _numba_stream(device: torch.device):
    from numba import cuda

    handle = torch.cuda.current_stream(device).cuda_stream
    return cuda.external_stream(handle) if handle else cuda.default_stream()


def _forward_impl(image, xstart, xend, origin, voxel, backend: ProjectorBackend) -> torch.Tensor:
    """Unchecked forward projection of (n0, n1, n2) along flat LORs (N, 3) -> (N,)."""
    if backend is ProjectorBackend.TORCH:
        return reference_forward_project(image, xstart, xend, origin, voxel)
    if backend is ProjectorBackend.PARALLELPROJ:
        from .parallelproj_backend import parallelproj_forward

        return parallelproj_forward(image, xstart, xend, origin, voxel)
    if image.device.type == "cpu":
        from .kernels.cpu import forward_project

        out = forward_project(*(t.detach().numpy() for t in (image, xstart, xend, origin, voxel)))
        return torch.from_numpy(out)
    from numba import cuda

    from .kernels.cuda import cuda_forward_project

    out = torch.empty(xstart.shape[0], dtype=image.dtype, device=image.device)
    with cuda.gpus[image.device.index or 0]:
        cuda_forward_project(
            *(cuda.as_cuda_array(t.detach(), sync=False) for t in (image.reshape(-1),)), image.shape,
            *(cuda.as_cuda_array(t.detach(), sync=False) for t in (xstart, xend, origin, voxel, out)),
            stream=_numba_stream(image.device),
        )
    return out


def _back_impl(values, xstart, xend, image_shape, origin, voxel, backend: ProjectorBackend) -> torch.Tensor:
    """Unchecked back projection of flat ``values`` (N,) -> image of ``image_shape``."""
    if backend is ProjectorBackend.TORCH:
        return reference_back_project(values, xstart, xend, image_shape, origin, voxel)
    if backend is ProjectorBackend.PARALLELPROJ:
        from .parallelproj_backend import parallelproj_back

        return parallelproj_back(values, xstart, xend, image_shape, origin, voxel)
    if values.device.type == "cpu":
        from .kernels.cpu import back_project

        vals, xs, xe, o, v = (t.detach().numpy() for t in (values, xstart, xend, origin, voxel))
        out = back_project(vals, xs, xe, image_shape, o, v)
        return torch.from_numpy(out)
    from numba import cuda

    from .kernels import cuda as cuda_kernels

    n0, n1, n2 = image_shape
    image = torch.zeros(image_shape, dtype=values.dtype, device=values.device)
    buffers = [image.view(-1)]
    if cuda_kernels.X_PRINCIPAL_INTO_ZXY:
        image_zxy = torch.zeros((n0, n2, n1), dtype=values.dtype, device=values.device)
        buffers.append(image_zxy.view(-1))
    with cuda.gpus[values.device.index or 0]:
        cuda_kernels.cuda_back_project(
            *(cuda.as_cuda_array(t.detach(), sync=False) for t in (values, xstart, xend)), image_shape,
            *(cuda.as_cuda_array(t.detach(), sync=False) for t in (origin, voxel, *buffers)),
            stream=_numba_stream(values.device),
        )
    if len(buffers) == 2:
        image += image_zxy.transpose(1, 2)
    return image


class _JosephForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image, xstart, xend, origin, voxel, backend):  # type: ignore[override]
        ctx.save_for_backward(xstart, xend, origin, voxel)
        ctx.image_shape = tuple(image.shape)
        ctx.backend = backend
        return _forward_impl(image, xstart, xend, origin, voxel, backend)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        xstart, xend, origin, voxel = ctx.saved_tensors
        image_grad = _back_impl(grad.contiguous(), xstart, xend, ctx.image_shape, origin, voxel, ctx.backend)
        return image_grad, None, None, None, None, None


class _JosephBack(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, xstart, xend, image_shape, origin, voxel, backend):  # type: ignore[override]
        ctx.save_for_backward(xstart, xend, origin, voxel)
        ctx.backend = backend
        return _back_impl(values, xstart, xend, image_shape, origin, voxel, backend)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        xstart, xend, origin, voxel = ctx.saved_tensors
        values_grad = _forward_impl(grad.contiguous(), xstart, xend, origin, voxel, ctx.backend)
        return values_grad, None, None, None, None, None, None


def _prepare_geometry(xstart, xend, image_origin, voxel_size, like, like_name, *, check_finite: bool):
    _check_lors(xstart, xend, like, like_name)
    origin = _as_vector3(image_origin, "image_origin", like)
    voxel = _as_vector3(voxel_size, "voxel_size", like)
    if not bool((voxel > 0).all()):
        raise ValueError(f"voxel_size must be positive (mm), got {voxel.tolist()}")
    if check_finite:
        _check_finite(xstart, "xstart")
        _check_finite(xend, "xend")
    return xstart.reshape(-1, 3).contiguous(), xend.reshape(-1, 3).contiguous(), origin, voxel


def joseph_forward(
    image: torch.Tensor,
    xstart: torch.Tensor,
    xend: torch.Tensor,
    image_origin: torch.Tensor | Sequence[float],
    voxel_size: torch.Tensor | Sequence[float],
    *,
    backend: ProjectorBackend | str = ProjectorBackend.AUTO,
    check_finite: bool = True,
) -> torch.Tensor:
    """Joseph forward projection: line integrals of ``image`` along each LOR.

    Args:
        image: (n0, n1, n2) float32 or float64, on CPU or CUDA.
        xstart, xend: (..., 3) LOR end points in mm, array-axis order, same dtype and device as ``image``.
        image_origin: (3,) world coordinate in mm of the centre of voxel [0, 0, 0].
        voxel_size: (3,) voxel size in mm.
        backend: see :class:`ProjectorBackend`.
        check_finite: verify that image and LOR end points are finite (one pass over each).

    Returns:
        (...,) line integrals in mm × image units, same dtype and device as ``image``.
    """
    _check_float(image, "image")
    if image.ndim != 3:
        raise ValueError(f"image must have shape (n0, n1, n2), got {tuple(image.shape)}")
    lead_shape = xstart.shape[:-1] if isinstance(xstart, torch.Tensor) else ()
    xs, xe, origin, voxel = _prepare_geometry(
        xstart, xend, image_origin, voxel_size, image, "image", check_finite=check_finite
    )
    if check_finite:
        _check_finite(image, "image")
    chosen = resolve_backend(backend, image.device)
    image_c = image.contiguous()
    if torch.is_grad_enabled() and image.requires_grad:
        out = _JosephForward.apply(image_c, xs, xe, origin, voxel, chosen)
    else:
        out = _forward_impl(image_c, xs, xe, origin, voxel, chosen)
    return out.reshape(lead_shape)


def joseph_back(
    values: torch.Tensor,
    xstart: torch.Tensor,
    xend: torch.Tensor,
    image_shape: Sequence[int],
    image_origin: torch.Tensor | Sequence[float],
    voxel_size: torch.Tensor | Sequence[float],
    *,
    backend: ProjectorBackend | str = ProjectorBackend.AUTO,
    check_finite: bool = True,
) -> torch.Tensor:
    """Joseph back projection, the exact adjoint of :func:`joseph_forward`.

    Args:
        values: (...,) one value per LOR, float32 or float64.
        xstart, xend: (..., 3) LOR end points in mm, same leading shape, dtype and device as ``values``.
        image_shape: (n0, n1, n2) of the output image.
        image_origin, voxel_size, backend, check_finite: as in :func:`joseph_forward`.

    Returns:
        (n0, n1, n2) image, same dtype and device as ``values``.
    """
    _check_float(values, "values")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image_shape must be three positive sizes (n0, n1, n2), got {tuple(image_shape)}")
    xs, xe, origin, voxel = _prepare_geometry(
        xstart, xend, image_origin, voxel_size, values, "values", check_finite=check_finite
    )
    if tuple(values.shape) != tuple(xstart.shape[:-1]):
        raise ValueError(f"values shape {tuple(values.shape)} must equal the LOR shape {tuple(xstart.shape[:-1])}")
    if check_finite:
        _check_finite(values, "values")
    chosen = resolve_backend(backend, values.device)
    flat = values.reshape(-1).contiguous()
    if torch.is_grad_enabled() and values.requires_grad:
        return _JosephBack.apply(flat, xs, xe, shape, origin, voxel, chosen)
    return _back_impl(flat, xs, xe, shape, origin, voxel, chosen)

