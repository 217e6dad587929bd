"""A deterministic analytic FDG head phantom made of ellipsoids, on any image grid.

Used by the main-job demo and by tests that need a PET-like object with a μ-map before the anatomical
phantoms (MNI152 / BrainWeb brains, torso) are at hand.  Sizes are in mm around the image centre, so the same
head appears on every grid; on a single-slice grid (n_z = 1) it is the transverse cut through the centre.

Tissues (FDG activity in relative units, grey : white = 4 : 1 as in the BrainWeb FDG model; μ at 511 keV):

=============  ========  ==========
tissue          activity  μ (1/mm)
=============  ========  ==========
scalp           0.5       0.0096
skull           0.0       0.013
white matter    1.0       0.0096
grey matter     4.0       0.0096
ventricles      0.0       0.0096
hot lesion      8.0       0.0096
=============  ========  ==========
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..physics.geometry import ImageGeometry

__all__ = ["MU_BONE_PER_MM", "MU_TISSUE_PER_MM", "EllipsoidHead", "ellipsoid_head_phantom"]

MU_TISSUE_PER_MM = 0.0096
MU_BONE_PER_MM = 0.013


@dataclass(frozen=True, kw_only=True)
class EllipsoidHead:
    """Semi-axes (z, y, x) of the head outline in mm; inner structures scale with it."""

    semi_axes_mm: tuple[float, float, float] = (90.0, 95.0, 75.0)
    skull_thickness_mm: float = 6.0
    scalp_thickness_mm: float = 4.0
    cortex_thickness_mm: float = 5.0


def _inside(coords: tuple[torch.Tensor, ...], centre, semi_axes) -> torch.Tensor:
    r2 = sum(((c - c0) / a) ** 2 for c, c0, a in zip(coords, centre, semi_axes, strict=True))
    return r2 <= 1.0


def ellipsoid_head_phantom(
    image: ImageGeometry, *, head: EllipsoidHead | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Activity (relative FDG units) and μ-map (1/mm) of the head, each of shape ``image.shape``.

    The head is scaled down uniformly if it would not fit into 95 % of the image's transaxial extent.
    """
    if not isinstance(image, ImageGeometry):
        raise TypeError(f"image must be an ImageGeometry, got {type(image).__name__}")
    head = head or EllipsoidHead()
    axes = [
        torch.arange(n, dtype=torch.float64) * v + o
        for n, v, o in zip(image.shape, image.voxel_size_mm, image.origin_mm, strict=True)
    ]
    coords = torch.meshgrid(*axes, indexing="ij")
    half_extent = [n * v / 2 for n, v in zip(image.shape, image.voxel_size_mm, strict=True)]
    fit = min(1.0, 0.95 * half_extent[1] / head.semi_axes_mm[1], 0.95 * half_extent[2] / head.semi_axes_mm[2])
    outer = [a * fit for a in head.semi_axes_mm]
    centre = (0.0, 0.0, 0.0)

    def shell(offset_mm: float) -> list[float]:
        return [max(a - offset_mm * fit, 1e-3) for a in outer]

    scalp = _inside(coords, centre, outer)
    skull = _inside(coords, centre, shell(head.scalp_thickness_mm))
    brain = _inside(coords, centre, shell(head.scalp_thickness_mm + head.skull_thickness_mm))
    white = _inside(
        coords, centre, shell(head.scalp_thickness_mm + head.skull_thickness_mm + head.cortex_thickness_mm)
    )
    ventricle_axes = [outer[0] * 0.25, outer[1] * 0.22, outer[2] * 0.12]
    ventricles = _inside(coords, (outer[0] * 0.05, -outer[1] * 0.05, 0.0), ventricle_axes)
    lesion = _inside(coords, (0.0, outer[1] * 0.35, outer[2] * 0.35), [8.0 * fit, 8.0 * fit, 8.0 * fit])
    # deep grey matter (basal ganglia-like) blobs either side of the ventricles
    deep_grey = _inside(coords, (0.0, outer[1] * 0.1, outer[2] * 0.3), [20 * fit, 14 * fit, 9 * fit]) | _inside(
        coords, (0.0, outer[1] * 0.1, -outer[2] * 0.3), [20 * fit, 14 * fit, 9 * fit]
    )

    activity = torch.zeros(image.shape, dtype=torch.float64)
    activity[scalp] = 0.5
    activity[skull] = 0.0
    activity[brain] = 4.0
    activity[white] = 1.0
    activity[white & deep_grey] = 4.0
    activity[white & ventricles] = 0.0
    activity[brain & lesion] = 8.0

    mu = torch.zeros(image.shape, dtype=torch.float64)
    mu[scalp] = MU_TISSUE_PER_MM
    mu[skull & ~brain] = MU_BONE_PER_MM
    mu[brain] = MU_TISSUE_PER_MM
    return activity.to(dtype), mu.to(dtype)
