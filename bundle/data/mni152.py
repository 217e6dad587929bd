"""The embedded default brain: an FDG phantom built from the MNI152 templates that ship inside the nilearn wheel.

Source files (``site-packages/nilearn/datasets/data``, read with nibabel; nilearn itself is not imported and nothing
is downloaded): ``mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz`` and ``..._wm_...`` (grey/white-matter
probability maps) and ``..._t1_...`` (skull-stripped T1 template), all uint8 (0 … 255, divided by 255 as nilearn's
``load_mni152_*_template`` do), 197 × 233 × 189 voxels of 1 mm, RAS.  These are exactly the files behind
``nilearn.datasets.load_mni152_gm_template`` / ``_wm_template`` / ``load_mni152_template``;
``load_mni152_brain_mask`` is ``T1 > 0.2``, which we compute the same way.

Template model (built once per option set and cached, at ``template_resolution_mm`` 2 (block average of the 1 mm
files) or 1):

* axes reordered from (x, y, z) RAS to (z, y, x) and y flipped, so arrays run (inferior → superior,
  anterior → posterior, subject left → right), the same orientation as :mod:`bundle.data.brainweb`.
* grey matter f_gm, white matter f_wm from the probability maps (scaled so f_gm + f_wm ≤ 1).
* intracranial region = brain mask (T1 > 0.2) closed by a Gaussian (σ = 3 mm, > 0.5) and hole-filled; inside it the
  rest is CSF (sulci, ventricles), f_csf = 1 − f_gm − f_wm.
* skull: a shell ``skull_thickness_mm`` thick around the intracranial region (Euclidean distance), then scalp
  (skin) ``scalp_thickness_mm`` thick; the templates stop 72 mm below the AC, so the shell also closes the head
  below the brainstem.
* T1: the template's T1 inside the intracranial region, scaled so that pure white matter has the BrainWeb value 154;
  skull and scalp get the BrainWeb T1 values (48, 92).

Tissue values (:mod:`bundle.data.brain`, BrainWeb FDG model): grey 4, white 1, CSF 0, skull 0, scalp 0.5; μ tissue
0.0096 /mm, bone 0.013 /mm, air 0.  Mixed voxels carry partial-volume mixtures (trilinear resampling).

Per-seed variation (all from ``numpy.random.default_rng(seed)``, drawn in this fixed order):

1. rotation about the head centre: in-plane (about the axial axis) uniform in ±:data:`MAX_ROTATION_DEG`, tilts
   about the two transaxial axes uniform in ±:data:`MAX_TILT_DEG`; ``rotation_deg`` replaces all three by an
   in-plane rotation of exactly that angle (no tilt).
2. smooth elastic deformation: i.i.d. normal displacements with standard deviation ``deformation_mm`` on control
   points every :data:`DEFORMATION_SPACING_MM` mm, cubic-spline interpolated.
3. global activity scale factor uniform in :data:`ACTIVITY_SCALE_RANGE`.
4. number of lesions, uniform in 0 … :data:`MAX_LESIONS` (unless ``num_lesions`` is given), then per lesion a radius
   uniform in :data:`LESION_RADIUS_MM_RANGE`, hot (activity ``FDG_HOT_LESION`` = 6) or cold
   (``FDG_COLD_LESION`` = 0.5) with equal probability, and a centre drawn among the target grid's voxels with
   f_gm + f_wm ≥ 0.9 (so lesions are visible on the requested grid, also a single slice).  A lesion replaces the
   grey/white-matter activity inside its sphere (1 mm soft edge) and moves with the anatomy.

The head (bounding box of the scalp) is centred on the world origin; ``axial_offset_mm`` shifts which axial level
of the head lies at world z = 0 (use it to cut different slices with a single-slice grid).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..physics.geometry import ImageGeometry
from .brain import (
    FDG_ACTIVITY,
    FDG_COLD_LESION,
    FDG_HOT_LESION,
    MU_PER_MM,
    T1_VALUE,
    BrainPhantom,
    Tissue,
    image_points_mm,
    mix_tissues,
    resample_volume,
    sample_volume,
)

__all__ = [
    "ACTIVITY_SCALE_RANGE",
    "DEFORMATION_SPACING_MM",
    "LESION_RADIUS_MM_RANGE",
    "MAX_LESIONS",
    "MAX_ROTATION_DEG",
    "MAX_TILT_DEG",
    "MNI152_FILES",
    "mni152_brain_phantom",
    "mni152_template_dir",
    "mni152_tissue_fractions",
]

MNI152_FILES: dict[str, str] = {
    "grey_matter": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "white_matter": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
}
MAX_ROTATION_DEG = 10.0
MAX_TILT_DEG = 3.0
DEFORMATION_SPACING_MM = 30.0
ACTIVITY_SCALE_RANGE = (0.8, 1.2)
MAX_LESIONS = 3
LESION_RADIUS_MM_RANGE = (3.0, 8.0)

_BRAIN_MASK_THRESHOLD = 0.2  # nilearn.datasets.load_mni152_brain_mask default
_CLOSING_SIGMA_MM = 3.0
_LESION_EDGE_MM = 1.0
_LESION_SITE_MIN_BRAIN = 0.9
_DEFORMATION_HALF_EXTENT_MM = 150.0
_DEFORMATION_GRID_MM = 6.0
_TISSUES = (Tissue.CSF, Tissue.GREY_MATTER, Tissue.WHITE_MATTER, Tissue.SKULL, Tissue.SKIN)


def mni152_template_dir() -> Path:
    """Folder of the MNI152 files inside the installed nilearn package (found without importing nilearn)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the MNI152 templates come with the nilearn package, which is not installed: `pip install nilearn`"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [str(folder / name) for name in MNI152_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"MNI152 template files missing from the nilearn installation: {missing}")
    return folder


