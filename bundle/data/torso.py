"""A procedural total-body (uEXPLORER-style) FDG PET/CT phantom with organ labels, on any image grid.

The anatomy is a cartoon of an adult (vertex to soles about 1.76 m, no arms, supine) made of ellipses,
ellipsoids and cylinders.  World axes of the physics arrays (z, y, x) are anatomical RAS, as in NIfTI, so
``bundle.data.io.save_image`` (physics x, y, z → NIfTI x, y, z) writes the patient the right way round:

- z: axial, increasing towards the head (superior); z = 0 is the top of the liver / dome of the diaphragm,
  so an image centred on the scanner (the default :class:`ImageGeometry` origin) sees the lung bases,
  heart, liver, spleen and kidneys.  The body spans about z ∈ :data:`BODY_Z_RANGE_MM` (head at the top).
- y: increasing towards the front (anterior); x: increasing towards the patient's right.  The body axis is
  y = x = 0.

(The organ tables below are written with y → posterior and x → patient's left; the phantom is drawn on the
grid mirrored in y and x and flipped back, which is exact for any origin.)

What a grid shows is decided by its world coordinates, as on a scanner: a grid whose z-range does not reach
the head has no brain.  If the body's cross-section within the grid's z-range would not fit into 90 % of the
grid's transaxial half-extent, the whole body is scaled down uniformly about the world origin (a smaller
person, every organ keeps its proportions); the factor is stored as :attr:`TorsoPhantom.scale`, and the
world position of a body-frame point p is ``scale · p``.  Body parts beyond the grid's z-range are cut off,
as in an axially truncated scan; the transaxial border of the grid is always air.

Tissues (one label each; FDG uptake as SUV, converted to kBq/ml with :data:`KBQ_PER_ML_PER_SUV` = 5 kBq/ml,
about 370 MBq injected into 74 kg; CT numbers of a noise-free 120 kVp CT):

=============  =====  =======  ==============================================================
label          SUV    HU       typical literature values (FDG, 60 min p.i.) in words
=============  =====  =======  ==============================================================
air            0      −1000    outside the body
soft_tissue    0.8    40       skeletal muscle SUVmean about 0.6–1.0
fat            0.35   −100     subcutaneous fat SUVmean about 0.2–0.5
lungs          0.5    −800     normal lung parenchyma SUVmean about 0.4–0.7
liver          2.5    60       liver SUVmean about 2–3 (the PERCIST reference region)
spleen         2.0    45       spleen SUVmean about 1.5–2.5, usually a little below the liver
kidneys        3.0    30       renal cortex plus excreted tracer, SUVmean about 2–4
myocardium     5.0    40       left-ventricular wall, very variable with fasting (about 1–15)
blood_pool     1.8    40       mediastinal blood pool / aorta SUVmean about 1.5–2 (heart cavity and aorta)
bladder        20.0   10       urine in the bladder, SUV about 10–50 and more (water-like CT number)
bone           1.0    700      cortical bone about 0.5, red marrow about 1.5–2; one value for both
brain          7.0    35       whole-brain SUVmean about 6–8 (grey matter about 8–12)
lesion         4–15   40       FDG-avid tumours / nodes, drawn per lesion (soft-tissue density)
=============  =====  =======  ==============================================================

Bones: vertebrae (bodies, arches, transverse and spinous processes, with 6 mm discs), sacrum, iliac wings,
ischia, femoral heads and shafts, tibiae, ribs (12 pairs, sloping), sternum, clavicles, skull.

Variation by seed (a :class:`numpy.random.Generator` seeded with ``seed``): body width and depth ±12 %,
fat thickness 8–22 mm, every organ's semi-axes ±12 % and centre ±10 % of its semi-axes, organ uptake ±15 %
(bladder ±30 %), 0–4 spherical lesions (radius 5–15 mm, SUV 4–15) in the liver, a lung, a mediastinal or a
para-aortic node.  The nominal values above are never re-ordered by the variation
(bladder > brain, myocardium > liver > lungs for every seed).

μ at 511 keV comes from the CT by the bilinear conversion :func:`hu_to_mu_per_mm`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from ..physics.geometry import ImageGeometry

__all__ = [
    "BODY_Z_RANGE_MM",
    "KBQ_PER_ML_PER_SUV",
    "LABELS",
    "MU_WATER_PER_MM",
    "TISSUE_HU",
    "TISSUE_SUV",
    "Lesion",
    "TorsoPhantom",
    "hu_to_mu_per_mm",
    "torso_phantom",
    "total_body_image",
]

KBQ_PER_ML_PER_SUV = 5.0
"""kBq/ml of one SUV unit: about 370 MBq injected into a 74 kg patient (1 g ≈ 1 ml)."""

LABELS: Mapping[str, int] = MappingProxyType({
    "air": 0, "soft_tissue": 1, "fat": 2, "lungs": 3, "liver": 4, "spleen": 5, "kidneys": 6, "myocardium": 7,
    "blood_pool": 8, "bladder": 9, "bone": 10, "brain": 11, "lesion": 12,
})
"""Organ label values of :attr:`TorsoPhantom.labels` (uint8)."""

TISSUE_SUV: Mapping[str, float] = MappingProxyType({
    "air": 0.0, "soft_tissue": 0.8, "fat": 0.35, "lungs": 0.5, "liver": 2.5, "spleen": 2.0, "kidneys": 3.0,
    "myocardium": 5.0, "blood_pool": 1.8, "bladder": 20.0, "bone": 1.0, "brain": 7.0, "lesion": 8.0,
})
"""Nominal FDG uptake per tissue in SUV (lesions: 8 is the centre of their 4–15 range)."""

TISSUE_HU: Mapping[str, float] = MappingProxyType({
    "air": -1000.0, "soft_tissue": 40.0, "fat": -100.0, "lungs": -800.0, "liver": 60.0, "spleen": 45.0,
    "kidneys": 30.0, "myocardium": 40.0, "blood_pool": 40.0, "bladder": 10.0, "bone": 700.0, "brain": 35.0,
    "lesion": 40.0,
})
"""CT number per tissue in Hounsfield units."""

MU_WATER_PER_MM = 0.0096
"""Linear attenuation coefficient of water at 511 keV (1/mm)."""

# Bilinear HU -> mu at 511 keV, Carney et al. (Med. Phys. 2006), 120 kVp: above the break point
# mu = a (HU + 1000) + b with a = 5.10e-5 /cm, b = 4.71e-2 /cm (here in 1/mm).
_MU_BONE_SLOPE_PER_MM = 5.10e-6
_MU_BONE_INTERCEPT_PER_MM = 4.71e-3

BODY_Z_RANGE_MM = (-1230.0, 535.0)
"""Nominal axial extent (soles, vertex) of the body frame in mm, before seed variation and fitting."""

_FIT_FRACTION = 0.9
_TRUNK_Z = (-470.0, -350.0, -250.0, -100.0, 0.0, 100.0, 200.0, 240.0, 275.0, 330.0)
_TRUNK_SY = (100.0, 110.0, 110.0, 112.0, 118.0, 120.0, 112.0, 95.0, 60.0, 58.0)
_TRUNK_SX = (165.0, 175.0, 165.0, 150.0, 158.0, 165.0, 185.0, 190.0, 65.0, 60.0)
_LEG_Z = (-1230.0, -1100.0, -880.0, -600.0, -430.0)
_LEG_R = (40.0, 45.0, 55.0, 75.0, 88.0)
_LEG_CX = 90.0
_HEAD_CENTRE = (420.0, 0.0, 0.0)
_HEAD_SEMI = (115.0, 100.0, 78.0)
_RIB_MM = 9.0  # radial depth of the ribs; the lungs stay inside the rib cage
_SPINE_Z = (-265.0, -120.0, 0.0, 150.0, 250.0, 330.0)
_SPINE_Y = (45.0, 42.0, 52.0, 62.0, 50.0, 25.0)
_SPINE_SY = (16.0, 16.0, 14.0, 12.0, 10.0, 8.0)
_SPINE_SX = (25.0, 23.0, 19.0, 16.0, 14.0, 12.0)

# organ ellipsoids in the body frame: centre (z, y, x) mm, semi-axes (z, y, x) mm, rotation about z in degrees
_ORGANS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], float]] = {
    "lung_right": ((105.0, 10.0, -85.0), (125.0, 85.0, 62.0), 0.0),
    "lung_left": ((100.0, 10.0, 85.0), (120.0, 85.0, 60.0), 0.0),
    "liver": ((-50.0, 0.0, -65.0), (75.0, 85.0, 85.0), 0.0),
    "spleen": ((-40.0, 50.0, 100.0), (55.0, 40.0, 25.0), 0.0),
    "kidney_right": ((-165.0, 55.0, -70.0), (55.0, 25.0, 30.0), 0.0),
    "kidney_left": ((-145.0, 55.0, 70.0), (55.0, 25.0, 30.0), 0.0),
    "bladder": ((-385.0, -40.0, 0.0), (40.0, 40.0, 50.0), 0.0),
    "heart": ((40.0, -30.0, 25.0), (55.0, 60.0, 45.0), -45.0),
    "brain": ((450.0, 5.0, 0.0), (75.0, 80.0, 65.0), 0.0),
}
# lesion hosts: centre and semi-axes of the region a lesion centre is drawn from (organ keys follow jitter)
_NODE_REGIONS = {
    "mediastinal_node": ((120.0, -5.0, 10.0), (30.0, 20.0, 20.0)),
    "paraaortic_node": ((-150.0, 25.0, 10.0), (60.0, 15.0, 20.0)),
}
_LESION_HOSTS = ("liver", "lung_right", "lung_left", "mediastinal_node", "paraaortic_node")
_ORGAN_LABEL = {
    "lung_right": "lungs", "lung_left": "lungs", "liver": "liver", "spleen": "spleen", "kidney_right": "kidneys",
    "kidney_left": "kidneys", "bladder": "bladder", "heart": "myocardium", "brain": "brain",
}


@dataclass(frozen=True, kw_only=True)
class Lesion:
    """A spherical lesion in world (RAS) coordinates: centre (z, y, x) mm, radius mm, uptake in SUV, host region."""

    centre_mm: tuple[float, float, float]
    radius_mm: float
    suv: float
    host: str


@dataclass(frozen=True, kw_only=True, eq=False)
class TorsoPhantom:
    """One phantom on ``image``; every volume has shape ``image.shape`` = (n_z, n_y, n_x).

    ``activity_kbq_per_ml`` FDG activity concentration (float32, kBq/ml); ``ct_hu`` CT numbers (float32, HU);
    ``mu_map_per_mm`` linear attenuation at 511 keV (float32, 1/mm) = ``hu_to_mu_per_mm(ct_hu)``;
    ``labels`` organ labels (uint8, values of :data:`LABELS`); ``scale`` the body-frame to world factor (≤ 1);
    ``lesions`` the lesions drawn for this seed (some may lie outside the grid's z-range); ``lesion_index`` (uint8)
    the voxels of lesion ``k`` (``lesions[k - 1]``, where it is visible: a later lesion paints over an earlier one)
    hold ``k``, all others 0.
    """

    activity_kbq_per_ml: torch.Tensor
    ct_hu: torch.Tensor
    mu_map_per_mm: torch.Tensor
    labels: torch.Tensor
    image: ImageGeometry
    scale: float
    seed: int
    lesions: tuple[Lesion, ...] = field(default=())
    lesion_index: torch.Tensor | None = None


def hu_to_mu_per_mm(hu: torch.Tensor | float) -> torch.Tensor:
    """Bilinear CT number → μ at 511 keV in 1/mm (same shape and floating dtype as ``hu``; ints give float32).

    μ = min(μ_w (1 + HU/1000), a (HU + 1000) + b), clamped at 0, with μ_w = 0.0096/mm (water) and the 120 kVp
    bone segment of Carney et al. (2006): a = 5.10e-6 /mm per HU, b = 4.71e-3 /mm.  The two lines meet at
    about 47 HU, so air (−1000 HU) → 0, water (0 HU) → 0.0096/mm exactly, soft tissue (40 HU) → 0.00998/mm,
    bone 700 HU → 0.0134/mm and dense cortical bone 1500 HU → 0.0175/mm.  Monotone non-decreasing in HU.
    """
    hu_t = torch.as_tensor(hu)
    if not hu_t.is_floating_point():
        hu_t = hu_t.to(torch.float32)
    soft = MU_WATER_PER_MM * (1.0 + hu_t / 1000.0)
    bone = _MU_BONE_SLOPE_PER_MM * (hu_t + 1000.0) + _MU_BONE_INTERCEPT_PER_MM
    return torch.clamp(torch.minimum(soft, bone), min=0.0)


def total_body_image(
    *, voxel_size_mm: tuple[float, float, float] = (4.0, 4.0, 4.0), transaxial_fov_mm: float = 600.0
) -> ImageGeometry:
    """A grid that holds the whole (unscaled) body: the z-range :data:`BODY_Z_RANGE_MM` + 40 mm either side.

    ``voxel_size_mm`` is (z, y, x); the transaxial field of view is square, centred on the body axis.
    """
    if isinstance(transaxial_fov_mm, bool) or not (
        isinstance(transaxial_fov_mm, int | float) and math.isfinite(transaxial_fov_mm) and transaxial_fov_mm > 0
    ):
        raise ValueError(f"transaxial_fov_mm must be a positive finite number, got {transaxial_fov_mm!r}")
    probe = ImageGeometry(shape=(1, 1, 1), voxel_size_mm=voxel_size_mm)  # validates the voxel sizes
    vz, vy, vx = probe.voxel_size_mm
    z_lo, z_hi = BODY_Z_RANGE_MM[0] - 40.0, BODY_Z_RANGE_MM[1] + 40.0
    n_z = math.ceil((z_hi - z_lo) / vz)
    n_y, n_x = math.ceil(transaxial_fov_mm / vy), math.ceil(transaxial_fov_mm / vx)
    origin_z = (z_lo + z_hi) / 2 - (n_z - 1) / 2 * vz
    return ImageGeometry(
        shape=(n_z, n_y, n_x), voxel_size_mm=(vz, vy, vx),
        origin_mm=(origin_z, -(n_y - 1) / 2 * vy, -(n_x - 1) / 2 * vx),
    )


@dataclass
class _Anatomy:
    """Seed-specific body-frame anatomy (private)."""

    width: float
    depth: float
    head: float
    fat_mm: float
    organs: dict[str, tuple[np.ndarray, np.ndarray, float]]
    uptake: dict[str, float]
    lesions: list[tuple[str, np.ndarray, float, float]]

    def trunk(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-z (active, semi_y, semi_x) of the trunk outline."""
        active = (z >= _TRUNK_Z[0]) & (z <= _TRUNK_Z[-1])
        return active, np.interp(z, _TRUNK_Z, _TRUNK_SY) * self.depth, np.interp(z, _TRUNK_Z, _TRUNK_SX) * self.width

    def leg(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-z (active, radius) of each leg and the legs' |x| centre."""
        active = (z >= _LEG_Z[0]) & (z <= _LEG_Z[-1])
        return active, np.interp(z, _LEG_Z, _LEG_R) * math.sqrt(self.width * self.depth), _LEG_CX * self.width

    def head_semi(self) -> np.ndarray:
        return np.asarray(_HEAD_SEMI) * self.head

    def extent(self, z: np.ndarray) -> tuple[float, float]:
        """Largest |y| and |x| of the outline over the body-frame z samples ``z``."""
        t_on, t_sy, t_sx = self.trunk(z)
        l_on, l_r, l_cx = self.leg(z)
        hs = self.head_semi()
        h = np.sqrt(np.clip(1.0 - ((z - _HEAD_CENTRE[0]) / hs[0]) ** 2, 0.0, None))
        ext_y = np.maximum.reduce([t_on * t_sy, l_on * l_r, h * hs[1]])
        ext_x = np.maximum.reduce([t_on * t_sx, l_on * (l_cx + l_r), h * hs[2]])
        return float(ext_y.max(initial=0.0)), float(ext_x.max(initial=0.0))


def _sample_anatomy(
    rng: np.random.Generator,
    *,
    lesion_count: tuple[int, int] = (0, 4),
    lesion_radius_mm: tuple[float, float] = (5.0, 15.0),
) -> _Anatomy:
    width, depth = rng.uniform(0.88, 1.12, size=2)
    head = rng.uniform(0.95, 1.05)
    fat_mm = rng.uniform(8.0, 22.0)
    organs = {}
    for name, (centre, semi, angle) in _ORGANS.items():
        c, a = np.asarray(centre), np.asarray(semi)
        if name != "brain":
            c = c * np.array([1.0, depth, width])
        else:
            c, a = c * np.array([1.0, head, head]), a * head
        c = c + rng.uniform(-0.1, 0.1, size=3) * a
        organs[name] = (c, a * rng.uniform(0.88, 1.12, size=3), angle)
    uptake = {name: rng.uniform(0.85, 1.15) for name in TISSUE_SUV}
    uptake["bladder"] = rng.uniform(0.7, 1.3)
    regions = {name: organs[name][:2] for name in ("liver", "lung_right", "lung_left")}
    regions.update({k: (np.asarray(c) * np.array([1.0, depth, width]), np.asarray(a))
                    for k, (c, a) in _NODE_REGIONS.items()})
    lesions = []
    for _ in range(int(rng.integers(lesion_count[0], lesion_count[1] + 1))):
        host = _LESION_HOSTS[int(rng.integers(len(_LESION_HOSTS)))]
        c, a = regions[host]
        direction = rng.normal(size=3)
        direction /= max(float(np.linalg.norm(direction)), 1e-12)
        offset = direction * 0.6 * rng.uniform() ** (1 / 3)
        lesions.append((host, c + offset * a, rng.uniform(*lesion_radius_mm), rng.uniform(4.0, 15.0)))
    return _Anatomy(width, depth, head, fat_mm, organs, uptake, lesions)


def _col(values) -> torch.Tensor:
    """Per-slice values (n_z,) as a float32 column (n_z, 1, 1) that broadcasts over (y, x)."""
    return torch.as_tensor(np.asarray(values), dtype=torch.float32)[:, None, None]


def _voxel_centres(image: ImageGeometry, axis: int) -> np.ndarray:
    return np.arange(image.shape[axis]) * image.voxel_size_mm[axis] + image.origin_mm[axis]


def _fit_scale(image: ImageGeometry, anatomy: _Anatomy) -> float:
    """Largest s ≤ 1 with s · extent(window(s)) ≤ 0.9 · half-extent, window(s) = grid z-range / s."""
    half = []
    for axis, name in ((1, "y"), (2, "x")):
        c = _voxel_centres(image, axis)
        d = min(-c[0], c[-1])
        if d <= 0:
            raise ValueError(
                f"image must contain the body axis ({name} = 0 mm) strictly inside its transaxial voxel centres, "
                f"got {name} from {c[0]:.1f} to {c[-1]:.1f} mm (origin_mm={image.origin_mm})"
            )
        half.append(_FIT_FRACTION * d)
    zc = _voxel_centres(image, 0)
    knots = np.concatenate([_TRUNK_Z, _LEG_Z, [_HEAD_CENTRE[0]]])
    scale = 1.0
    for _ in range(200):
        lo, hi = zc[0] / scale, zc[-1] / scale
        samples = np.concatenate([[lo, hi], knots[(knots >= lo) & (knots <= hi)]])
        ext_y, ext_x = anatomy.extent(samples)
        new = min(1.0, half[0] / ext_y if ext_y > 0 else 1.0, half[1] / ext_x if ext_x > 0 else 1.0)
        if new >= scale * (1 - 1e-12):
            break
        scale = new
    return scale


class _Canvas:
    """Body-frame voxel coordinates of a grid and the label volume being painted (later paint wins)."""

    def __init__(self, image: ImageGeometry, scale: float) -> None:
        self.axes = [torch.from_numpy(_voxel_centres(image, a) / scale).to(torch.float32) for a in range(3)]
        self.labels = torch.zeros(image.shape, dtype=torch.uint8)

    def box(self, lo, hi) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels with body-frame coordinates in [lo, hi] (z, y, x), or None if empty."""
        out = []
        for ax, low, high in zip(self.axes, lo, hi, strict=True):
            i0 = int(torch.searchsorted(ax, torch.tensor(float(low))))
            i1 = int(torch.searchsorted(ax, torch.tensor(float(high)), right=True))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return out[0], out[1], out[2]

    def coords(self, sl) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Broadcastable body-frame coordinates (z: (n,1,1), y: (1,n,1), x: (1,1,n)) of a box."""
        z, y, x = (ax[s] for ax, s in zip(self.axes, sl, strict=True))
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def ellipsoid(self, centre, semi, angle_deg: float = 0.0):
        """(slices, mask) of a (z-axis rotated) ellipsoid within its bounding box, or None."""
        r_yx = max(semi[1], semi[2]) if angle_deg else None
        half = (semi[0], r_yx or semi[1], r_yx or semi[2])
        sl = self.box([c - h for c, h in zip(centre, half, strict=True)],
                      [c + h for c, h in zip(centre, half, strict=True)])
        if sl is None:
            return None
        z, y, x = self.coords(sl)
        dy, dx = y - float(centre[1]), x - float(centre[2])
        if angle_deg:
            cos, sin = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
            dy, dx = cos * dy + sin * dx, -sin * dy + cos * dx
        mask = ((z - float(centre[0])) / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dx / semi[2]) ** 2 <= 1.0
        return sl, mask

    def cylinder(self, *, z_range: tuple[float, float], centre_yx: tuple[float, float], radius: float):
        """(slices, mask) of a z-aligned circular cylinder, or None."""
        (z0, z1), (cy, cx) = z_range, centre_yx
        sl = self.box((z0, cy - radius, cx - radius), (z1, cy + radius, cx + radius))
        if sl is None:
            return None
        z, y, x = self.coords(sl)
        return sl, ((y - cy) ** 2 + (x - cx) ** 2 <= radius**2) & (z >= z0)

    def paint(self, label: str, region, within: torch.Tensor | None = None) -> torch.Tensor | None:
        """Set ``label`` on ``region`` (∩ ``within``); returns the painted full-size mask or None."""
        if region is None:
            return None
        sl, mask = region
        mask = mask.expand(tuple(s.stop - s.start for s in sl))
        if within is not None:
            mask = mask & within[sl]
        self.labels[sl][mask] = LABELS[label]
        full = torch.zeros(self.labels.shape, dtype=torch.bool)
        full[sl] = mask
        return full


def _outline(canvas: _Canvas, anatomy: _Anatomy) -> tuple[torch.Tensor, torch.Tensor]:
    """Body outline and its interior (outline minus the subcutaneous fat layer), full-size bool volumes."""
    z = canvas.axes[0].double().numpy()
    y, x = canvas.axes[1][None, :, None], canvas.axes[2][None, None, :]

    t_on, t_sy, t_sx = anatomy.trunk(z)
    fat = np.minimum(anatomy.fat_mm, 0.3 * np.minimum(t_sy, t_sx))
    t_on_t = torch.from_numpy(t_on)[:, None, None]
    body = t_on_t & ((y / _col(t_sy)) ** 2 + (x / _col(t_sx)) ** 2 <= 1)
    inner = t_on_t & ((y / _col(t_sy - fat)) ** 2 + (x / _col(t_sx - fat)) ** 2 <= 1)
    l_on, l_r, l_cx = anatomy.leg(z)
    l_on_t, l_fat = torch.from_numpy(l_on)[:, None, None], 0.6 * np.minimum(anatomy.fat_mm, 0.3 * l_r)
    for side in (-1.0, 1.0):
        d2 = y**2 + (x - side * l_cx) ** 2
        body |= l_on_t & (d2 <= _col(l_r) ** 2)
        inner |= l_on_t & (d2 <= _col(l_r - l_fat) ** 2)
    head = canvas.ellipsoid(_HEAD_CENTRE, anatomy.head_semi())
    if head is not None:
        sl, mask = head
        body[sl] |= mask
        inner[sl] |= mask
    canvas.labels[body] = LABELS["soft_tissue"]
    canvas.labels[body & ~inner] = LABELS["fat"]
    return body, inner


def _spine(canvas: _Canvas, anatomy: _Anatomy, inner: torch.Tensor) -> None:
    """Vertebrae: bodies with 6 mm discs (26 mm period), arch around the canal, spinous/transverse processes."""
    lo = (_SPINE_Z[0], min(_SPINE_Y) * anatomy.depth - 20.0, -2.0 * max(_SPINE_SX) - 20.0)
    hi = (_SPINE_Z[-1], max(_SPINE_Y) * anatomy.depth + 60.0, 2.0 * max(_SPINE_SX) + 20.0)
    sl = canvas.box(lo, hi)
    if sl is None:
        return
    z, y, x = canvas.coords(sl)
    zn = z[:, 0, 0].double().numpy()

    yc = _col(np.interp(zn, _SPINE_Z, _SPINE_Y) * anatomy.depth)
    sy, sx = _col(np.interp(zn, _SPINE_Z, _SPINE_SY)), _col(np.interp(zn, _SPINE_Z, _SPINE_SX))
    vertebra = _col(np.mod(zn - _SPINE_Z[0], 26.0) < 20.0)
    canal_y = yc + sy + 7.0
    d2 = (y - canal_y) ** 2 + x**2
    mask = ((y - yc) / sy) ** 2 + (x / sx) ** 2 <= 1
    mask = mask | ((d2 <= 12.0**2) & (d2 > 7.0**2))
    mask = mask | (((y - canal_y - 15.0) / 7.0) ** 2 + (x / 3.5) ** 2 <= 1)
    mask = mask | ((((y - canal_y) / 4.5) ** 2 + (x / (sx + 14.0)) ** 2 <= 1) & (d2 > 7.0**2))
    canvas.paint("bone", (sl, mask & (vertebra > 0)), inner)


def _rib_cage(canvas: _Canvas, anatomy: _Anatomy):
    """Thorax box, its coordinates and the per-slice outer semi-axes (y, x) of the rib cage, or None."""
    sl = canvas.box((-140.0, -200.0, -250.0), (240.0, 200.0, 250.0))
    if sl is None:
        return None
    z, y, x = canvas.coords(sl)
    _, t_sy, t_sx = anatomy.trunk(z[:, 0, 0].double().numpy())
    depth = np.minimum(anatomy.fat_mm, 0.3 * np.minimum(t_sy, t_sx)) + 4.0
    oy = torch.as_tensor(t_sy - depth, dtype=torch.float32)[:, None, None]
    ox = torch.as_tensor(t_sx - depth, dtype=torch.float32)[:, None, None]
    return sl, (z, y, x), (oy, ox)


def _thorax_bones(canvas: _Canvas, anatomy: _Anatomy, inner: torch.Tensor) -> None:
    """12 pairs of ribs (elliptic bands 9 mm deep, 10 mm high, sloping 0.25 mm/mm upwards to the back), sternum."""
    cage = _rib_cage(canvas, anatomy)
    if cage is None:
        return
    sl, (z, y, x), (oy, ox) = cage
    r_out = (y / oy) ** 2 + (x / ox) ** 2
    r_in = (y / (oy - _RIB_MM)) ** 2 + (x / (ox - _RIB_MM)) ** 2
    band = (r_out <= 1) & (r_in > 1)
    phase = z - 0.25 * y
    ribs = torch.zeros_like(band)
    for k in range(12):
        z_k = 195.0 - 24.0 * k
        rib = (phase - z_k).abs() <= 5.0
        rib = rib & ~((y < 0) & (x.abs() < 30.0))  # costal cartilage: no bone at the front midline
        if z_k < 20.0:
            rib = rib & (y > -40.0)  # lower ribs stop short of the front
        ribs |= rib
    canvas.paint("bone", (sl, band & ribs), inner)
    sternum = ((y + oy - 4.0) / 7.0) ** 2 + (x / 15.0) ** 2 <= 1
    canvas.paint("bone", (sl, sternum & (z >= 0.0) & (z <= 190.0)), inner)


def _other_bones(canvas: _Canvas, anatomy: _Anatomy, inner: torch.Tensor) -> None:
    """Pelvis, legs, clavicles and skull."""
    w, d = anatomy.width, anatomy.depth
    canvas.paint("bone", canvas.ellipsoid((-320.0, 70.0 * d, 0.0), (55.0, 20.0, 40.0)), inner)  # sacrum
    for side in (-1.0, 1.0):
        cx = side * _LEG_CX * w
        canvas.paint("bone", canvas.ellipsoid((-300.0, 15.0 * d, side * 95.0 * w), (55.0, 62.0, 9.0),
                                              135.0 if side > 0 else -135.0), inner)  # iliac wing
        canvas.paint("bone", canvas.ellipsoid((-455.0, 30.0 * d, side * 55.0 * w), (25.0, 15.0, 12.0)), inner)
        canvas.paint("bone", canvas.ellipsoid((-440.0, -70.0 * d, side * 25.0 * w), (18.0, 12.0, 30.0)), inner)
        canvas.paint("bone", canvas.ellipsoid((-410.0, 5.0 * d, cx), (24.0, 24.0, 24.0)), inner)  # femoral head
        femur = canvas.cylinder(z_range=(-880.0, -410.0), centre_yx=(0.0, cx), radius=13.0)
        canvas.paint("bone", femur, inner)
        canvas.paint("bone", canvas.ellipsoid((-890.0, 0.0, cx), (20.0, 25.0, 30.0)), inner)  # condyles
        tibia = canvas.cylinder(z_range=(-1180.0, -905.0), centre_yx=(-10.0, cx), radius=12.0)
        canvas.paint("bone", tibia, inner)
        canvas.paint("bone", canvas.ellipsoid((245.0, -55.0 * d, side * 75.0 * w), (8.0, 8.0, 70.0)), inner)  # clavicle
    hs = anatomy.head_semi()
    skull_outer = canvas.ellipsoid(_HEAD_CENTRE, hs - 4.0)
    if skull_outer is not None:
        sl, outer = skull_outer
        inner_skull = torch.zeros_like(inner)
        cavity = canvas.ellipsoid(_HEAD_CENTRE, hs - 11.0)
        if cavity is not None:
            inner_skull[cavity[0]] = cavity[1]
        canvas.paint("bone", (sl, outer & ~inner_skull[sl]), inner)


def _organs(canvas: _Canvas, anatomy: _Anatomy, inner: torch.Tensor) -> None:
    """Soft organs (later ones win where they overlap), heart with blood-filled cavity, aorta, brain."""
    cavity = torch.zeros_like(inner)  # inside the rib cage: where the lungs may be
    cage = _rib_cage(canvas, anatomy)
    if cage is not None:
        sl, (_, y, x), (oy, ox) = cage
        cavity[sl] = (y / (oy - _RIB_MM)) ** 2 + (x / (ox - _RIB_MM)) ** 2 <= 1
    for name in ("lung_right", "lung_left", "liver", "spleen", "kidney_right", "kidney_left", "bladder"):
        c, a, angle = anatomy.organs[name]
        canvas.paint(_ORGAN_LABEL[name], canvas.ellipsoid(c, a, angle), inner & cavity if "lung" in name else inner)
    c, a, angle = anatomy.organs["heart"]
    canvas.paint("myocardium", canvas.ellipsoid(c, a, angle), inner)
    canvas.paint("blood_pool", canvas.ellipsoid(c, np.maximum(a - 10.0, 1.0), angle), inner)
    # aorta: descending in front of the spine (left), ascending above the heart, arch joining them
    for z_step in np.arange(-250.0, 130.0, 20.0):
        zn = np.array([z_step + 10.0])
        y_desc = float(np.interp(zn, _SPINE_Z, _SPINE_Y)[0] * anatomy.depth - np.interp(zn, _SPINE_Z, _SPINE_SY)[0])
        segment = canvas.cylinder(z_range=(z_step, z_step + 20.0), centre_yx=(y_desc - 13.0, 20.0), radius=11.0)
        canvas.paint("blood_pool", segment, inner)
    ascending = canvas.cylinder(z_range=(85.0, 130.0), centre_yx=(-25.0 * anatomy.depth, -5.0), radius=13.0)
    canvas.paint("blood_pool", ascending, inner)
    canvas.paint("blood_pool", canvas.ellipsoid((135.0, 6.0 * anatomy.depth, 8.0), (14.0, 44.0, 14.0)), inner)
    c, a, _ = anatomy.organs["brain"]
    inner_skull = canvas.ellipsoid(_HEAD_CENTRE, anatomy.head_semi() - 11.0)
    brain = canvas.ellipsoid(c, a)
    if brain is not None and inner_skull is not None:
        within = torch.zeros_like(inner)
        within[inner_skull[0]] = inner_skull[1]
        canvas.paint("brain", brain, within & inner)


_TEXTURED = ("soft_tissue", "fat", "lungs", "spleen", "kidneys", "myocardium", "blood_pool", "bone")
"""Tissues that get the optional uptake texture; the liver stays uniform (the reference region of noise, CoV)."""


def _texture(image: ImageGeometry, seed: int, std: float, correlation_mm: float) -> torch.Tensor:
    """Multiplicative log-normal texture exp(std·g − std²/2) of mean 1, g a unit-variance Gaussian random field with
    a Gaussian correlation of ``correlation_mm`` (σ of the smoothing kernel), drawn from its own stream of ``seed``."""
    from monai.networks.layers import GaussianFilter

    white = np.random.default_rng([int(seed), 1]).standard_normal(image.shape).astype(np.float32)
    sigma = [correlation_mm / v for v in image.voxel_size_mm]
    field = GaussianFilter(spatial_dims=3, sigma=sigma)(torch.from_numpy(white)[None, None])[0, 0]
    field = (field - field.mean()) / field.std().clamp_min(1e-12)
    return torch.exp(std * field - 0.5 * std**2)


def torso_phantom(
    *,
    image: ImageGeometry,
    seed: int,
    lesion_count: tuple[int, int] = (0, 4),
    lesion_radius_mm: tuple[float, float] = (5.0, 15.0),
    texture_std: float = 0.0,
    texture_correlation_mm: float = 15.0,
) -> TorsoPhantom:
    """Build the total-body FDG PET/CT phantom for ``seed`` on ``image`` (see the module docstring).

    ``lesion_count`` (min, max) and ``lesion_radius_mm`` (min, max): the number and radii of the lesions drawn (the
    defaults are the module docstring's); ``texture_std`` > 0 multiplies the uptake of the tissues of
    :data:`_TEXTURED` (not the liver, lesions, bladder or brain) by a smooth log-normal texture of that log-std and
    ``texture_correlation_mm`` (drawn from a stream of its own, so the anatomy of a seed does not change).

    Returns a :class:`TorsoPhantom` with float32 activity (kBq/ml), CT (HU) and μ (1/mm) volumes and uint8
    labels, each of shape ``image.shape`` (n_z, n_y, n_x).  Deterministic: the same seed, options and grid give
    identical volumes.
    """
    lo, hi = (int(v) for v in lesion_count)
    if not 0 <= lo <= hi:
        raise ValueError(f"lesion_count must be (min, max) with 0 <= min <= max, got {lesion_count}")
    r_lo, r_hi = (float(v) for v in lesion_radius_mm)
    if not 0 < r_lo <= r_hi:
        raise ValueError(f"lesion_radius_mm must be (min, max) with 0 < min <= max, got {lesion_radius_mm}")
    if not (math.isfinite(texture_std) and texture_std >= 0):
        raise ValueError(f"texture_std must be a finite number >= 0, got {texture_std}")
    if not (math.isfinite(texture_correlation_mm) and texture_correlation_mm > 0):
        raise ValueError(f"texture_correlation_mm must be > 0, got {texture_correlation_mm}")
    if not isinstance(image, ImageGeometry):
        raise TypeError(f"image must be an ImageGeometry, got {type(image).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed}")
    anatomy = _sample_anatomy(np.random.default_rng(int(seed)), lesion_count=(lo, hi), lesion_radius_mm=(r_lo, r_hi))
    # the tables are LPS-like (y posterior, x left): draw on the grid mirrored in y and x, flip back to RAS
    (_, n_y, n_x), (_, v_y, v_x), (o_z, o_y, o_x) = image.shape, image.voxel_size_mm, image.origin_mm
    mirrored = ImageGeometry(shape=image.shape, voxel_size_mm=image.voxel_size_mm,
                             origin_mm=(o_z, -(o_y + (n_y - 1) * v_y), -(o_x + (n_x - 1) * v_x)))
    scale = _fit_scale(image, anatomy)  # symmetric in y and x: the same on the mirrored grid
    canvas = _Canvas(mirrored, scale)
    _, inner = _outline(canvas, anatomy)
    _organs(canvas, anatomy, inner)
    _spine(canvas, anatomy, inner)
    _thorax_bones(canvas, anatomy, inner)
    _other_bones(canvas, anatomy, inner)

    names = sorted(LABELS, key=LABELS.__getitem__)
    suv_lut = torch.tensor([TISSUE_SUV[n] * anatomy.uptake[n] for n in names], dtype=torch.float32)
    hu_lut = torch.tensor([TISSUE_HU[n] for n in names], dtype=torch.float32)
    suv = suv_lut[canvas.labels.long()]
    if texture_std > 0:  # drawn on the RAS grid, applied on the mirrored canvas
        textured = torch.isin(canvas.labels, torch.tensor([LABELS[n] for n in _TEXTURED], dtype=canvas.labels.dtype))
        texture = _texture(image, int(seed), float(texture_std), float(texture_correlation_mm)).flip((1, 2))
        suv = torch.where(textured, suv * texture, suv)
    lesions = []
    lesion_index = torch.zeros(image.shape, dtype=torch.uint8)
    for number, (host, centre, radius, lesion_suv) in enumerate(anatomy.lesions, start=1):
        mask = canvas.paint("lesion", canvas.ellipsoid(centre, (radius, radius, radius)), inner)
        if mask is not None:
            suv[mask] = lesion_suv
            lesion_index[mask] = number
        world = (float(centre[0] * scale), float(-centre[1] * scale), float(-centre[2] * scale))
        lesions.append(Lesion(centre_mm=world, radius_mm=float(radius * scale), suv=float(lesion_suv), host=host))
    suv[canvas.labels == LABELS["air"]] = 0.0
    labels = canvas.labels.flip((1, 2)).contiguous()
    ct_hu = hu_lut[labels.long()]
    return TorsoPhantom(
        activity_kbq_per_ml=(suv * KBQ_PER_ML_PER_SUV).flip((1, 2)).contiguous(),
        ct_hu=ct_hu,
        mu_map_per_mm=hu_to_mu_per_mm(ct_hu).to(torch.float32),
        labels=labels,
        image=image,
        scale=float(scale),
        seed=int(seed),
        lesions=tuple(lesions),
        lesion_index=lesion_index.flip((1, 2)).contiguous(),
    )
