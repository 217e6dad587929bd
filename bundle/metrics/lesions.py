"""Lesion and uniform-region metrics of whole-body PET reading: contrast recovery, SUVmean / SUVmax bias, CoV.

For lesion ``k`` (voxels ``L_k`` of an integer lesion map, 0 = no lesion) with a local background shell ``B_k`` (the
voxels within ``shell_voxels = (inner, outer)`` Chebyshev distance of ``L_k``, no lesion voxel of any lesion):

    CR_k        = (mean(x, L_k) / mean(x, B_k) − 1) / (mean(t, L_k) / mean(t, B_k) − 1)   (NEMA NU 2 style)
    SUVmean bias_k = mean(x, L_k) / mean(t, L_k) − 1
    SUVmax  bias_k = max(x, L_k) / max(t, L_k) − 1

with ``x`` the image and ``t`` the true activity (both in the same unit: ratios do not need SUV calibration).
Noise in a uniform region R (e.g. the liver, PERCIST's reference):  CoV = std(x, R) / mean(x, R) (sample std).
Shapes: any ``(*spatial)`` tensor; a leading batch/channel of size 1 is squeezed.  Importing runs nothing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["erode", "lesion_metrics", "region_cov", "summarise_lesions"]


def _volume(value: object, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    t = value
    while t.ndim > 3 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3:
        raise ValueError(
            f"{name} must be a 3D volume (optionally with leading size-1 dims), got shape {tuple(value.shape)}"
        )
    return t


def _dilate(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """Binary dilation of a 3D mask by a (2·voxels + 1)³ cube (Chebyshev distance ≤ voxels)."""
    if voxels <= 0:
        return mask.clone()
    pooled = F.max_pool3d(mask[None, None].float(), kernel_size=2 * voxels + 1, stride=1, padding=voxels)
    return pooled[0, 0] > 0


def erode(mask: torch.Tensor, voxels: int) -> torch.Tensor:
    """Binary erosion of a 3D mask by a (2·voxels + 1)³ cube (voxels outside the volume count as outside)."""
    mask = _volume(mask, "mask").bool()
    if voxels < 0:
        raise ValueError(f"voxels must be >= 0, got {voxels}")
    padded = F.pad((~mask)[None, None].float(), (voxels,) * 6, value=1.0)
    return F.max_pool3d(padded, kernel_size=2 * voxels + 1, stride=1)[0, 0] == 0


def region_cov(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Coefficient of variation std/mean (sample std) of ``image`` in the voxels of ``mask`` (at least 2)."""
    x, m = _volume(image, "image"), _volume(mask, "mask").bool()
    if x.shape != m.shape:
        raise ValueError(f"mask must have the image's shape {tuple(x.shape)}, got {tuple(m.shape)}")
    values = x[m].double()
    if values.numel() < 2:
        raise ValueError(f"mask must select at least 2 voxels, got {values.numel()}")
    mean = float(values.mean())
    if mean == 0.0:
        raise ValueError("image has a zero mean in the mask: the CoV is undefined")
    return float(values.std()) / abs(mean)


def lesion_metrics(
    image: torch.Tensor,
    truth: torch.Tensor,
    lesion_map: torch.Tensor,
    *,
    shell_voxels: tuple[int, int] = (1, 3),
) -> list[dict[str, float]]:
    """Per-lesion contrast recovery and SUVmean / SUVmax bias (module docstring) for every label > 0 present.

    Args:
        image: the estimate ``(*spatial)``; truth: the true activity, same shape and unit; lesion_map: integer
            labels, same shape (0 background, k the k-th lesion).
        shell_voxels: ``(inner, outer)``, the background shell's Chebyshev distances from the lesion, 1 ≤ inner < outer.

    Returns:
        one dict per lesion, ordered by label: ``label``, ``voxels``, ``true_contrast`` (mean(t, L)/mean(t, B)),
        ``contrast_recovery``, ``suv_mean_bias``, ``suv_max_bias`` (fractions, not %).  Lesions whose shell is empty
        or whose true contrast is 1 get NaN contrast recovery.
    """
    x, t = _volume(image, "image"), _volume(truth, "truth")
    labels = _volume(lesion_map, "lesion_map")
    if not (x.shape == t.shape == labels.shape):
        raise ValueError(
            f"image, truth and lesion_map must have one shape, got {tuple(x.shape)}, {tuple(t.shape)}, "
            f"{tuple(labels.shape)}"
        )
    inner, outer = (int(v) for v in shell_voxels)
    if not 1 <= inner < outer:
        raise ValueError(f"shell_voxels must be (inner, outer) with 1 <= inner < outer, got {shell_voxels}")
    labels = labels.round().long()
    any_lesion = labels > 0
    rows = []
    for label in sorted(int(v) for v in labels.unique() if v > 0):
        lesion = labels == label
        shell = _dilate(lesion, outer) & ~_dilate(lesion, inner - 1) & ~any_lesion
        t_lesion, x_lesion = float(t[lesion].double().mean()), float(x[lesion].double().mean())
        true_contrast = recovery = math.nan
        if bool(shell.any()):
            t_bkg, x_bkg = float(t[shell].double().mean()), float(x[shell].double().mean())
            if t_bkg > 0 and x_bkg != 0:
                true_contrast = t_lesion / t_bkg
                if true_contrast != 1.0:
                    recovery = (x_lesion / x_bkg - 1.0) / (true_contrast - 1.0)
        rows.append({
            "label": float(label), "voxels": float(lesion.sum()), "true_contrast": true_contrast,
            "contrast_recovery": recovery, "suv_mean_bias": x_lesion / t_lesion - 1.0,
            "suv_max_bias": float(x[lesion].max()) / float(t[lesion].max()) - 1.0,
        })
    return rows


def summarise_lesions(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean over lesions of contrast recovery (finite values), SUVmean and SUVmax bias; NaN where none."""
    summary = {}
    for key in ("contrast_recovery", "suv_mean_bias", "suv_max_bias"):
        values = [r[key] for r in rows if math.isfinite(r[key])]
        summary[key] = sum(values) / len(values) if values else math.nan
    return summary
