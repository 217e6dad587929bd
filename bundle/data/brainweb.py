"""The 20 BrainWeb normal-brain anatomical models, read from the cache of the ``brainweb`` package; never downloads.

On-disk format (as written by ``brainweb.get_files()`` of the ``brainweb`` PyPI package, github.com/casperdcl/brainweb,
``brainweb/utils.py``: ``LINKS``, ``get_file``, ``load_file``, ``Act``, ``Res``):

* folder: ``~/.brainweb`` (the package's default ``cache_dir``; it falls back to ``/tmp/.brainweb`` when the home
  folder is not writable).  Here the folder is ``cache_dir`` if given, else ``$BRAINWEB_DIR``, else ``~/.brainweb``.
* one file per subject, ``subject_NN.bin.gz`` for NN in 04 05 06 18 20 38 41 … 54: the BrainWeb "subjectNN_crisp"
  download (``format_value=raw_short``, ``zip_value=gnuzip``) stored as is, i.e. a gzip stream of raw unsigned
  16-bit integers (read by the package as native ``uint16``, little-endian on every platform it runs on),
  362 × 434 × 362 = 56 876 296 values (113 752 592 bytes uncompressed), C order, axes (z, y, x), 0.5 mm isotropic.
* each value is ``label << 4`` for the 12 tissue classes of :class:`bundle.data.brain.Tissue` (the package compares
  with ``i << 4``; its comment warns that other, lower bits are occasionally set).  We take ``label = value >> 4``,
  which ignores those low bits, and reject labels > 11 as corrupt data.

Orientation: the raw y axis runs posterior → anterior; like the package's own mMR-grid images (``[:, ::-1]`` in
``get_mmr``) we flip axis 1, so arrays here are (z inferior → superior, y anterior → posterior, x as stored).  The
volume is centred on the world origin (the package pads it symmetrically into the mMR grid).

Resampling (:func:`brainweb_phantom`): by default per-tissue partial-volume fractions (each tissue's indicator
averaged over blocks of ⌊target/0.5 mm⌋ voxels, then trilinear interpolation at the target voxel centres), mixed
with the tissue tables of :mod:`bundle.data.brain`; this is what the package does with ``skimage.transform.resize``
(order 1) on its value images.  ``resampling="nearest"`` takes the nearest label instead (pure tissue values only).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from enum import StrEnum
from pathlib import Path

import numpy as np

from ..physics.geometry import ImageGeometry, preset
from .brain import (
    FDG_ACTIVITY,
    MU_PER_MM,
    NUM_TISSUES,
    T1_VALUE,
    BrainPhantom,
    Tissue,
    image_points_mm,
    mix_tissues,
    resample_volume,
)

__all__ = [
    "BRAINWEB_DTYPE",
    "BRAINWEB_SHAPE",
    "BRAINWEB_SUBJECTS",
    "BRAINWEB_VOXEL_SIZE_MM",
    "LabelResampling",
    "brainweb_cache_dir",
    "brainweb_file",
    "brainweb_phantom",
    "brainweb_tissue_fractions",
    "load_brainweb_labels",
]

#: the 20 normal-brain subjects of BrainWeb (ids as in the file names ``subject_NN.bin.gz``)
BRAINWEB_SUBJECTS: tuple[int, ...] = (4, 5, 6, 18, 20, 38, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54)
#: (z, y, x) voxels of the raw crisp label volumes
BRAINWEB_SHAPE: tuple[int, int, int] = (362, 434, 362)
#: (z, y, x) voxel size of the raw volumes in mm
BRAINWEB_VOXEL_SIZE_MM: tuple[float, float, float] = (0.5, 0.5, 0.5)
#: raw sample type inside the gzip stream
BRAINWEB_DTYPE = np.dtype("<u2")

_ENV_VAR = "BRAINWEB_DIR"


class LabelResampling(StrEnum):
    """How crisp labels reach the target grid."""

    FRACTIONS = "fractions"  # per-tissue partial-volume fractions (block average + trilinear)
    NEAREST = "nearest"  # nearest-neighbour label


def brainweb_cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``subject_NN.bin.gz``: ``path`` if given, else ``$BRAINWEB_DIR``, else ``~/.brainweb``.

    Nothing is created or checked here.
    """
    if path is None:
        env = os.environ.get(_ENV_VAR)
        return Path(env).expanduser() if env else Path.home() / ".brainweb"
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str, os.PathLike or None, got {type(path).__name__}")
    return Path(path).expanduser()


