"""Image-space resolution model: a separable, truncated Gaussian blur ``G`` as a self-adjoint :class:`LinearOperator`.

The blur along array axis ``d`` (images are ``(z, y, x)`` = (axial, transaxial, transaxial)) is the discrete
convolution with the sampled, truncated and normalised Gaussian

    g_d[k] = exp(−k² / (2 σ_d²)) / Σ_{|k'| ≤ r_d} exp(−k'² / (2 σ_d²)),   |k| ≤ r_d,

    σ_d = fwhm_mm[d] / (2 √(2 ln 2)) / voxel_size_mm[d]   (in voxels),   r_d = ⌊truncate_sigmas · σ_d + ½⌋,

and ``G x = g_0 ∗_0 (g_1 ∗_1 (g_2 ∗_2 x))`` with zero padding outside the image (the same kernel and radius rule as
``scipy.ndimage.gaussian_filter(x, sigma, mode="constant", truncate=truncate_sigmas)``).  Because each ``g_d`` is
symmetric and the padding is zero, every 1D factor is a symmetric Toeplitz matrix and the factors act on different
axes (they commute), so ``Gᵀ = G`` exactly: :meth:`GaussianResolution.adjoint` is the same convolution.  Activity
is preserved away from the edges (Σ g_d = 1); near an edge the part of the kernel outside the image is lost.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bundle.physics.operators import LinearOperator

__all__ = ["FWHM_PER_SIGMA", "GaussianResolution", "gaussian_kernel_1d"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""FWHM / σ of a Gaussian, 2 √(2 ln 2) ≈ 2.3548."""


def _positive_triple(value: object, name: str, *, allow_zero: bool, allow_scalar: bool) -> tuple[float, float, float]:
    """Validate a scalar or a length-3 sequence of finite (non-negative or positive) numbers; return a 3-tuple."""
    if allow_scalar and isinstance(value, numbers.Real) and not isinstance(value, bool):
        items: Sequence[object] = (value, value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3:
        items = value
    else:
        expected = "a number or a sequence of 3 numbers" if allow_scalar else "a sequence of 3 numbers"
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise TypeError(f"{name} must hold numbers, got {value!r}")
        item = float(item)
        bad = not math.isfinite(item) or item < 0.0 or (item == 0.0 and not allow_zero)
        if bad:
            expected = "finite and >= 0" if allow_zero else "finite and > 0"
            raise ValueError(f"{name} must be {expected} on every axis, got {value!r}")
        out.append(item)
    return out[0], out[1], out[2]


def gaussian_kernel_1d(sigma_voxels: float, *, truncate_sigmas: float = 4.0) -> torch.Tensor:
    """Sampled Gaussian ``g[k] ∝ exp(−k²/(2σ²))`` for ``|k| ≤ r = ⌊truncate_sigmas·σ + ½⌋``, normalised to sum 1.

    Returns a float64 CPU tensor of shape ``(2 r + 1,)``; ``σ = 0`` gives the identity kernel ``[1.0]``.
    """
    if not math.isfinite(sigma_voxels) or sigma_voxels < 0.0:
        raise ValueError(f"sigma_voxels must be finite and >= 0, got {sigma_voxels!r}")
    if not math.isfinite(truncate_sigmas) or truncate_sigmas <= 0.0:
        raise ValueError(f"truncate_sigmas must be finite and > 0, got {truncate_sigmas!r}")
    radius = int(truncate_sigmas * sigma_voxels + 0.5)
    if sigma_voxels == 0.0 or radius == 0:
        return torch.ones(1, dtype=torch.float64)
    k = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (k / sigma_voxels) ** 2)
    return g / g.sum()


