"""Image-quality metrics with stated conventions: PSNR, NRMSE and SSIM (explicit data range, optional mask).

Conventions shared by :func:`psnr`, :func:`nrmse` and :func:`ssim`
-----------------------------------------------------------------

- ``image`` (the estimate ``x``) and ``reference`` (``r``, e.g. the full-count image) are real tensors of the
  same shape ``(*batch, *spatial)``.  ``spatial_dims`` says how many trailing dimensions form one image; every
  leading dimension is a batch dimension and the result has shape ``batch`` (one value per image).  For
  :func:`psnr` / :func:`nrmse` ``spatial_dims=None`` (the default) treats the whole tensor as one image and
  returns a 0-d tensor; :func:`ssim` needs ``spatial_dims`` in ``{2, 3}``.  A MONAI-style ``(B, C, H, W)`` input
  with ``spatial_dims=2`` gives ``(B, C)`` values.
- ``mask`` (optional) is a ``torch.bool`` tensor of the image's full shape or of its spatial shape (then the same
  region for every image); it must select at least one voxel of every image.  PSNR / NRMSE use only voxels in
  the mask; for SSIM see :class:`SSIMMaskPolicy`.  Without a mask every voxel counts.
- Inputs must be finite everywhere (also outside the mask).  All sums run in float64 on the input's device; the
  result is float64.
- ``data_range`` (PSNR, SSIM) is required: a finite number ``> 0``, or a :class:`DataRange` evaluated per image
  on the reference within the mask.  ``DataRange.REFERENCE_MAX`` is the "reference-normalised" convention
  (LegoPET): PSNR and SSIM with ``L = max(r)`` equal those of ``x / max(r)`` and ``r / max(r)`` with ``L = 1``
  (both are invariant to scaling images and ``L`` together).

Definitions (``M`` = voxels of one image in the mask, ``|M|`` their number)::

    MSE   = (1/|M|) Σ_{v∈M} (x_v − r_v)²            RMSE = sqrt(MSE)
    PSNR  = 10 · log10(L² / MSE)  [dB]               (+inf where x == r on M)
    NRMSE = ‖x − r‖₂ / ‖r‖₂  over M                  (NORM, default; the PET-DDS(-δ) paper's NRMSE)
          = RMSE / (max_M r − min_M r)               (RANGE)
          = RMSE / mean_M r                          (MEAN)
    SSIM map (Wang et al. 2004, as MONAI's SSIMMetric), window w (Gaussian σ = 1.5, 11 taps, or uniform 7 taps),
          μ_x = w * x,  σ_x² = w * x² − μ_x²,  σ_xy = w * (x r) − μ_x μ_r,  c1 = (k1 L)²,  c2 = (k2 L)²
          S = (2 μ_x μ_r + c1)(2 σ_xy + c2) / ((μ_x² + μ_r² + c1)(σ_x² + σ_r² + c2))
    SSIM  = mean of S over the windows selected by the mask policy.

Without a mask :func:`psnr` equals ``monai.metrics.PSNRMetric(max_val=L)`` and :func:`ssim` equals
``monai.metrics.SSIMMetric`` (same kernel, ``k1``, ``k2``, data range; "valid" windows only) per image; the tests
use MONAI as the reference implementation there.

One convention for every table: :func:`bundle.metrics.image_metrics`; table writers: :mod:`bundle.evaluation`.
"""

from __future__ import annotations

import enum
import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_int as _check_int

__all__ = [
    "DataRange",
    "NRMSENormalisation",
    "SSIMKernel",
    "SSIMMaskPolicy",
    "nrmse",
    "psnr",
    "ssim",
]


class DataRange(enum.StrEnum):
    """Data range ``L`` of PSNR / SSIM taken from the reference, per image and within the mask."""

    REFERENCE_MAX = "reference_max"
    """``L = max_M r`` (reference-normalised: the metric of ``x / max r`` vs ``r / max r`` with ``L = 1``)."""
    REFERENCE_RANGE = "reference_range"
    """``L = max_M r − min_M r`` (the usual "dynamic range" of the reference)."""