def _subject_id(subject: int | str) -> int:
    if isinstance(subject, bool) or not isinstance(subject, int | str):
        raise TypeError(f"subject must be an int or a digit string such as '04', got {type(subject).__name__}")
    if isinstance(subject, str):
        if not subject.strip().isdigit():
            raise ValueError(f"subject must be one of {BRAINWEB_SUBJECTS} (or its 2-digit string), got {subject!r}")
        subject = int(subject)
    if subject not in BRAINWEB_SUBJECTS:
        raise ValueError(f"subject must be one of {BRAINWEB_SUBJECTS}, got {subject!r}")
    return subject


def brainweb_file(subject: int | str, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Expected path ``<cache_dir>/subject_NN.bin.gz`` of one subject (existence not checked)."""
    return brainweb_cache_dir(cache_dir) / f"subject_{_subject_id(subject):02d}.bin.gz"


def _missing_message(path: Path) -> str:
    return (
        f"BrainWeb file not found: {path} (expected one gzip file per subject, subject_NN.bin.gz for NN in "
        f"{', '.join(f'{s:02d}' for s in BRAINWEB_SUBJECTS)}, in {path.parent}).  Nothing is downloaded here.  "
        f"To obtain the files, on a machine with internet access run `pip install brainweb` and then "
        f"`python -c \"import brainweb; brainweb.get_files()\"` (writes them to ~/.brainweb), and copy them into "
        f"{path.parent} (or point cache_dir / ${_ENV_VAR} at the folder that holds them)."
    )


def load_brainweb_labels(
    subject: int | str, *, cache_dir: str | os.PathLike[str] | None = None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Crisp tissue labels of one subject.

    Returns:
        ``(labels, voxel_size_mm)``: labels is a uint8 array of shape :data:`BRAINWEB_SHAPE` (z, y, x) with values
        in 0 … 11 (:class:`bundle.data.brain.Tissue`), axis 1 flipped to anterior → posterior (module docstring);
        voxel_size_mm is :data:`BRAINWEB_VOXEL_SIZE_MM`.

    Raises:
        FileNotFoundError: the file is not in the cache folder (the message says how to get it).
        ValueError: the file is not a complete gzip stream of the expected byte size, or holds labels > 11.
    """
    path = brainweb_file(subject, cache_dir=cache_dir)
    if not path.is_file():
        raise FileNotFoundError(_missing_message(path))
    shape = tuple(int(n) for n in BRAINWEB_SHAPE)
    expected = math.prod(shape) * BRAINWEB_DTYPE.itemsize
    try:
        with gzip.open(path, "rb") as stream:
            raw_bytes = stream.read(expected + 1)
            # read to the end so that a truncated or corrupt tail is noticed (gzip checks CRC and length there)
            extra = len(raw_bytes) > expected or bool(stream.read(1))
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(
            f"BrainWeb file {path} is not a complete gzip stream ({err}); expected gzip-compressed raw "
            f"{BRAINWEB_DTYPE} of shape {shape} = {expected} bytes uncompressed.  Replace the file."
        ) from err
    if len(raw_bytes) != expected or extra:
        got = f"more than {expected}" if extra else str(len(raw_bytes))
        raise ValueError(
            f"BrainWeb file {path} holds {got} bytes uncompressed; expected {expected} bytes "
            f"({BRAINWEB_DTYPE} of shape {shape}).  The file is truncated or not a BrainWeb crisp volume."
        )
    labels = np.frombuffer(raw_bytes, dtype=BRAINWEB_DTYPE).reshape(shape) >> 4
    top = int(labels.max())
    if top >= NUM_TISSUES:
        raise ValueError(
            f"BrainWeb file {path} holds label {top} (value >> 4); expected labels 0 … {NUM_TISSUES - 1}.  "
            "The file is corrupt or not a BrainWeb crisp volume."
        )
    labels = np.ascontiguousarray(labels[:, ::-1].astype(np.uint8))
    return labels, tuple(float(v) for v in BRAINWEB_VOXEL_SIZE_MM)  # type: ignore[return-value]


def _rotated_points(image: ImageGeometry, rotation_deg: float) -> np.ndarray:
    """Target voxel centres mapped into the (centred) source frame by the inverse in-plane rotation."""
    points = image_points_mm(image)
    if rotation_deg == 0.0:
        return points
    theta = math.radians(rotation_deg)
    c, s = math.cos(theta), math.sin(theta)
    z, y, x = points
    # the object turns by +theta from +x towards +y, so sample the source at R(-theta) p
    return np.stack([z, c * y - s * x, s * y + c * x])


def _check_inputs(image: ImageGeometry | None, rotation_deg: float, resampling: str) -> tuple[ImageGeometry, str]:
    image = preset("mmr").image if image is None else image
    if not isinstance(image, ImageGeometry):
        raise TypeError(f"image must be an ImageGeometry or None, got {type(image).__name__}")
    if isinstance(rotation_deg, bool) or not isinstance(rotation_deg, int | float) or not math.isfinite(rotation_deg):
        raise ValueError(f"rotation_deg must be a finite number of degrees, got {rotation_deg!r}")
    try:
        mode = LabelResampling(resampling)
    except ValueError as err:
        raise ValueError(f"resampling must be one of {[m.value for m in LabelResampling]}, got {resampling!r}") from err
    return image, mode


def brainweb_tissue_fractions(
    subject: int | str,
    *,
    image: ImageGeometry | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    rotation_deg: float = 0.0,
    resampling: str = LabelResampling.FRACTIONS,
) -> dict[Tissue, np.ndarray]:
    """Per-tissue fractions of one subject on ``image`` (default: the mMR grid 127 × 344 × 344).

    Returns a dict ``{Tissue: float32 array of shape image.shape}`` for the tissues present; the fractions of a
    voxel sum to ≤ 1 (the rest is outside the BrainWeb volume).  ``rotation_deg`` turns the head about the axial
    axis through the world origin (from +x towards +y).  See the module docstring for the resampling.
    """
    image, mode = _check_inputs(image, rotation_deg, resampling)
    labels, voxel = load_brainweb_labels(subject, cache_dir=cache_dir)
    origin = tuple(-(n - 1) / 2 * v for n, v in zip(labels.shape, voxel, strict=True))
    points = _rotated_points(image, float(rotation_deg))
    if mode is LabelResampling.NEAREST:
        nearest = resample_volume(
            labels, points, voxel_size_mm=voxel, origin_mm=origin, target_voxel_mm=image.voxel_size_mm, order=0
        )
        return {Tissue(t): (nearest == t).astype(np.float32) for t in np.unique(nearest)}
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=NUM_TISSUES))
    return {
        Tissue(t): resample_volume(
            labels == t, points, voxel_size_mm=voxel, origin_mm=origin, target_voxel_mm=image.voxel_size_mm
        )
        for t in present
    }


