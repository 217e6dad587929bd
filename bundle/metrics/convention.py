"""The project's one image-metric convention: :func:`image_metrics` gives PSNR, SSIM and NRMSE of one image.

Every table of the project (the three evaluations, the main-job demo, validation during training) scores images
through :func:`image_metrics`, so their numbers are comparable.  The default convention
(:attr:`MetricConvention.DEFAULT`, stated in ``docs/metrics.md``):

- the image is squeezed: axes of size 1 are dropped, what is left (2 or 3 axes) is the image; ``mask`` (optional,
  ``torch.bool``, the image's shape) is squeezed the same way;
- data range ``L = max_M r``, the reference maximum within the mask ``M`` (the whole image without a mask);
- PSNR = 10 log10(L² / MSE_M) in dB, MSE over the mask;
- NRMSE = ‖x − r‖₂,M / ‖r‖₂,M as a fraction (:attr:`~bundle.metrics.NRMSENormalisation.NORM`);
- SSIM (Wang et al. 2004, k1 = 0.01, k2 = 0.03) with a Gaussian window, σ = 1.5 voxels and
  ``min(11, largest odd number <= the smallest squeezed image size)`` taps per axis (11 for every image of at least
  11 voxels a side, 7 for the 8-slice ``small_3d`` volume), averaged over windows centred in the mask
  (:attr:`~bundle.metrics.SSIMMaskPolicy.CENTRE`), as a fraction.

Named options reproduce the conventions of earlier tables (``docs/metrics.md`` says which table used which):

- :attr:`MetricConvention.PETDDS`: the default with NRMSE and SSIM in percent (the PET-DDS(-δ) paper's Table I);
- :attr:`MetricConvention.UPETE`: ``L = max_M r − min_M r`` and a 7-tap Gaussian SSIM window (the first uPETe
  tables).

The LegoPET tables (2D slices, no mask, ``L = max r``, 11-tap window) already follow the default.  Importing runs
nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from .._checks import check_choice
from .image_quality import DataRange, nrmse, psnr, ssim

__all__ = ["MetricConvention", "image_metrics", "ssim_kernel_size", "units"]


class MetricConvention(enum.StrEnum):
    """Named metric conventions of :func:`image_metrics` (the module docstring states each one)."""

    DEFAULT = "default"
    """``L = max_M r``; SSIM Gaussian σ 1.5, :func:`ssim_kernel_size` taps; NRMSE ‖x − r‖/‖r‖; dB, fractions."""
    PETDDS = "petdds"
    """The default with NRMSE and SSIM in % (PET-DDS(-δ) paper, Table I)."""
    UPETE = "upete"
    """``L = max_M r − min_M r``, SSIM Gaussian σ 1.5 with 7 taps, fractions (the first uPETe tables)."""


@dataclass(frozen=True)
class _Settings:
    data_range: DataRange
    kernel_size: int | None  # None: ssim_kernel_size of the image
    percent: bool


_SETTINGS = {
    MetricConvention.DEFAULT: _Settings(DataRange.REFERENCE_MAX, None, percent=False),
    MetricConvention.PETDDS: _Settings(DataRange.REFERENCE_MAX, None, percent=True),
    MetricConvention.UPETE: _Settings(DataRange.REFERENCE_RANGE, 7, percent=False),
}


def ssim_kernel_size(shape: tuple[int, ...] | torch.Size) -> int:
    """Taps of the default SSIM window for an image of (squeezed) ``shape``: min(11, largest odd <= min(shape))."""
    size = min(11, min(shape))
    return size if size % 2 == 1 else size - 1


def units(convention: MetricConvention | str = MetricConvention.DEFAULT) -> dict[str, str]:
    """``{metric: unit}`` of :func:`image_metrics` under ``convention`` (for table footnotes and JSON settings)."""
    percent = _SETTINGS[check_choice(convention, MetricConvention, "convention")].percent
    share = "%" if percent else "fraction"
    return {"PSNR": "dB", "SSIM": share, "NRMSE": share}


def image_metrics(
    image: torch.Tensor,
    reference: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    data_range: float | DataRange | str | None = None,
    convention: MetricConvention | str = MetricConvention.DEFAULT,
) -> dict[str, float]:
    """``{"PSNR": dB, "SSIM": ..., "NRMSE": ...}`` of ``image`` against ``reference`` under ``convention``.

    Args:
        image: estimate ``x``, any shape whose axes of size > 1 number 2 or 3 (e.g. ``(H, W)``, ``(1, H, W)``,
            ``(n_z, n_y, n_x)``, MONAI's ``(1, 1, X, Y, Z)``); real and finite.
        reference: ``r``, the same shape.
        mask: optional ``torch.bool`` tensor of the same shape; PSNR, NRMSE and ``L`` use its voxels only, SSIM
            averages windows centred in it.
        data_range: ``L`` of PSNR and SSIM: a number > 0 (e.g. 1 for images in network units) or a
            :class:`~bundle.metrics.DataRange`; ``None`` (default) = the convention's.
        convention: a :class:`MetricConvention` (``"default"``, ``"petdds"``, ``"upete"``).

    Returns:
        Python floats; SSIM and NRMSE as fractions, or in % under :attr:`MetricConvention.PETDDS`.
    """
    settings = _SETTINGS[check_choice(convention, MetricConvention, "convention")]
    if not isinstance(image, torch.Tensor) or not isinstance(reference, torch.Tensor):
        raise TypeError(
            f"image and reference must be torch.Tensors, got {type(image).__name__} and {type(reference).__name__}"
        )
    if image.shape != reference.shape:
        raise ValueError(
            f"image and reference must have the same shape, got {tuple(image.shape)} and {tuple(reference.shape)}"
        )
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != image.shape):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a torch.bool tensor of the image's shape {tuple(image.shape)}, got {got}")
    shape = tuple(n for n in image.shape if n > 1)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"image must have 2 or 3 axes of size > 1 (a 2D or 3D image), got shape {tuple(image.shape)}"
        )
    x, r = image.reshape(shape), reference.reshape(shape)
    m = None if mask is None else mask.reshape(shape)
    L = settings.data_range if data_range is None else data_range
    kernel = ssim_kernel_size(shape) if settings.kernel_size is None else settings.kernel_size
    scale = 100.0 if settings.percent else 1.0
    return {
        "PSNR": float(psnr(x, r, data_range=L, mask=m)),
        "SSIM": scale * float(ssim(x, r, data_range=L, spatial_dims=len(shape), mask=m, kernel_size=kernel)),
        "NRMSE": scale * float(nrmse(x, r, mask=m)),
    }
