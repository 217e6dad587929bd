"""Brain phantoms: the tissue model (FDG activity, μ at 511 keV, T1) and mm-aware resampling onto an image grid.

Tissue classes are the 12 classes of the BrainWeb "20 normal brains" anatomical models, in the label order of the
crisp segmentations (label = stored value >> 4).  Per-tissue values follow the ``brainweb`` PyPI package by
Casper da Costa-Luis (github.com/casperdcl/brainweb, ``brainweb/utils.py``, classes ``FDG``, ``Mu``, ``T1``):

=====  ============  ====================  =================  ===============
label  tissue        FDG (relative units)  μ (1/mm, project)  T1 (arb. units)
=====  ============  ====================  =================  ===============
0      background    0.0                   0                  0
1      csf           0.0                   0.0096             48
2      grey matter   4.0                   0.0096             106
3      white matter  1.0                   0.0096             154
4      fat           0.0                   0.0096             0
5      muscle        0.0                   0.0096             0
6      skin          0.5                   0.0096             92
7      skull         0.0                   0.013              48
8      vessels       0.0                   0.0096             0
9      around fat    0.0                   0.0096             0
10     dura          0.0                   0.013              48
11     marrow        0.0                   0.013              48
=====  ============  ====================  =================  ===============

* FDG: ``brainweb.FDG`` has white matter 32, grey matter 4 × 32 = 128, skin 32 // 2 = 16 and 0 elsewhere; we divide
  by 32 so that white matter = 1 (grey : white = 4 : 1).  Lesion values ``FDG.hot`` = 1.5 × grey = 6 and
  ``FDG.cold`` = 0.5 × white = 0.5 become :data:`FDG_HOT_LESION` and :data:`FDG_COLD_LESION`.
* μ: ``brainweb.Mu`` uses bone = 0.13 /cm for skull, marrow and dura, and tissue = 0.0975 /cm for the other
  non-background classes.  We keep that class assignment but use this project's values (METHODS.md):
  tissue 0.0096 /mm, bone 0.013 /mm (the same constants as :mod:`bundle.data.ellipsoid_head`).
* T1: ``brainweb.T1`` lists white 154, grey 106, skin 92, skull 48, marrow 180, bone 48, csf 48; because its
  ``attrs`` order applies "bone" (= skull, marrow, dura) after "marrow", the images the package writes carry 48 in
  marrow and dura.  We use those effective values; fat, muscle, vessels and around-fat are 0 there too.

Array convention (as in :mod:`bundle.physics.geometry`): (z, y, x), axis 0 axial; world coordinates in mm, voxel
``i`` of an axis at ``origin_mm + i · voxel_size_mm``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

import numpy as np
import torch
from scipy import ndimage

from ..physics.geometry import ImageGeometry
from .ellipsoid_head import MU_BONE_PER_MM, MU_TISSUE_PER_MM

__all__ = [
    "BONE_TISSUES",
    "FDG_ACTIVITY",
    "FDG_ACTIVITY_UNIT",
    "FDG_COLD_LESION",
    "FDG_HOT_LESION",
    "MU_BONE_PER_MM",
    "MU_PER_MM",
    "MU_TISSUE_PER_MM",
    "NUM_TISSUES",
    "T1_VALUE",
    "BrainPhantom",
    "Tissue",
    "antialias_factors",
    "block_average",
    "image_points_mm",
    "mix_tissues",
    "resample_volume",
    "sample_volume",
    "tissue_table",
]


class Tissue(IntEnum):
    """BrainWeb tissue classes; the value is the crisp label (stored uint16 value >> 4)."""

    BACKGROUND = 0
    CSF = 1
    GREY_MATTER = 2
    WHITE_MATTER = 3
    FAT = 4
    MUSCLE = 5
    SKIN = 6
    SKULL = 7
    VESSELS = 8
    AROUND_FAT = 9
    DURA = 10
    MARROW = 11


NUM_TISSUES = len(Tissue)

#: classes that the ``brainweb`` package treats as bone in its μ-map
BONE_TISSUES: frozenset[Tissue] = frozenset({Tissue.SKULL, Tissue.DURA, Tissue.MARROW})

#: FDG activity in relative units (white matter = 1), from ``brainweb.FDG`` divided by its white-matter value 32
FDG_ACTIVITY: Mapping[Tissue, float] = MappingProxyType(
    {t: 0.0 for t in Tissue} | {Tissue.GREY_MATTER: 4.0, Tissue.WHITE_MATTER: 1.0, Tissue.SKIN: 0.5}
)
#: the unit of :data:`FDG_ACTIVITY` as figures label it (the phantoms scale it by a per-subject factor near 1)
FDG_ACTIVITY_UNIT = "FDG activity (relative units, white matter ≈ 1)"
#: ``brainweb.FDG.hot`` = 1.5 × grey matter, in the same relative units
FDG_HOT_LESION = 6.0
#: ``brainweb.FDG.cold`` = 0.5 × white matter, in the same relative units
FDG_COLD_LESION = 0.5

#: linear attenuation coefficient at 511 keV in 1/mm (bone classes as in ``brainweb.Mu``)
MU_PER_MM: Mapping[Tissue, float] = MappingProxyType(
    {
        t: 0.0 if t is Tissue.BACKGROUND else (MU_BONE_PER_MM if t in BONE_TISSUES else MU_TISSUE_PER_MM)
        for t in Tissue
    }
)

#: T1-like intensity (arbitrary units), the effective values of ``brainweb.T1`` (see module docstring)
T1_VALUE: Mapping[Tissue, float] = MappingProxyType(
    {t: 0.0 for t in Tissue}
    | {
        Tissue.WHITE_MATTER: 154.0,
        Tissue.GREY_MATTER: 106.0,
        Tissue.SKIN: 92.0,
        Tissue.SKULL: 48.0,
        Tissue.MARROW: 48.0,
        Tissue.DURA: 48.0,
        Tissue.CSF: 48.0,
    }
)


def tissue_table(values: Mapping[Tissue, float]) -> np.ndarray:
    """Lookup table of shape (NUM_TISSUES,) float64: ``table[label]`` is the value of that tissue (0 if absent)."""
    table = np.zeros(NUM_TISSUES, dtype=np.float64)
    for tissue, value in values.items():
        table[int(Tissue(tissue))] = float(value)
    return table


def mix_tissues(fractions: Mapping[Tissue, np.ndarray], values: Mapping[Tissue, float]) -> np.ndarray:
    """Partial-volume mixture Σ_t f_t · v_t of per-tissue fraction maps (all of one shape), as float64."""
    if not fractions:
        raise ValueError("fractions must contain at least one tissue map, got an empty mapping")
    shape = np.shape(next(iter(fractions.values())))
    out = np.zeros(shape, dtype=np.float64)
    for tissue, fraction in fractions.items():
        value = float(values.get(Tissue(tissue), 0.0))
        if value:
            out += value * np.asarray(fraction, dtype=np.float64)
    return out


def _triple(value: Sequence[float], name: str) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in value)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of 3 numbers (z, y, x), got {value!r}") from err
    if len(out) != 3 or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be 3 finite numbers (z, y, x), got {value!r}")
    return out  # type: ignore[return-value]


def _voxel_triple(value: Sequence[float], name: str) -> tuple[float, float, float]:
    out = _triple(value, name)
    if min(out) <= 0:
        raise ValueError(f"{name} must be 3 positive sizes in mm (z, y, x), got {value!r}")
    return out


def image_points_mm(image: ImageGeometry) -> np.ndarray:
    """World coordinates of the voxel centres of ``image``: float64 array (3, n_z, n_y, n_x), (z, y, x) in mm."""
    if not isinstance(image, ImageGeometry):
        raise TypeError(f"image must be an ImageGeometry, got {type(image).__name__}")
    axes = [
        o + v * np.arange(n, dtype=np.float64)
        for n, v, o in zip(image.shape, image.voxel_size_mm, image.origin_mm, strict=True)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def antialias_factors(
    source_voxel_mm: Sequence[float], target_voxel_mm: Sequence[float]
) -> tuple[int, int, int]:
    """Integer block sizes ⌊target / source⌋ (at least 1) per axis used as anti-aliasing before interpolation."""
    src = _voxel_triple(source_voxel_mm, "source_voxel_mm")
    tgt = _voxel_triple(target_voxel_mm, "target_voxel_mm")
    return tuple(max(1, math.floor(t / s + 1e-6)) for s, t in zip(src, tgt, strict=True))  # type: ignore[return-value]


def block_average(
    volume: np.ndarray, factors: Sequence[int], *, voxel_size_mm: Sequence[float], origin_mm: Sequence[float]
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """Mean over non-overlapping blocks of ``factors`` voxels (zero-padded at the far ends).

    Returns ``(volume', voxel_size_mm', origin_mm')`` with voxel' = voxel · factor and origin' the centre of the
    first block, so that the coarse volume covers the same world region.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {volume.shape}")
    factors = tuple(int(f) for f in factors)
    if len(factors) != 3 or min(factors) < 1:
        raise ValueError(f"factors must be 3 positive integers, got {factors!r}")
    voxel = _voxel_triple(voxel_size_mm, "voxel_size_mm")
    origin = _triple(origin_mm, "origin_mm")
    new_voxel = tuple(v * f for v, f in zip(voxel, factors, strict=True))
    new_origin = tuple(o + (f - 1) / 2 * v for o, f, v in zip(origin, factors, voxel, strict=True))
    if factors == (1, 1, 1):
        return volume.astype(np.float32, copy=False), new_voxel, new_origin  # type: ignore[return-value]
    pad = [(0, -n % f) for n, f in zip(volume.shape, factors, strict=True)]
    padded = np.pad(volume.astype(np.float32, copy=False), pad)
    (nz, ny, nx), (fz, fy, fx) = padded.shape, factors
    blocks = padded.reshape(nz // fz, fz, ny // fy, fy, nx // fx, fx)
    out = blocks.mean(axis=(1, 3, 5), dtype=np.float32)
    return out, new_voxel, new_origin  # type: ignore[return-value]


def sample_volume(
    volume: np.ndarray,
    points_mm: np.ndarray,
    *,
    voxel_size_mm: Sequence[float],
    origin_mm: Sequence[float],
    order: int = 1,
) -> np.ndarray:
    """Interpolate ``volume`` (z, y, x) at world points ``points_mm`` (3, ...) in mm; 0 outside the volume.

    ``order`` 0 = nearest neighbour, 1 = trilinear.  Returns an array of shape ``points_mm.shape[1:]``.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest) or 1 (trilinear), got {order!r}")
    points = np.asarray(points_mm, dtype=np.float64)
    if points.ndim < 1 or points.shape[0] != 3:
        raise ValueError(f"points_mm must have shape (3, ...), got {points.shape}")
    voxel = _voxel_triple(voxel_size_mm, "voxel_size_mm")
    origin = _triple(origin_mm, "origin_mm")
    coords = [(points[i] - origin[i]) / voxel[i] for i in range(3)]
    if order == 0:
        coords = [np.floor(c + 0.5) for c in coords]
    volume = np.asarray(volume)
    dtype = volume.dtype if order == 0 else np.float32
    return ndimage.map_coordinates(
        volume.astype(dtype, copy=False), coords, order=order, mode="constant", cval=0.0, prefilter=False
    )


def resample_volume(
    volume: np.ndarray,
    points_mm: np.ndarray,
    *,
    voxel_size_mm: Sequence[float],
    origin_mm: Sequence[float],
    target_voxel_mm: Sequence[float],
    order: int = 1,
) -> np.ndarray:
    """Anti-aliased resampling of a fine volume at (possibly rotated/deformed) target points.

    The volume (z, y, x) is cropped to the region the points need, averaged over blocks of
    :func:`antialias_factors` (source → ``target_voxel_mm``) voxels, aligned to the full volume's block grid so
    that every target grid sees the same coarse volume, and interpolated (``order`` 1) at ``points_mm`` (3, ...).
    With ``order=0`` the volume is sampled by nearest neighbour without averaging (use for label maps).
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {volume.shape}")
    voxel = _voxel_triple(voxel_size_mm, "voxel_size_mm")
    origin = _triple(origin_mm, "origin_mm")
    if order == 0:
        return sample_volume(volume, points_mm, voxel_size_mm=voxel, origin_mm=origin, order=0)
    factors = antialias_factors(voxel, target_voxel_mm)
    points = np.asarray(points_mm, dtype=np.float64)
    lo, hi = [], []
    for axis in range(3):
        idx = (points[axis] - origin[axis]) / voxel[axis]
        f = factors[axis]
        start = max(0, (math.floor(float(idx.min())) - 2 * f) // f * f)
        stop = min(volume.shape[axis], -(-(math.ceil(float(idx.max())) + 2 * f + 1) // f) * f)
        if stop <= start:
            return np.zeros(points.shape[1:], dtype=np.float32)
        lo.append(start)
        hi.append(stop)
    crop = volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    crop_origin = tuple(o + i * v for o, i, v in zip(origin, lo, voxel, strict=True))
    coarse, c_voxel, c_origin = block_average(crop, factors, voxel_size_mm=voxel, origin_mm=crop_origin)
    return sample_volume(coarse, points, voxel_size_mm=c_voxel, origin_mm=c_origin, order=1)


@dataclass(frozen=True, kw_only=True)
class BrainPhantom:
    """A brain phantom on one image grid.

    Attributes:
        activity: (n_z, n_y, n_x) float32 FDG activity in relative units (white matter 1, grey matter 4), ≥ 0.
        mu_map_per_mm: (n_z, n_y, n_x) float32 linear attenuation at 511 keV in 1/mm (tissue 0.0096, bone 0.013,
            air 0; partial-volume mixtures at boundaries).
        t1: (n_z, n_y, n_x) float32 T1-like image (arbitrary units, :data:`T1_VALUE` scale).
        image: the grid, ``image.shape`` == each tensor's shape.
        description: provenance (source, subject/seed, augmentation parameters).
    """

    activity: torch.Tensor
    mu_map_per_mm: torch.Tensor
    t1: torch.Tensor
    image: ImageGeometry
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.image, ImageGeometry):
            raise TypeError(f"image must be an ImageGeometry, got {type(self.image).__name__}")
        if not isinstance(self.description, str):
            raise TypeError(f"description must be a str, got {type(self.description).__name__}")
        for name in ("activity", "mu_map_per_mm", "t1"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.dtype != torch.float32:
                raise TypeError(f"{name} must have dtype torch.float32, got {value.dtype}")
            if tuple(value.shape) != self.image.shape:
                raise ValueError(f"{name} must have shape image.shape = {self.image.shape}, got {tuple(value.shape)}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} must be finite everywhere")
        for name in ("activity", "mu_map_per_mm"):
            if float(getattr(self, name).min()) < 0:
                raise ValueError(f"{name} must be >= 0 everywhere, got min {float(getattr(self, name).min())}")

    @classmethod
    def from_arrays(
        cls, *, activity: np.ndarray, mu_map_per_mm: np.ndarray, t1: np.ndarray, image: ImageGeometry,
        description: str = "",
    ) -> BrainPhantom:
        """Build from numpy arrays of shape ``image.shape`` (cast to float32 tensors, tiny negatives → 0)."""

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        return cls(
            activity=tensor(np.clip(activity, 0.0, None)),
            mu_map_per_mm=tensor(np.clip(mu_map_per_mm, 0.0, None)),
            t1=tensor(t1),
            image=image,
            description=description,
        )
