"""Scan simulation shared by the demo, the dataset builders and the MONAI transforms.

``simulate_scan`` turns an activity image and a μ-map into measured counts with the full forward model

    ȳ = c · (n ⊙ a ⊙ A(G x) + s),   y ~ Poisson(ȳ),   Σ ȳ = total_counts,

where a = exp(−A μ), n the detector normalisation (gap mask of the scanner), G a Gaussian resolution model,
s a constant additive background (randoms + scatter) at ``background_fraction`` of the mean trues, and c the
count scale that makes the expected total equal ``total_counts``.  The returned :class:`SimulatedScan` keeps the
forward model in count units (background c·s), so ``osem(...)`` with it estimates c·x;
:meth:`SimulatedScan.reconstruct_osem` divides by c and returns the image in the activity's units.

``slicewise_layout`` builds a multi-ring scanner whose rings sit on the image's slice centres with maximum ring
difference 0: projecting a 3D volume with it is an exact stack of 2D slice projections (the "project slices"
option for large total-body volumes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..physics import (
    GaussianResolution,
    ImageGeometry,
    PETForwardModel,
    SinogramLayout,
    SinogramProjector,
    attenuation_factors_from_mu_map,
    osem,
    poisson_at_total_counts,
    select_views,
    view_subsets,
)
from ..physics.geometry import RegularPolygonScanner

__all__ = ["SimulatedScan", "simulate_scan", "slicewise_layout"]


@dataclass(frozen=True)
class SimulatedScan:
    """Measured counts of one scan plus the forward model (in count units) that generated them.

    Attributes:
        counts: measured Poisson counts, (n_planes, n_views, n_radial).
        expected: their expectation ȳ (same shape).
        count_scale: c, counts per (activity unit × mm).
        model: the forward model in count units (background already scaled by c).
        background: the additive background in count units, c · s.
    """

    counts: torch.Tensor
    expected: torch.Tensor
    count_scale: float
    model: PETForwardModel
    background: torch.Tensor

    def reconstruct_osem(
        self, *, num_subsets: int, num_iterations: int, counts: torch.Tensor | None = None, callback=None
    ) -> torch.Tensor:
        """OSEM of ``counts`` (default: this scan's counts) in the activity's units (divided by c)."""
        data = self.counts if counts is None else counts
        subsets = view_subsets(self.model.n_views, num_subsets)
        models = [self.model.subset(v) for v in subsets]
        image = osem(models, [select_views(data, v) for v in subsets], num_iterations=num_iterations,
                     callback=callback)
        return image / self.count_scale


def slicewise_layout(
    image: ImageGeometry, *, radius_mm: float | None = None, detector_pitch_mm: float | None = None
) -> SinogramLayout:
    """A scanner with one ring per image slice (ring spacing = slice thickness), direct planes only.

    Sides of 8 detectors at ``detector_pitch_mm`` (default twice the transaxial voxel size, so the radial
    sampling ≈ one voxel); ``radius_mm`` defaults to 1.2× the image's transaxial half-diagonal; the radial bins
    cover the image diagonal.
    """
    n_z, n_y, n_x = image.shape
    _, vy, vx = image.voxel_size_mm
    half_diagonal = 0.5 * math.hypot(n_y * vy, n_x * vx)
    radius = 1.2 * half_diagonal if radius_mm is None else float(radius_mm)
    if radius <= half_diagonal:
        raise ValueError(f"radius_mm must exceed the image half-diagonal {half_diagonal:.1f} mm, got {radius}")
    pitch = 2 * min(vy, vx) if detector_pitch_mm is None else float(detector_pitch_mm)
    if not (math.isfinite(pitch) and pitch > 0):
        raise ValueError(f"detector_pitch_mm must be positive, got {detector_pitch_mm!r}")
    crystals_per_side = 8
    num_sides = max(8, round(2 * math.pi * radius / (pitch * crystals_per_side)))
    scanner = RegularPolygonScanner(
        radius_mm=radius, num_sides=num_sides, crystals_per_side=crystals_per_side,
        crystal_pitch_mm=2 * radius * math.tan(math.pi / num_sides) / crystals_per_side,
        num_rings=n_z, ring_spacing_mm=image.voxel_size_mm[0],
    )
    n_det = scanner.detectors_per_ring
    radial_spacing_mm = math.pi * radius / n_det
    num_radial = min(2 * math.ceil(half_diagonal / radial_spacing_mm) + 2, n_det - 2)
    return SinogramLayout(scanner=scanner, num_radial=num_radial, max_ring_difference=0)


def simulate_scan(
    activity: torch.Tensor,
    mu_map_per_mm: torch.Tensor,
    *,
    layout: SinogramLayout,
    image: ImageGeometry,
    total_counts: float,
    generator: torch.Generator,
    fwhm_mm: float = 4.5,
    background_fraction: float = 0.3,
) -> SimulatedScan:
    """Simulate one PET scan of ``activity`` (image.shape, ≥ 0) with attenuation from ``mu_map_per_mm``."""
    for name, t in (("activity", activity), ("mu_map_per_mm", mu_map_per_mm)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {image.shape}, got {type(t).__name__}")
        if tuple(t.shape) != image.shape:
            raise ValueError(f"{name} must have shape {image.shape} (the image geometry), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf")
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be >= 0 everywhere, found a minimum of {float(t.min())}")
    if not (math.isfinite(total_counts) and total_counts > 0):
        raise ValueError(f"total_counts must be a positive finite number, got {total_counts!r}")
    if not (math.isfinite(background_fraction) and background_fraction >= 0):
        raise ValueError(f"background_fraction must be a finite number >= 0, got {background_fraction!r}")
    if float(activity.sum()) <= 0:
        raise ValueError("activity must have a positive total; got an all-zero image")
    dtype = activity.dtype
    projector = SinogramProjector(layout=layout, image=image)
    attenuation = attenuation_factors_from_mu_map(projector, mu_map_per_mm.to(dtype))
    normalisation = layout.gap_mask().to(dtype)
    resolution = GaussianResolution(image_shape=image.shape, fwhm_mm=fwhm_mm, voxel_size_mm=image.voxel_size_mm)
    trues = PETForwardModel(
        projector=projector, attenuation_factors=attenuation, normalisation=normalisation, resolution=resolution
    ).expectation(activity)
    background = background_fraction * float(trues.mean()) * normalisation
    counts, scale = poisson_at_total_counts(trues + background, total_counts=total_counts, generator=generator)
    expected = (trues + background) * scale
    model = PETForwardModel(
        projector=projector, attenuation_factors=attenuation, normalisation=normalisation, resolution=resolution,
        background=background * scale,
    )
    return SimulatedScan(counts=counts, expected=expected, count_scale=float(scale), model=model,
                         background=background * scale)