@dataclass(frozen=True)
class _Template:
    fractions: dict[Tissue, np.ndarray]  # (z, y, x) float32 each
    t1: np.ndarray
    voxel_size_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]  # chosen so that the head's bounding-box centre is at 0


def _load_zyx(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import nibabel as nib

    img = nib.load(path)
    affine = np.asarray(img.affine, dtype=np.float64)
    diag = np.diag(affine)[:3]
    if not (np.allclose(affine[:3, :3], np.diag(diag)) and (diag > 0).all()):
        raise ValueError(f"{path}: expected a diagonal RAS affine with positive voxel sizes, got {affine.tolist()}")
    data = np.asarray(img.dataobj, dtype=np.float32)
    data = data / max(float(data.max()), 1e-12)  # nilearn's rescaling to [0, 1]
    zyx = np.ascontiguousarray(data.transpose(2, 1, 0)[:, ::-1, :])
    return zyx, (float(diag[2]), float(diag[1]), float(diag[0]))


def _block2(volume: np.ndarray) -> np.ndarray:
    pad = [(0, n % 2) for n in volume.shape]
    v = np.pad(volume, pad)
    nz, ny, nx = v.shape
    return v.reshape(nz // 2, 2, ny // 2, 2, nx // 2, 2).mean(axis=(1, 3, 5), dtype=np.float32)


@functools.lru_cache(maxsize=2)
def _template(resolution_mm: int, skull_thickness_mm: float, scalp_thickness_mm: float) -> _Template:
    folder = mni152_template_dir()
    gm, voxel = _load_zyx(folder / MNI152_FILES["grey_matter"])
    wm, _ = _load_zyx(folder / MNI152_FILES["white_matter"])
    t1, _ = _load_zyx(folder / MNI152_FILES["t1"])
    if resolution_mm == 2:
        gm, wm, t1 = _block2(gm), _block2(wm), _block2(t1)
        voxel = tuple(2 * v for v in voxel)
    total = gm + wm
    over = np.maximum(total, 1.0)
    gm, wm = gm / over, wm / over
    # pad so that the skull and scalp shells fit around the brain (also below the cut at the brainstem)
    margin = [math.ceil((skull_thickness_mm + scalp_thickness_mm) / v) + 2 for v in voxel]
    pad = [(m, m) for m in margin]
    gm, wm, t1 = np.pad(gm, pad), np.pad(wm, pad), np.pad(t1, pad)
    mask = t1 > _BRAIN_MASK_THRESHOLD
    smooth = ndimage.gaussian_filter(mask.astype(np.float32), [_CLOSING_SIGMA_MM / v for v in voxel])
    intracranial = ndimage.binary_fill_holes((smooth > 0.5) | mask)
    gm, wm = gm * intracranial, wm * intracranial
    distance = ndimage.distance_transform_edt(~intracranial, sampling=voxel)
    skull = (distance > 0) & (distance <= skull_thickness_mm)
    skin = (distance > skull_thickness_mm) & (distance <= skull_thickness_mm + scalp_thickness_mm)
    csf = np.clip(intracranial - gm - wm, 0.0, 1.0)
    pure_wm = wm > 0.9
    wm_t1 = float(np.median(t1[pure_wm])) if pure_wm.any() else 1.0
    t1_image = intracranial * t1 * (T1_VALUE[Tissue.WHITE_MATTER] / wm_t1)
    t1_image = t1_image + skull * T1_VALUE[Tissue.SKULL] + skin * T1_VALUE[Tissue.SKIN]
    head = intracranial | skull | skin
    centre = []
    for axis in range(3):
        idx = np.flatnonzero(head.any(axis=tuple(a for a in range(3) if a != axis)))
        centre.append((idx[0] + idx[-1]) / 2 * voxel[axis])
    fractions = {
        Tissue.CSF: csf.astype(np.float32),
        Tissue.GREY_MATTER: gm.astype(np.float32),
        Tissue.WHITE_MATTER: wm.astype(np.float32),
        Tissue.SKULL: skull.astype(np.float32),
        Tissue.SKIN: skin.astype(np.float32),
    }
    t1_image = t1_image.astype(np.float32)
    for array in (*fractions.values(), t1_image):
        array.setflags(write=False)
    return _Template(
        fractions=fractions,
        t1=t1_image,
        voxel_size_mm=voxel,  # type: ignore[arg-type]
        origin_mm=tuple(-float(c) for c in centre),  # type: ignore[arg-type]
    )


def _rotation_matrix(yaw_deg: float, tilt_y_deg: float, tilt_x_deg: float) -> np.ndarray:
    """3×3 rotation acting on (z, y, x) vectors: in-plane yaw (from +x towards +y), then the two tilts."""
    a, b, c = (math.radians(v) for v in (yaw_deg, tilt_y_deg, tilt_x_deg))
    yaw = np.array([[1, 0, 0], [0, math.cos(a), math.sin(a)], [0, -math.sin(a), math.cos(a)]])
    about_y = np.array([[math.cos(b), 0, -math.sin(b)], [0, 1, 0], [math.sin(b), 0, math.cos(b)]])
    about_x = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return yaw @ about_y @ about_x


@dataclass(frozen=True)
class _Variation:
    rotation_deg: tuple[float, float, float]
    control_displacements_mm: np.ndarray  # (3, n, n, n)
    activity_scale: float
    num_lesions: int
    lesion_rng: np.random.Generator


def _draw_variation(
    seed: int, *, rotation_deg: float | None, deformation_mm: float, num_lesions: int | None
) -> _Variation:
    rng = np.random.default_rng(seed)
    angles = (
        float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
        float(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG)),
        float(rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG)),
    )
    if rotation_deg is not None:
        angles = (float(rotation_deg), 0.0, 0.0)
    n_ctrl = round(2 * _DEFORMATION_HALF_EXTENT_MM / DEFORMATION_SPACING_MM) + 1
    control = rng.standard_normal((3, n_ctrl, n_ctrl, n_ctrl)) * deformation_mm
    scale = float(rng.uniform(*ACTIVITY_SCALE_RANGE))
    drawn_lesions = int(rng.integers(0, MAX_LESIONS + 1))
    return _Variation(
        rotation_deg=angles,
        control_displacements_mm=control,
        activity_scale=scale,
        num_lesions=drawn_lesions if num_lesions is None else num_lesions,
        lesion_rng=rng,
    )


