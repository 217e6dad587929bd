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

``save_scan`` / ``load_scan`` keep a slice-wise scan on disk (``scan.npz``: counts, attenuation factors,
normalisation, background, c, and the image geometry and resolution the forward model is rebuilt from), so that
training can reduce its dose by binomial thinning and reconstruct it again (uPETe's sinogram-domain Poisson
diffusion, :class:`bundle.transforms.upete.RandDoseReductiond`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..physics import (
    ImageGeometry,
    PETForwardModel,
    SinogramLayout,
    SinogramProjector,
    attenuation_factors_from_mu_map,
    forward_model_from_arrays,
    osem,
    poisson_at_total_counts,
    select_views,
    view_subsets,
)
from ..physics.geometry import RegularPolygonScanner

__all__ = ["SimulatedScan", "load_scan", "save_scan", "simulate_scan", "slicewise_layout"]


@dataclass(frozen=True)
class SimulatedScan:
    """Measured counts of one scan plus the forward model (in count units) that generated them.

    Attributes:
        counts: measured Poisson counts, (n_planes, n_views, n_radial).
        expected: their expectation ȳ (same shape); ``None`` for a scan read back by :func:`load_scan`.
        count_scale: c, counts per (activity unit × mm).
        model: the forward model in count units (background already scaled by c).
        background: the additive background in count units, c · s.
    """

    counts: torch.Tensor
    expected: torch.Tensor | None
    count_scale: float
    model: PETForwardModel
    background: torch.Tensor

    def at_dose(self, fraction: float) -> SimulatedScan:
        """The model of this scan at dose ``fraction`` ∈ (0, 1] (c and the background scaled; counts unchanged).

        Pair it with ``binomial_thinning(counts, fraction=...)``: thinned counts are an exact Poisson scan of the
        returned model's expectation."""
        f = float(fraction)
        if not (math.isfinite(f) and 0 < f <= 1):
            raise ValueError(f"fraction must be a dose fraction in (0, 1], got {fraction!r}")
        m = self.model
        fwhm_mm = 0.0 if m.resolution is None else m.resolution.fwhm_mm
        model = forward_model_from_arrays(projector=m.projector, fwhm_mm=fwhm_mm,
                                          attenuation_factors=m.attenuation_factors, normalisation=m.normalisation,
                                          background=self.background * f)
        expected = None if self.expected is None else self.expected * f
        return SimulatedScan(counts=self.counts, expected=expected, count_scale=self.count_scale * f, model=model,
                             background=self.background * f)

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
    trues = forward_model_from_arrays(
        projector=projector, fwhm_mm=fwhm_mm, attenuation_factors=attenuation, normalisation=normalisation
    ).expectation(activity)
    background = background_fraction * float(trues.mean()) * normalisation
    counts, scale = poisson_at_total_counts(trues + background, total_counts=total_counts, generator=generator)
    expected = (trues + background) * scale
    model = forward_model_from_arrays(
        projector=projector, fwhm_mm=fwhm_mm, attenuation_factors=attenuation, normalisation=normalisation,
        background=background * scale,
    )
    return SimulatedScan(counts=counts, expected=expected, count_scale=float(scale), model=model,
                         background=background * scale)


_SCAN_FORMAT = "bundle.slicewise_scan.v1"
_SCAN_ARRAYS = ("counts", "attenuation_factors", "normalisation", "background")


def save_scan(path: str | Path, scan: SimulatedScan, *, image: ImageGeometry, fwhm_mm: float) -> None:
    """Write ``scan`` (simulated with ``slicewise_layout(image)`` and resolution ``fwhm_mm``) to ``path`` (.npz).

    Stored: counts, attenuation factors, normalisation and background (count units), each (n_planes, n_views,
    n_radial) float32; c; the image shape, voxel size and origin; the FWHM.  ȳ is not stored.
    """
    from .io import atomic_write

    layout = scan.model.projector.layout
    expected = slicewise_layout(image)
    if layout.shape != expected.shape or layout.scanner != expected.scanner:
        raise ValueError("scan must be simulated with slicewise_layout(image): save_scan rebuilds that layout on load")
    arrays = {
        "counts": scan.counts, "attenuation_factors": scan.model.attenuation_factors,
        "normalisation": scan.model.normalisation, "background": scan.background,
    }
    payload = {k: torch.broadcast_to(torch.as_tensor(v), layout.shape).detach().cpu().numpy().astype(np.float32)
               for k, v in arrays.items()}
    payload.update(
        format=np.array(_SCAN_FORMAT), count_scale=np.float64(scan.count_scale), fwhm_mm=np.float64(fwhm_mm),
        image_shape=np.asarray(image.shape, dtype=np.int64),
        voxel_size_mm=np.asarray(image.voxel_size_mm, dtype=np.float64),
        origin_mm=np.asarray(image.origin_mm, dtype=np.float64),
    )
    atomic_write(Path(path), lambda p: np.savez_compressed(p, **payload))


def load_scan(path: str | Path) -> tuple[SimulatedScan, ImageGeometry]:
    """Read a scan written by :func:`save_scan` -> (scan with ``expected=None``, its image geometry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scan file {path} does not exist (datasets built by bundle.data hold scan.npz)")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as error:  # zipfile/numpy raise several types for corrupt files
        raise ValueError(f"cannot read scan file {path}: {error}") from error
    missing = [k for k in (*_SCAN_ARRAYS, "format", "count_scale", "fwhm_mm", "image_shape", "voxel_size_mm",
                           "origin_mm") if k not in data]
    if missing or str(data["format"]) != _SCAN_FORMAT:
        raise ValueError(f"{path} is not a scan file of format {_SCAN_FORMAT!r} (missing {missing or 'format'})")
    image = ImageGeometry(shape=tuple(int(v) for v in data["image_shape"]),
                          voxel_size_mm=tuple(float(v) for v in data["voxel_size_mm"]),
                          origin_mm=tuple(float(v) for v in data["origin_mm"]))
    layout = slicewise_layout(image)
    arrays = {k: torch.from_numpy(data[k]) for k in _SCAN_ARRAYS}
    for k, v in arrays.items():
        if tuple(v.shape) != layout.shape:
            raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, expected {layout.shape} for its image geometry")
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            raise ValueError(f"{path}: {k} must be finite and >= 0")
    count_scale = float(data["count_scale"])
    if not (math.isfinite(count_scale) and count_scale > 0):
        raise ValueError(f"{path}: count_scale must be a positive finite number, got {count_scale}")
    model = forward_model_from_arrays(
        projector=SinogramProjector(layout=layout, image=image), fwhm_mm=float(data["fwhm_mm"]),
        attenuation_factors=arrays["attenuation_factors"], normalisation=arrays["normalisation"],
        background=arrays["background"],
    )
    scan = SimulatedScan(counts=arrays["counts"], expected=None, count_scale=count_scale, model=model,
                         background=arrays["background"])
    return scan, image