class GaussianResolution(LinearOperator):
    """Separable Gaussian blur ``G`` of images of shape ``image_shape = (n_z, n_y, n_x)`` (self-adjoint).

    Args:
        image_shape: ``(n_z, n_y, n_x)``; ``in_shape == out_shape == image_shape``.
        fwhm_mm: full width at half maximum in mm, one number for all axes or one per axis ``(z, y, x)``.
            0 on an axis means no blur along it.
        voxel_size_mm: voxel size in mm per axis ``(z, y, x)``.
        truncate_sigmas: the kernel is cut at ``⌊truncate_sigmas·σ + ½⌋`` voxels from its centre (default 4,
            as scipy), then normalised to sum 1.

    Axes of length 1 are left unchanged (2D-slice convention): a single slice has no neighbours along that axis,
    and blurring it with zero padding would only multiply the image by the kernel's centre weight.  So a 2D
    slice of shape ``(1, n_y, n_x)`` with a scalar ``fwhm_mm`` gets the 2D transaxial blur and keeps its activity.

    Works on CPU and CUDA tensors in float32 and float64; the kernels (kept as float64 CPU tensors in
    :attr:`kernels`) are cast to the input's dtype and device.
    """

    def __init__(
        self,
        *,
        image_shape: Sequence[int],
        fwhm_mm: float | Sequence[float],
        voxel_size_mm: Sequence[float],
        truncate_sigmas: float = 4.0,
    ) -> None:
        if (
            not isinstance(image_shape, Sequence)
            or len(image_shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in image_shape)
        ):
            raise ValueError(f"image_shape must be 3 positive ints (n_z, n_y, n_x), got {image_shape!r}")
        if isinstance(truncate_sigmas, bool) or not isinstance(truncate_sigmas, numbers.Real):
            raise TypeError(f"truncate_sigmas must be a number > 0, got {truncate_sigmas!r}")
        if not math.isfinite(truncate_sigmas) or truncate_sigmas <= 0.0:
            raise ValueError(f"truncate_sigmas must be finite and > 0, got {truncate_sigmas!r}")
        fwhm = _positive_triple(fwhm_mm, "fwhm_mm", allow_zero=True, allow_scalar=True)
        voxel = _positive_triple(voxel_size_mm, "voxel_size_mm", allow_zero=False, allow_scalar=False)
        super().__init__(in_shape=image_shape, out_shape=image_shape)
        self.fwhm_mm = fwhm
        self.voxel_size_mm = voxel
        self.truncate_sigmas = float(truncate_sigmas)
        self.sigma_voxels = tuple(f / FWHM_PER_SIGMA / v for f, v in zip(fwhm, voxel, strict=True))
        kernels = []
        for sigma, n in zip(self.sigma_voxels, self.in_shape, strict=True):
            g = gaussian_kernel_1d(sigma, truncate_sigmas=self.truncate_sigmas)
            if n == 1:
                g = torch.ones(1, dtype=torch.float64)
            # Taps further than n - 1 voxels from the centre only ever meet zero padding: drop them (exactly).
            radius = (g.numel() - 1) // 2
            keep = min(radius, n - 1)
            kernels.append(g[radius - keep : radius + keep + 1].clone())
        self.kernels: tuple[torch.Tensor, ...] = tuple(kernels)
        """Per-axis 1D kernels (float64, CPU), possibly trimmed to the image length; length-1 = identity."""

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        for axis, kernel in enumerate(self.kernels):
            if kernel.numel() == 1:
                continue
            radius = (kernel.numel() - 1) // 2
            moved = x.movedim(axis, -1)
            lead = moved.shape[:-1]
            rows = moved.reshape(-1, 1, moved.shape[-1])
            weight = kernel.to(dtype=x.dtype, device=x.device).reshape(1, 1, -1)
            rows = F.conv1d(rows, weight, padding=radius)
            x = rows.reshape(*lead, moved.shape[-1]).movedim(-1, axis)
        return x.contiguous()

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_floating_point(x):
            raise TypeError(f"GaussianResolution input must be a floating-point tensor, got dtype {x.dtype}")
        out = self._blur(x)
        return out.clone() if out.data_ptr() == x.data_ptr() else out  # never alias the input

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._apply(y)  # symmetric kernels + zero padding: Gᵀ = G

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_shape={self.in_shape}, fwhm_mm={self.fwhm_mm}, "
            f"voxel_size_mm={self.voxel_size_mm}, truncate_sigmas={self.truncate_sigmas})"
        )
