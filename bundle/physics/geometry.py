"""Scanner, sinogram and image geometry (all lengths in mm), with named presets.

Coordinate convention (shared by every physics module): array-axis order (z, y, x).  Axis 0 is the scanner
axis (axial), axes 1 and 2 are transaxial.  Images have shape (n_z, n_y, n_x); a 2D slice is n_z = 1.

Scanner: a *regular polygon* of ``num_sides`` flat modules per ring, each carrying ``crystals_per_side``
detector positions at ``crystal_pitch_mm`` (the last ``gap_crystals_per_side`` of each side are gaps: positions
without a crystal, as in the vendor layout of the Siemens mMR).  Side ``s`` faces the direction
φ_s = 2π s / num_sides at distance ``radius_mm + doi_mm`` from the axis; detector ``c = s·crystals_per_side + j``
sits at offset (j − (crystals_per_side − 1)/2)·pitch along the side.  Ring ``r`` is at
z = (r − (num_rings − 1)/2)·ring_spacing_mm.

Sinogram layout: shape (n_planes, n_views, n_radial), radial index fastest ("PVR" order).  With N detectors
per ring, view v ∈ [0, N/2) and signed radial index k ∈ [−n_radial/2, n_radial/2) map to the detector pair

    a = (v − ⌊k/2⌋) mod N,    b = (v + ⌊(k+1)/2⌋ + N/2) mod N,

so b − a = N/2 + k (k = 0 passes next to the centre) and a + b ∈ {2v + N/2, 2v + N/2 + 1}: two neighbouring
detector-angle sums are interleaved into one view, which doubles the radial sampling to about half the
crystal pitch.  Planes are ring pairs (r_a, r_b) with |r_b − r_a| ≤ max_ring_difference, ordered by ring
difference 0, +1, −1, +2, −2, … and, within one difference, by axial position r_a + r_b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = [
    "PRESETS",
    "ImageGeometry",
    "RegularPolygonScanner",
    "ScannerPreset",
    "SinogramLayout",
    "preset",
]


def _positive(value: float, name: str) -> None:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RegularPolygonScanner:
    """A cylindrical PET scanner made of flat modules on a regular polygon (see module docstring)."""

    radius_mm: float
    num_sides: int
    crystals_per_side: int
    crystal_pitch_mm: float
    num_rings: int
    ring_spacing_mm: float
    doi_mm: float = 0.0
    gap_crystals_per_side: int = 0

    def __post_init__(self) -> None:
        _positive(self.radius_mm, "radius_mm")
        _positive(self.crystal_pitch_mm, "crystal_pitch_mm")
        _positive(self.ring_spacing_mm, "ring_spacing_mm")
        for name in ("num_sides", "crystals_per_side", "num_rings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_sides < 3:
            raise ValueError(f"num_sides must be >= 3 for a polygon, got {self.num_sides}")
        if self.detectors_per_ring % 2:
            raise ValueError(
                f"num_sides * crystals_per_side must be even (views pair opposite detectors), got "
                f"{self.detectors_per_ring}"
            )
        if isinstance(self.doi_mm, bool) or not (
            isinstance(self.doi_mm, int | float) and math.isfinite(self.doi_mm) and self.doi_mm >= 0
        ):
            raise ValueError(f"doi_mm must be a finite number >= 0, got {self.doi_mm!r}")
        if not isinstance(self.gap_crystals_per_side, int) or not (
            0 <= self.gap_crystals_per_side < self.crystals_per_side
        ):
            raise ValueError(
                f"gap_crystals_per_side must be in [0, crystals_per_side={self.crystals_per_side}), got "
                f"{self.gap_crystals_per_side}"
            )

    @property
    def detectors_per_ring(self) -> int:
        return self.num_sides * self.crystals_per_side

    def transaxial_positions_mm(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(N, 2) detector (y, x) positions in one ring, detector index c = side·crystals_per_side + j."""
        side = torch.arange(self.num_sides, dtype=torch.float64)
        j = torch.arange(self.crystals_per_side, dtype=torch.float64)
        phi = 2 * math.pi * side / self.num_sides
        offset = (j - (self.crystals_per_side - 1) / 2) * self.crystal_pitch_mm
        r = self.radius_mm + self.doi_mm
        x = r * torch.cos(phi)[:, None] - offset[None, :] * torch.sin(phi)[:, None]
        y = r * torch.sin(phi)[:, None] + offset[None, :] * torch.cos(phi)[:, None]
        return torch.stack([y.reshape(-1), x.reshape(-1)], dim=-1).to(dtype)

    def ring_positions_mm(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """(num_rings,) axial positions of the rings, centred on z = 0."""
        r = torch.arange(self.num_rings, dtype=torch.float64)
        return ((r - (self.num_rings - 1) / 2) * self.ring_spacing_mm).to(dtype)

    def is_gap(self) -> torch.Tensor:
        """(N,) bool: True for the gap positions (no crystal) of one ring."""
        j = torch.arange(self.detectors_per_ring) % self.crystals_per_side
        return j >= self.crystals_per_side - self.gap_crystals_per_side


@dataclass(frozen=True, kw_only=True)
class SinogramLayout:
    """Which LORs of a scanner form the sinogram, shape (n_planes, n_views, n_radial)."""

    scanner: RegularPolygonScanner
    num_radial: int
    max_ring_difference: int | None = None
    num_views: int = field(init=False)

    def __post_init__(self) -> None:
        n_det = self.scanner.detectors_per_ring
        object.__setattr__(self, "num_views", n_det // 2)
        # k = -N/2 would pair each detector with itself, so at most N - 2 radial bins
        if not isinstance(self.num_radial, int) or not (2 <= self.num_radial <= n_det - 2) or self.num_radial % 2:
            raise ValueError(
                f"num_radial must be an even integer in [2, detectors_per_ring - 2 = {n_det - 2}], "
                f"got {self.num_radial!r}"
            )
        max_diff = self.scanner.num_rings - 1 if self.max_ring_difference is None else self.max_ring_difference
        if not isinstance(max_diff, int) or not (0 <= max_diff < self.scanner.num_rings):
            raise ValueError(
                f"max_ring_difference must be in [0, num_rings - 1 = {self.scanner.num_rings - 1}], got {max_diff!r}"
            )
        object.__setattr__(self, "max_ring_difference", max_diff)

    @property
    def ring_pairs(self) -> torch.Tensor:
        """(n_planes, 2) ring indices (r_a, r_b) per plane, in the documented plane order."""
        n = self.scanner.num_rings
        pairs = []
        for diff in range(self.max_ring_difference + 1):
            for signed in ((0,) if diff == 0 else (diff, -diff)):
                for ra in range(n):
                    rb = ra + signed
                    if 0 <= rb < n:
                        pairs.append((ra, rb))
        # within one ring difference, order by axial position r_a + r_b (already increasing with r_a)
        return torch.tensor(pairs, dtype=torch.long)

    @property
    def num_planes(self) -> int:
        n, m = self.scanner.num_rings, self.max_ring_difference
        return n + sum(2 * (n - d) for d in range(1, m + 1))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.num_planes, self.num_views, self.num_radial)

    @property
    def num_lors(self) -> int:
        return math.prod(self.shape)

    def detector_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Detector indices (a, b) within a ring, each (n_views, n_radial)."""
        n_det = self.scanner.detectors_per_ring
        v = torch.arange(self.num_views)[:, None]
        k = torch.arange(-self.num_radial // 2, self.num_radial // 2)[None, :]
        a = torch.remainder(v - torch.div(k, 2, rounding_mode="floor"), n_det)
        b = torch.remainder(v + torch.div(k + 1, 2, rounding_mode="floor") + n_det // 2, n_det)
        return a, b

    def gap_mask(self) -> torch.Tensor:
        """(n_planes, n_views, n_radial) float: 0 where an LOR ends on a gap position, else 1."""
        gap = self.scanner.is_gap()
        a, b = self.detector_pairs()
        transaxial = (~(gap[a] | gap[b])).to(torch.float32)
        return transaxial.expand(self.num_planes, -1, -1).contiguous()

    def endpoints_mm(
        self, planes: slice | torch.Tensor | None = None, views: torch.Tensor | None = None,
        *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """LOR end points ``(xstart, xend)``, each (n_planes', n_views', n_radial, 3) in (z, y, x) mm.

        ``planes`` / ``views`` select a subset (all by default), so large sinograms can be built in chunks.
        """
        pairs = self.ring_pairs if planes is None else self.ring_pairs[planes]
        if pairs.ndim == 1:
            pairs = pairs[None]
        a, b = self.detector_pairs()
        if views is not None:
            a, b = a[views], b[views]
        yx = self.scanner.transaxial_positions_mm(torch.float64)
        z = self.scanner.ring_positions_mm(torch.float64)
        n_p, (n_v, n_r) = pairs.shape[0], a.shape
        xstart = torch.empty((n_p, n_v, n_r, 3), dtype=torch.float64)
        xend = torch.empty_like(xstart)
        xstart[..., 0] = z[pairs[:, 0]][:, None, None]
        xend[..., 0] = z[pairs[:, 1]][:, None, None]
        xstart[..., 1:] = yx[a][None]
        xend[..., 1:] = yx[b][None]
        return xstart.to(dtype=dtype, device=device), xend.to(dtype=dtype, device=device)


@dataclass(frozen=True, kw_only=True)
class ImageGeometry:
    """Image grid: ``shape`` (n_z, n_y, n_x), ``voxel_size_mm`` (3,), ``origin_mm`` (3,) = centre of voxel [0,0,0].

    The default origin centres the image on the scanner: origin = −(shape − 1)/2 · voxel_size.
    """

    shape: tuple[int, int, int]
    voxel_size_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be three positive sizes (n_z, n_y, n_x), got {self.shape!r}")
        voxel = tuple(float(v) for v in self.voxel_size_mm)
        if len(voxel) != 3:
            raise ValueError(f"voxel_size_mm must have 3 entries (z, y, x), got {self.voxel_size_mm!r}")
        for v in voxel:
            _positive(v, "voxel_size_mm")
        origin = (
            tuple(-(n - 1) / 2 * v for n, v in zip(shape, voxel, strict=True))
            if self.origin_mm is None
            else tuple(float(o) for o in self.origin_mm)
        )
        if len(origin) != 3 or not all(math.isfinite(o) for o in origin):
            raise ValueError(f"origin_mm must be 3 finite numbers (z, y, x), got {self.origin_mm!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "voxel_size_mm", voxel)
        object.__setattr__(self, "origin_mm", origin)


@dataclass(frozen=True, kw_only=True)
class ScannerPreset:
    """A named scanner + sinogram + image combination."""

    name: str
    layout: SinogramLayout
    image: ImageGeometry
    span: int = 1
    description: str = ""


# Siemens Biograph mMR (METHODS.md): 56 blocks of 8 crystals + 1 gap position, 4 mm crystals, 64 rings.
MMR_RADIUS_MM = 328.0
MMR_DOI_MM = 7.0
MMR_NUM_SIDES = 56
MMR_CRYSTALS_PER_SIDE = 9
MMR_GAP_CRYSTALS_PER_SIDE = 1
MMR_CRYSTAL_PITCH_MM = 4.0
MMR_NUM_RINGS = 64
MMR_RING_SPACING_MM = 4.0625
MMR_NUM_RADIAL = 344
MMR_MAX_RING_DIFFERENCE = 60
MMR_SPAN = 11
MMR_VOXEL_SIZE_MM = (2.03125, 2.08626, 2.08626)  # (z, y, x)
MMR_IMAGE_SHAPE = (127, 344, 344)
MMR_2D_NUM_RADIAL = 172
MMR_2D_IMAGE_SHAPE = (1, 172, 172)


def _mmr_scanner(num_rings: int) -> RegularPolygonScanner:
    return RegularPolygonScanner(
        radius_mm=MMR_RADIUS_MM, doi_mm=MMR_DOI_MM, num_sides=MMR_NUM_SIDES,
        crystals_per_side=MMR_CRYSTALS_PER_SIDE, gap_crystals_per_side=MMR_GAP_CRYSTALS_PER_SIDE,
        crystal_pitch_mm=MMR_CRYSTAL_PITCH_MM, num_rings=num_rings, ring_spacing_mm=MMR_RING_SPACING_MM,
    )


def _tiny_scanner(num_rings: int) -> RegularPolygonScanner:
    return RegularPolygonScanner(
        radius_mm=120.0, num_sides=16, crystals_per_side=8, crystal_pitch_mm=5.5,
        num_rings=num_rings, ring_spacing_mm=4.0,
    )


def _small_scanner(num_rings: int) -> RegularPolygonScanner:
    return RegularPolygonScanner(
        radius_mm=190.0, num_sides=32, crystals_per_side=8, crystal_pitch_mm=4.6,
        num_rings=num_rings, ring_spacing_mm=4.0,
    )


# brain-sized single ring for CPU-scale 2D studies (LegoPET "small" dataset preset): 128 detectors, so 64 views; the
# 64 central radial bins reach R·sin(π/4) ≈ 124 mm (LOR distance from the axis, 125.6 mm with the flat sides), just
# beyond the 240 mm image (64 × 3.75 mm); sinogram and image are both 64 × 64, 16× fewer pixels than the 256 × 256
# grid of the padded mMR slice.
BRAIN_2D_RADIUS_MM = 175.0
BRAIN_2D_NUM_SIDES = 16
BRAIN_2D_CRYSTALS_PER_SIDE = 8
BRAIN_2D_CRYSTAL_PITCH_MM = 8.7  # 8 crystals fill a side of 2 R tan(π/16) = 69.6 mm
BRAIN_2D_NUM_RADIAL = 64
BRAIN_2D_IMAGE_SHAPE = (1, 64, 64)
BRAIN_2D_VOXEL_SIZE_MM = (2.03125, 3.75, 3.75)  # (z, y, x): 240 mm transaxial FOV


def _brain_2d_scanner() -> RegularPolygonScanner:
    return RegularPolygonScanner(
        radius_mm=BRAIN_2D_RADIUS_MM, num_sides=BRAIN_2D_NUM_SIDES, crystals_per_side=BRAIN_2D_CRYSTALS_PER_SIDE,
        crystal_pitch_mm=BRAIN_2D_CRYSTAL_PITCH_MM, num_rings=1, ring_spacing_mm=4.0,
    )


def _build_presets() -> dict[str, ScannerPreset]:
    return {
        "mmr": ScannerPreset(
            name="mmr",
            layout=SinogramLayout(
                scanner=_mmr_scanner(MMR_NUM_RINGS), num_radial=MMR_NUM_RADIAL,
                max_ring_difference=MMR_MAX_RING_DIFFERENCE,
            ),
            image=ImageGeometry(shape=MMR_IMAGE_SHAPE, voxel_size_mm=MMR_VOXEL_SIZE_MM),
            span=MMR_SPAN,
            description="Siemens Biograph mMR: 64 rings, 344 radial x 252 views, span 11 (837 planes)",
        ),
        "mmr_brain": ScannerPreset(
            name="mmr_brain",
            layout=SinogramLayout(
                scanner=_mmr_scanner(MMR_NUM_RINGS), num_radial=MMR_2D_NUM_RADIAL,
                max_ring_difference=MMR_MAX_RING_DIFFERENCE,
            ),
            image=ImageGeometry(shape=(120, 128, 128), voxel_size_mm=(2.0, 2.0, 2.0)),
            span=MMR_SPAN,
            description="mMR (64 rings, span 11, radial crop to 172 bins x 252 views) with PET-DDS-delta's brain "
            "grid: 120 x 128 x 128 at 2 mm",
        ),
        "mmr_2d": ScannerPreset(
            name="mmr_2d",
            layout=SinogramLayout(scanner=_mmr_scanner(1), num_radial=MMR_2D_NUM_RADIAL),
            image=ImageGeometry(shape=MMR_2D_IMAGE_SHAPE, voxel_size_mm=MMR_VOXEL_SIZE_MM),
            description="one mMR ring, radial crop to 172 bins x 252 views, 172x172 image at 2.086 mm",
        ),
        "mmr_16rings": ScannerPreset(
            name="mmr_16rings",
            layout=SinogramLayout(
                scanner=_mmr_scanner(16), num_radial=MMR_2D_NUM_RADIAL, max_ring_difference=15,
            ),
            image=ImageGeometry(shape=(31, 172, 172), voxel_size_mm=MMR_VOXEL_SIZE_MM),
            description="mMR transaxial layout, 16 rings, all ring differences, 172 radial bins; benchmark geometry",
        ),
        "small_3d": ScannerPreset(
            name="small_3d",
            layout=SinogramLayout(scanner=_small_scanner(8), num_radial=96, max_ring_difference=7),
            image=ImageGeometry(shape=(8, 64, 64), voxel_size_mm=(4.0, 4.0, 4.0)),
            description="brain-sized 8-ring scanner for CPU-scale 3D studies: 64 planes x 128 views x 96 radial, "
            "image 8 x 64 x 64 at 4 mm (256 mm FOV)",
        ),
        "brain_2d": ScannerPreset(
            name="brain_2d",
            layout=SinogramLayout(scanner=_brain_2d_scanner(), num_radial=BRAIN_2D_NUM_RADIAL),
            image=ImageGeometry(shape=BRAIN_2D_IMAGE_SHAPE, voxel_size_mm=BRAIN_2D_VOXEL_SIZE_MM),
            description="brain-sized single ring (radius 175 mm, 128 detectors) for CPU-scale 2D studies: 64 views x "
            "64 radial, 64 x 64 image at 3.75 mm (240 mm FOV)",
        ),
        "tiny_2d": ScannerPreset(
            name="tiny_2d",
            layout=SinogramLayout(scanner=_tiny_scanner(1), num_radial=64),
            image=ImageGeometry(shape=(1, 40, 40), voxel_size_mm=(4.0, 3.0, 3.0)),
            description="small single-ring scanner for tests and CPU demos: 64 radial x 64 views, 40x40 image",
        ),
        "tiny_3d": ScannerPreset(
            name="tiny_3d",
            layout=SinogramLayout(scanner=_tiny_scanner(4), num_radial=64, max_ring_difference=3),
            image=ImageGeometry(shape=(8, 40, 40), voxel_size_mm=(2.0, 3.0, 3.0)),
            description="small 4-ring scanner for tests and CPU demos: 16 planes x 64 views x 64 radial",
        ),
    }


PRESETS: tuple[str, ...] = (
    "mmr", "mmr_brain", "mmr_2d", "mmr_16rings", "small_3d", "brain_2d", "tiny_2d", "tiny_3d",
)


def preset(name: str) -> ScannerPreset:
    """The named :class:`ScannerPreset` (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"preset name must be one of {PRESETS}, got {name!r}")
    return _build_presets()[name]