class NRMSENormalisation(enum.StrEnum):
    """Denominator of the NRMSE (all over the mask ``M``)."""

    NORM = "norm"
    """``‖x − r‖₂ / ‖r‖₂`` (= RMSE / RMS(r)); the PET-DDS(-δ) paper's NRMSE, the default."""
    RANGE = "range"
    """``RMSE / (max r − min r)``."""
    MEAN = "mean"
    """``RMSE / mean r`` (the reference mean must be > 0, as for PET activity)."""


class SSIMKernel(enum.StrEnum):
    """SSIM window (same names as ``monai.metrics.regression.KernelType``)."""

    GAUSSIAN = "gaussian"
    """Separable Gaussian, σ = ``kernel_sigma`` (1.5), ``kernel_size`` taps (11), normalised to sum 1."""
    UNIFORM = "uniform"
    """Box of ``kernel_size`` taps (7) per axis, weights ``1 / kernel_size**spatial_dims``."""


class SSIMMaskPolicy(enum.StrEnum):
    """Which windows of the SSIM map a mask selects.

    SSIM is computed on "valid" windows only (every tap inside the image, as MONAI and Wang et al.), so a window is
    identified by its centre voxel and centres closer than ``kernel_size // 2`` to the image border have none.
    """

    CENTRE = "centre"
    """Average the SSIM map over the mask voxels (windows centred on a mask voxel).  The default.  Windows at the
    mask's edge see voxels just outside it, so values within ``kernel_size // 2`` of the mask still matter."""
    WINDOW = "window"
    """Average over windows lying entirely inside the mask (the mask eroded by the window): the value does not
    depend on anything outside the mask.  With a box mask it equals SSIM of the image cropped to the box."""


_DEFAULT_KERNEL_SIZE = {SSIMKernel.GAUSSIAN: 11, SSIMKernel.UNIFORM: 7}


# --------------------------------------------------------------------------------------------------- validation


def _check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number > 0, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value


def _check_enum(value: object, enum_type: type[enum.StrEnum], name: str) -> enum.StrEnum:
    try:
        return enum_type(value)
    except ValueError:
        choices = [m.value for m in enum_type]
        raise ValueError(f"{name} must be one of {choices}, got {value!r}") from None


def _check_tensor(value: object, name: str) -> torch.Tensor:
    """Real (integer or floating, not bool/complex), finite tensor, returned as float64."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
    value = value.detach().to(torch.float64)
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must be finite (it holds NaN or ±inf)")
    return value


def _check_pair(image: object, reference: object) -> tuple[torch.Tensor, torch.Tensor]:
    x = _check_tensor(image, "image")
    r = _check_tensor(reference, "reference")
    if x.shape != r.shape:
        raise ValueError(
            f"image and reference must have the same shape, got image {tuple(x.shape)} and reference {tuple(r.shape)}"
        )
    if x.device != r.device:
        raise ValueError(f"image and reference must be on the same device, got {x.device} and {r.device}")
    return x, r


def _check_spatial_dims(spatial_dims: object, ndim: int, *, allowed: tuple[int, ...] | None = None) -> int:
    """Number of trailing image dimensions (``None`` -> all of them)."""
    if spatial_dims is None and allowed is None:
        return ndim
    if allowed is not None:
        if isinstance(spatial_dims, bool) or spatial_dims not in allowed:
            raise ValueError(f"spatial_dims must be one of {list(allowed)}, got {spatial_dims!r}")
        spatial_dims = int(spatial_dims)  # type: ignore[arg-type]
    else:
        spatial_dims = _check_int(spatial_dims, "spatial_dims", minimum=1)
    if spatial_dims > ndim:
        raise ValueError(f"spatial_dims={spatial_dims} exceeds the number of image dimensions ({ndim})")
    return spatial_dims


def _at(bad: torch.Tensor, batch_shape: torch.Size) -> str:
    """Suffix naming the images where ``bad`` (flat, ``(prod(batch_shape),)``) holds; empty for a single image."""
    if len(batch_shape) == 0:
        return ""
    flat = torch.nonzero(bad.reshape(-1)).flatten().tolist()
    if len(batch_shape) == 1:
        where: list[object] = [int(k) for k in flat]
    else:
        where = [tuple(int(i) for i in np.unravel_index(k, tuple(batch_shape))) for k in flat]
    return f" for the image(s) at batch index {where}"


def _check_mask(mask: object, shape: torch.Size, spatial_dims: int, device: torch.device) -> torch.Tensor | None:
    """The mask expanded to ``shape`` (or ``None``); every image must keep at least one voxel."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor of dtype torch.bool, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a torch.Tensor of dtype torch.bool, got dtype {mask.dtype}")
    spatial_shape = shape[len(shape) - spatial_dims :]
    if mask.shape not in (shape, spatial_shape):
        raise ValueError(
            f"mask must have the image's shape {tuple(shape)} or its spatial shape {tuple(spatial_shape)}, "
            f"got {tuple(mask.shape)}"
        )
    mask = mask.to(device).expand(shape)
    batch_shape = shape[: len(shape) - spatial_dims]
    counts = mask.reshape(*batch_shape, -1).sum(dim=-1)
    if bool((counts == 0).any()):
        raise ValueError("mask selects no voxel" + _at(counts == 0, batch_shape))
    return mask