def _displacement_mm(control: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Cubic-spline displacement field (3, ...) at ``points`` (3, ...), via a 6 mm intermediate grid."""
    if not control.any():
        return np.zeros_like(points)
    half = _DEFORMATION_HALF_EXTENT_MM
    n_fine = round(2 * half / _DEFORMATION_GRID_MM) + 1
    fine_axis = np.linspace(0.0, control.shape[1] - 1, n_fine)
    grid = np.meshgrid(fine_axis, fine_axis, fine_axis, indexing="ij")
    out = np.empty_like(points)
    for k in range(3):
        fine = ndimage.map_coordinates(control[k], grid, order=3, mode="nearest")
        out[k] = sample_volume(
            fine, points, voxel_size_mm=(_DEFORMATION_GRID_MM,) * 3, origin_mm=(-half,) * 3, order=1
        )
    return out


def _check_options(
    image: ImageGeometry, seed: int, rotation_deg: float | None, num_lesions: int | None, axial_offset_mm: float,
    deformation_mm: float, template_resolution_mm: int, skull_thickness_mm: float, scalp_thickness_mm: float,
) -> None:
    if not isinstance(image, ImageGeometry):
        raise TypeError(f"image must be an ImageGeometry, got {type(image).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if rotation_deg is not None and (
        isinstance(rotation_deg, bool) or not isinstance(rotation_deg, int | float) or not math.isfinite(rotation_deg)
    ):
        raise ValueError(f"rotation_deg must be None or a finite number of degrees, got {rotation_deg!r}")
    if num_lesions is not None and (
        isinstance(num_lesions, bool) or not isinstance(num_lesions, int) or not 0 <= num_lesions <= MAX_LESIONS
    ):
        raise ValueError(f"num_lesions must be None or an int in [0, {MAX_LESIONS}], got {num_lesions!r}")
    for name, value, low in (
        ("axial_offset_mm", axial_offset_mm, -math.inf),
        ("deformation_mm", deformation_mm, 0.0),
        ("skull_thickness_mm", skull_thickness_mm, 1e-9),
        ("scalp_thickness_mm", scalp_thickness_mm, 1e-9),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low:
            bound = "any finite number" if low == -math.inf else ("a finite number >= 0" if low == 0 else "> 0")
            raise ValueError(f"{name} must be {bound} (mm), got {value!r}")
    if template_resolution_mm not in (1, 2) or isinstance(template_resolution_mm, bool):
        raise ValueError(f"template_resolution_mm must be 1 or 2, got {template_resolution_mm!r}")


def _sample(
    *, image: ImageGeometry, seed: int, rotation_deg: float | None, num_lesions: int | None, axial_offset_mm: float,
    deformation_mm: float, template_resolution_mm: int, skull_thickness_mm: float, scalp_thickness_mm: float,
) -> tuple[dict[Tissue, np.ndarray], np.ndarray, np.ndarray, _Variation]:
    """Fractions and T1 on the grid, the template-space coordinates of each target voxel, and the drawn variation."""
    _check_options(
        image, seed, rotation_deg, num_lesions, axial_offset_mm, deformation_mm, template_resolution_mm,
        skull_thickness_mm, scalp_thickness_mm,
    )
    template = _template(int(template_resolution_mm), float(skull_thickness_mm), float(scalp_thickness_mm))
    variation = _draw_variation(
        int(seed), rotation_deg=rotation_deg, deformation_mm=float(deformation_mm), num_lesions=num_lesions
    )
    points = image_points_mm(image)
    points[0] += axial_offset_mm
    rotation = _rotation_matrix(*variation.rotation_deg)
    # subject point p ↦ template point q = R⁻¹ p + d(p)  (R orthogonal: R⁻¹ = Rᵀ)
    source = np.einsum("ji,j...->i...", rotation, points) + _displacement_mm(variation.control_displacements_mm, points)
    common = {
        "voxel_size_mm": template.voxel_size_mm,
        "origin_mm": template.origin_mm,
        "target_voxel_mm": image.voxel_size_mm,
    }
    fractions = {t: resample_volume(f, source, **common) for t, f in template.fractions.items()}
    t1 = resample_volume(template.t1, source, **common)
    return fractions, t1, source, variation


def mni152_tissue_fractions(
    *,
    image: ImageGeometry,
    seed: int,
    rotation_deg: float | None = None,
    axial_offset_mm: float = 0.0,
    deformation_mm: float = 2.0,
    template_resolution_mm: int = 2,
    skull_thickness_mm: float = 6.0,
    scalp_thickness_mm: float = 5.0,
) -> dict[Tissue, np.ndarray]:
    """Tissue fractions (CSF, grey, white, skull, skin) of the seeded MNI152 head on ``image``.

    Returns ``{Tissue: float32 array of shape image.shape}``, the same anatomy as :func:`mni152_brain_phantom` with
    the same arguments (lesions change activity only, not fractions).
    """
    fractions, _, _, _ = _sample(
        image=image, seed=seed, rotation_deg=rotation_deg, num_lesions=0, axial_offset_mm=axial_offset_mm,
        deformation_mm=deformation_mm, template_resolution_mm=template_resolution_mm,
        skull_thickness_mm=skull_thickness_mm, scalp_thickness_mm=scalp_thickness_mm,
    )
    return fractions


def mni152_brain_phantom(
    *,
    image: ImageGeometry,
    seed: int,
    rotation_deg: float | None = None,
    num_lesions: int | None = None,
    axial_offset_mm: float = 0.0,
    deformation_mm: float = 2.0,
    template_resolution_mm: int = 2,
    skull_thickness_mm: float = 6.0,
    scalp_thickness_mm: float = 5.0,
) -> BrainPhantom:
    """Seeded FDG brain phantom (activity, μ-map, T1) from the packaged MNI152 templates on ``image``.

    Args:
        image: target grid (z, y, x) in mm, e.g. ``preset("mmr_2d").image`` (1 × 172 × 172).
        seed: non-negative int; all per-seed variation comes from ``numpy.random.default_rng(seed)``.
        rotation_deg: None = random small rotation; a number = in-plane rotation by exactly that angle, no tilt.
        num_lesions: None = random 0 … 3; else exactly that many (0 … 3).
        axial_offset_mm: the head's axial level (mm above its bounding-box centre) placed at world z = 0.
        deformation_mm: standard deviation of the elastic control-point displacements (0 = none).
        template_resolution_mm: 2 (fast, default) or 1 (the native template, for fine target grids).
        skull_thickness_mm, scalp_thickness_mm: shells around the intracranial region.

    Returns:
        :class:`BrainPhantom` with float32 tensors of ``image.shape``; activity ≥ 0 in relative units
        (scale factor × (grey 4, white 1, scalp 0.5, CSF/bone 0)), μ in 1/mm.  The description lists the drawn
        rotation, scale and lesions.
    """
    fractions, t1, source, variation = _sample(
        image=image, seed=seed, rotation_deg=rotation_deg, num_lesions=num_lesions, axial_offset_mm=axial_offset_mm,
        deformation_mm=deformation_mm, template_resolution_mm=template_resolution_mm,
        skull_thickness_mm=skull_thickness_mm, scalp_thickness_mm=scalp_thickness_mm,
    )
    gm, wm = fractions[Tissue.GREY_MATTER].astype(np.float64), fractions[Tissue.WHITE_MATTER].astype(np.float64)
    brain_fraction = gm + wm
    brain_activity = FDG_ACTIVITY[Tissue.GREY_MATTER] * gm + FDG_ACTIVITY[Tissue.WHITE_MATTER] * wm
    others = {t: f for t, f in fractions.items() if t not in (Tissue.GREY_MATTER, Tissue.WHITE_MATTER)}
    lesions = []
    sites = np.flatnonzero(brain_fraction.ravel() >= _LESION_SITE_MIN_BRAIN)
    rng = variation.lesion_rng
    for _ in range(variation.num_lesions if sites.size else 0):
        radius = float(rng.uniform(*LESION_RADIUS_MM_RANGE))
        hot = bool(rng.random() < 0.5)
        centre = source.reshape(3, -1)[:, sites[int(rng.integers(sites.size))]]
        value = FDG_HOT_LESION if hot else FDG_COLD_LESION
        distance = np.sqrt(sum((source[k] - centre[k]) ** 2 for k in range(3)))
        weight = np.clip((radius + _LESION_EDGE_MM / 2 - distance) / _LESION_EDGE_MM, 0.0, 1.0)
        brain_activity = (1 - weight) * brain_activity + weight * value * brain_fraction
        lesions.append(f"{'hot' if hot else 'cold'} r={radius:.1f}mm at head-frame {np.round(centre, 1).tolist()} mm")
    activity = variation.activity_scale * (brain_activity + mix_tissues(others, FDG_ACTIVITY))
    yaw, tilt_y, tilt_x = variation.rotation_deg
    description = (
        f"MNI152 (nilearn ICBM152 2009a sym) FDG phantom, seed {int(seed)}: rotation yaw {yaw:.2f} deg, tilts "
        f"{tilt_y:.2f}/{tilt_x:.2f} deg, deformation sd {float(deformation_mm):g} mm, activity scale "
        f"{variation.activity_scale:.3f}, axial offset {float(axial_offset_mm):g} mm, lesions: "
        f"{'; '.join(lesions) if lesions else 'none'}; grid {image.shape} at {image.voxel_size_mm} mm"
    )
    return BrainPhantom.from_arrays(
        activity=activity,
        mu_map_per_mm=mix_tissues(fractions, MU_PER_MM),
        t1=t1,
        image=image,
        description=description,
    )