def brainweb_phantom(
    subject: int | str,
    *,
    image: ImageGeometry | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    rotation_deg: float = 0.0,
    resampling: str = LabelResampling.FRACTIONS,
) -> BrainPhantom:
    """FDG activity, μ-map and T1 of one BrainWeb subject on ``image`` (default: mMR grid, 127 × 344 × 344 voxels
    of 2.031 × 2.086 × 2.086 mm), built from :func:`brainweb_tissue_fractions` and the tables of
    :mod:`bundle.data.brain` (activity relative to white matter = 1; μ in 1/mm).  No noise or lesions are added.

    Raises FileNotFoundError (file not cached, with instructions) and ValueError (corrupt file, bad arguments).
    """
    image, mode = _check_inputs(image, rotation_deg, resampling)
    fractions = brainweb_tissue_fractions(
        subject, image=image, cache_dir=cache_dir, rotation_deg=rotation_deg, resampling=mode
    )
    subject_id = _subject_id(subject)
    description = (
        f"BrainWeb subject {subject_id:02d} (crisp labels, brainweb FDG/Mu/T1 tables), {mode.value} resampling to "
        f"{image.shape} voxels of {image.voxel_size_mm} mm, in-plane rotation {float(rotation_deg):g} deg"
    )
    return BrainPhantom.from_arrays(
        activity=mix_tissues(fractions, FDG_ACTIVITY),
        mu_map_per_mm=mix_tissues(fractions, MU_PER_MM),
        t1=mix_tissues(fractions, T1_VALUE),
        image=image,
        description=description,
    )