def _flatten(t: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """``(*batch, *spatial)`` -> ``(prod(batch), prod(spatial))``."""
    return t.reshape(-1, math.prod(t.shape[t.ndim - spatial_dims :]))


def _masked_max(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(m, v, torch.full_like(v, -math.inf)).amax(dim=-1)


def _masked_min(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(m, v, torch.full_like(v, math.inf)).amin(dim=-1)


def _data_range(data_range: object, r: torch.Tensor, m: torch.Tensor, batch_shape: torch.Size) -> torch.Tensor:
    """``L`` per image, shape ``(B,)``; ``r`` and ``m`` are flattened ``(B, N)``."""
    if isinstance(data_range, str):
        kind = _check_enum(data_range, DataRange, "data_range")
        high = _masked_max(r, m)
        value = high if kind is DataRange.REFERENCE_MAX else high - _masked_min(r, m)
        bad = ~(value > 0)
        if bool(bad.any()):
            raise ValueError(f"data_range {kind.value!r} is not > 0 within the mask" + _at(bad, batch_shape))
        return value
    if isinstance(data_range, bool) or not isinstance(data_range, numbers.Real):
        raise TypeError(f"data_range must be a finite number > 0 or a DataRange, got {data_range!r}")
    if not (math.isfinite(float(data_range)) and float(data_range) > 0):
        raise ValueError(f"data_range must be a finite number > 0 or a DataRange, got {float(data_range)!r}")
    return torch.full((r.shape[0],), float(data_range), dtype=r.dtype, device=r.device)


def _prepare(
    image: object, reference: object, mask: object, spatial_dims: int | None, *, allowed: tuple[int, ...] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, torch.Size]:
    x, r = _check_pair(image, reference)
    sd = _check_spatial_dims(spatial_dims, x.ndim, allowed=allowed)
    m = _check_mask(mask, x.shape, sd, x.device)
    return x, r, m, sd, x.shape[: x.ndim - sd]


# ---------------------------------------------------------------------------------------------------- PSNR/NRMSE


def psnr(
    image: torch.Tensor,
    reference: torch.Tensor,
    *,
    data_range: float | DataRange | str,
    mask: torch.Tensor | None = None,
    spatial_dims: int | None = None,
) -> torch.Tensor:
    """Peak signal-to-noise ratio ``PSNR = 10 log10(L² / MSE)`` in dB, MSE over the mask.

    Args:
        image: estimate ``x``, shape ``(*batch, *spatial)``.
        reference: reference ``r``, same shape.
        data_range: ``L``, required: a finite number > 0 or a :class:`DataRange` (``REFERENCE_MAX`` = ``max_M r``,
            ``REFERENCE_RANGE`` = ``max_M r − min_M r``, per image).
        mask: optional ``torch.bool`` tensor of the full or the spatial shape; only its voxels count.
        spatial_dims: trailing dimensions forming one image (``None``: the whole tensor is one image).

    Returns:
        float64 tensor of shape ``batch``; ``+inf`` for an image equal to its reference on the mask.
    """
    x, r, m, sd, batch_shape = _prepare(image, reference, mask, spatial_dims)
    xf, rf = _flatten(x, sd), _flatten(r, sd)
    mf = torch.ones_like(xf, dtype=torch.bool) if m is None else _flatten(m, sd)
    L = _data_range(data_range, rf, mf, batch_shape)
    mse = torch.where(mf, (xf - rf) ** 2, 0.0).sum(dim=-1) / mf.sum(dim=-1)
    return (20.0 * torch.log10(L) - 10.0 * torch.log10(mse)).reshape(batch_shape)


def nrmse(
    image: torch.Tensor,
    reference: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    normalisation: NRMSENormalisation | str = NRMSENormalisation.NORM,
    spatial_dims: int | None = None,
) -> torch.Tensor:
    """Normalised root-mean-square error over the mask (a fraction; multiply by 100 for %).

    ``NORM``: ``‖x − r‖₂ / ‖r‖₂`` (default, PET-DDS-δ); ``RANGE``: ``RMSE / (max r − min r)``; ``MEAN``:
    ``RMSE / mean r``.  ``x = (1 + a) r`` gives ``|a|`` with ``NORM``.

    Args:
        image, reference, mask, spatial_dims: as :func:`psnr`.
        normalisation: a :class:`NRMSENormalisation`.

    Returns:
        float64 tensor of shape ``batch``.

    Raises:
        ValueError: where the denominator is not > 0 for an image (zero reference, constant reference for
            ``RANGE``, non-positive mean for ``MEAN``).
    """
    norm = _check_enum(normalisation, NRMSENormalisation, "normalisation")
    x, r, m, sd, batch_shape = _prepare(image, reference, mask, spatial_dims)
    xf, rf = _flatten(x, sd), _flatten(r, sd)
    mf = torch.ones_like(xf, dtype=torch.bool) if m is None else _flatten(m, sd)
    count = mf.sum(dim=-1)
    sq_err = torch.where(mf, (xf - rf) ** 2, 0.0).sum(dim=-1)
    if norm is NRMSENormalisation.NORM:
        numerator, denominator = sq_err.sqrt(), torch.where(mf, rf**2, 0.0).sum(dim=-1).sqrt()
    elif norm is NRMSENormalisation.RANGE:
        numerator, denominator = (sq_err / count).sqrt(), _masked_max(rf, mf) - _masked_min(rf, mf)
    else:
        numerator, denominator = (sq_err / count).sqrt(), torch.where(mf, rf, 0.0).sum(dim=-1) / count
    bad = ~(denominator > 0)
    if bool(bad.any()):
        raise ValueError(
            f"nrmse denominator ({norm.value}) of the reference is not > 0 within the mask" + _at(bad, batch_shape)
        )
    return (numerator / denominator).reshape(batch_shape)


# ---------------------------------------------------------------------------------------------------------- SSIM


def _kernel_1d(kernel: SSIMKernel, size: int, sigma: float) -> torch.Tensor:
    if kernel is SSIMKernel.UNIFORM:
        return torch.full((size,), 1.0 / size, dtype=torch.float64)
    dist = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (dist / sigma) ** 2)
    return g / g.sum()


def _separable_valid_conv(t: torch.Tensor, weights: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """``t`` of shape ``(B, C, *spatial)`` filtered per channel with ``w ⊗ … ⊗ w``, no padding ("valid")."""
    conv = F.conv2d if spatial_dims == 2 else F.conv3d
    channels, size = t.shape[1], weights.numel()
    for axis in range(spatial_dims):
        shape = [1] * spatial_dims
        shape[axis] = size
        w = weights.to(t).reshape(1, 1, *shape).expand(channels, 1, *shape)
        t = conv(t, w, groups=channels)
    return t


def ssim(
    image: torch.Tensor,
    reference: torch.Tensor,
    *,
    data_range: float | DataRange | str,
    spatial_dims: int,
    mask: torch.Tensor | None = None,
    mask_policy: SSIMMaskPolicy | str = SSIMMaskPolicy.CENTRE,
    kernel: SSIMKernel | str = SSIMKernel.GAUSSIAN,
    kernel_size: int | None = None,
    kernel_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with torch convolutions, one value per image.

    The SSIM map (formula in the module docstring) is computed on "valid" windows (every tap inside the image),
    exactly as ``monai.metrics.SSIMMetric``, with a separable window; the map entry of a window belongs to the
    window's centre voxel.  The result is the mean of the map over the windows that ``mask_policy`` selects
    (all valid windows without a mask, which equals MONAI's value).

    Args:
        image: estimate ``x``, shape ``(*batch, *spatial)`` with ``len(spatial) == spatial_dims``.
        reference: reference ``r``, same shape.
        data_range: ``L`` in ``c1 = (k1 L)²``, ``c2 = (k2 L)²``, required: number > 0 or :class:`DataRange`.
        spatial_dims: 2 or 3.
        mask: optional ``torch.bool`` tensor of the full or the spatial shape.
        mask_policy: :class:`SSIMMaskPolicy`: ``CENTRE`` (default) averages the map over mask voxels,
            ``WINDOW`` over windows lying entirely inside the mask.
        kernel: :class:`SSIMKernel` (Gaussian or uniform).
        kernel_size: odd number of taps per axis (``None``: 11 Gaussian, 7 uniform); at most each spatial size.
        kernel_sigma: Gaussian σ in voxels (ignored for the uniform kernel).
        k1, k2: stability constants (> 0).

    Returns:
        float64 tensor of shape ``batch``.

    Raises:
        ValueError: also where the mask leaves an image without a selected window (e.g. a mask only within
            ``kernel_size // 2`` of the border, or, for ``WINDOW``, a mask thinner than the window).
    """
    kern = _check_enum(kernel, SSIMKernel, "kernel")
    policy = _check_enum(mask_policy, SSIMMaskPolicy, "mask_policy")
    x, r, m, sd, batch_shape = _prepare(image, reference, mask, spatial_dims, allowed=(2, 3))
    size = _DEFAULT_KERNEL_SIZE[kern] if kernel_size is None else _check_int(kernel_size, "kernel_size", minimum=1)
    if size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a window has a centre voxel), got {size}")
    spatial_shape = tuple(x.shape[x.ndim - sd :])
    if size > min(spatial_shape):
        raise ValueError(f"kernel_size {size} exceeds the spatial shape {spatial_shape}")
    sigma = _check_positive(kernel_sigma, "kernel_sigma")
    c_1, c_2 = _check_positive(k1, "k1"), _check_positive(k2, "k2")

    xb, rb = x.reshape(-1, 1, *spatial_shape), r.reshape(-1, 1, *spatial_shape)
    mb = None if m is None else m.reshape(-1, 1, *spatial_shape)
    L = _data_range(
        data_range,
        rb.reshape(rb.shape[0], -1),
        torch.ones_like(rb, dtype=torch.bool).reshape(rb.shape[0], -1) if mb is None else mb.reshape(rb.shape[0], -1),
        batch_shape,
    ).reshape(-1, *([1] * (sd + 1)))

    w = _kernel_1d(kern, size, sigma)
    stats = _separable_valid_conv(torch.cat([xb, rb, xb * xb, rb * rb, xb * rb], dim=1), w, sd)
    mu_x, mu_r, mu_xx, mu_rr, mu_xr = stats.split(1, dim=1)
    var_x, var_r, cov = mu_xx - mu_x * mu_x, mu_rr - mu_r * mu_r, mu_xr - mu_x * mu_r
    c1, c2 = (c_1 * L) ** 2, (c_2 * L) ** 2
    ssim_map = ((2 * mu_x * mu_r + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_r**2 + c1) * (var_x + var_r + c2))

    if mb is None:
        return ssim_map.reshape(ssim_map.shape[0], -1).mean(dim=-1).reshape(batch_shape)
    if policy is SSIMMaskPolicy.CENTRE:
        pad = size // 2
        selected = mb[(..., *(slice(pad, n - pad) for n in spatial_shape))]
    else:
        inside = _separable_valid_conv(mb.to(torch.float64), torch.ones(size, dtype=torch.float64), sd)
        selected = inside > size**sd - 0.5
    selected = selected.reshape(selected.shape[0], -1)
    counts = selected.sum(dim=-1)
    if bool((counts == 0).any()):
        raise ValueError(
            f"mask selects no SSIM window (mask_policy={policy.value!r}, kernel_size={size})"
            + _at(counts == 0, batch_shape)
        )
    total = torch.where(selected, ssim_map.reshape(selected.shape), 0.0).sum(dim=-1)
    return (total / counts).reshape(batch_shape)
