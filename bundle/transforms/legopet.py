"""MONAI dictionary transforms of the LegoPET workflows (sinogram → 2D PET, docs/data.md "legopet").

A legopet sample holds ``sinogram.npy`` (1, 252, 172) counts (plane, view, radial) and single-slice NIfTI images
(``reference``, ``osem``, ``activity``) of (1, 172, 172) in (z, y, x).  The training / inference pipelines are::

    LoadSinogramd(sinogram)          (1, views, radial) float32 counts, channel-first (the plane is the channel)
    LoadImageZYXd(reference)         (1, H, W) float32 activity (the single slice is the channel)
    ToNetworkUnitsd(sinogram)        s' = s / k_s
    ToNetworkUnitsd(reference)       x' = x / k_x
    PadToSquared([...], size=256)    centred zero padding of both to 256 × 256 (METHODS.md, LegoPET data)

and after sampling ``FromNetworkUnitsd`` (x = x' · k_x) and :class:`SaveImageZYXd` write the 172 × 172
prediction (the crop back is :func:`padding_offsets`, shared with ``LegoPETInferer(crop=...)``).

Intensity scaling (:mod:`bundle.transforms.scaling`, ``statistic="fixed"``, ``arithmetic="input"``, one scaling per
modality) with the dataset-level scales of this module:

* counts: ``k_s`` = the measured count level per sinogram bin read from the manifest
  (:func:`manifest_counts_per_bin`: ``measured_counts / (views · radial)``), so s' has mean ≈ 1 and keeps
  the absolute count level (``statistic="mean"`` uses the sample's own mean count instead).
* images: ``k_x = scale / c`` with ``scale`` a dataset-level constant (:func:`reference_max`: the maximum over the
  training references, in the same units) and ``c`` the sample's ``count_scale`` from the datalist (counts per
  activity unit of the simulation) when ``count_scale_key`` is set, so that x' = c·x / scale is in expected-count
  units consistent with the (fixed-total) sinogram: without it, a global activity scale of the phantom could not
  be recovered from a sinogram whose total count is fixed.  ``count_scale_key=None`` gives plain x / scale.
  Dividing by the reference's own maximum is not offered: the reference is unknown at inference.

Importing this module runs nothing.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform

from bundle._checks import check_int, check_positive
from bundle.data.io import load_image, load_sinogram, save_image
from bundle.keys import Keys
from bundle.physics import ImageGeometry

__all__ = [
    "CropFromSquared",
    "LoadImageZYXd",
    "LoadSinogramd",
    "PadToSquared",
    "PaddingBox",
    "SaveImageZYXd",
    "crop_box",
    "manifest_counts_per_bin",
    "padding_offsets",
    "reference_max",
    "reference_moments",
]


# ---------------------------------------------------------------------------------------------------- helpers
class PaddingBox(NamedTuple):
    """Where an unpadded ``(height, width)`` image sits in the padded square: rows ``top:top+height``,
    columns ``left:left+width``.  It is the ``crop`` argument of :class:`bundle.inferers.LegoPETInferer`."""

    top: int
    left: int
    height: int
    width: int


def padding_offsets(shape: Sequence[int], size: int) -> PaddingBox:
    """Centred placement of an image of ``shape = (height, width)`` in a ``size × size`` square.

    ``top = (size - height) // 2`` and ``left = (size - width) // 2``; an odd remainder puts the extra zero row
    (column) after the image.  E.g. (172, 172) in 256 → (42, 42, 172, 172); (252, 172) in 256 → (2, 42, 252, 172).

    Raises:
        TypeError: an entry of ``shape`` or ``size`` is not an int.
        ValueError: ``shape`` is not two positive ints or does not fit in ``size``.
    """
    if isinstance(shape, str | bytes) or not isinstance(shape, Sequence | torch.Size) or len(shape) != 2:
        raise ValueError(f"shape must be (height, width), got {shape!r}")
    height, width = (check_int(s, "shape entries", minimum=1) for s in shape)
    size = check_int(size, "size", minimum=1)
    if height > size or width > size:
        raise ValueError(f"an image of shape ({height}, {width}) does not fit in a {size} × {size} square")
    return PaddingBox((size - height) // 2, (size - width) // 2, height, width)


def crop_box(image: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """``image[..., top:top+height, left:left+width]`` for ``box = (top, left, height, width)``."""
    top, left, height, width = (int(b) for b in box)
    h, w = image.shape[-2:]
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(f"box {tuple(int(b) for b in box)} does not fit the image grid ({h}, {w})")
    return image[..., top : top + height, left : left + width]


def _check_channel_first_2d(x: object, key: Hashable) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{key!r} must be a torch.Tensor (load it first), got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{key!r} must have shape (C, H, W), got {tuple(x.shape)}")
    return x


# ---------------------------------------------------------------------------------------------------- dataset scales
@functools.cache
def _manifest(dataset_dir: str) -> dict:
    from bundle.data.manifest import read_manifest

    return read_manifest(dataset_dir, "legopet")


def manifest_counts_per_bin(dataset_dir: str | Path) -> float:
    """Dataset-level count scale ``measured_counts / (views · radial)`` from ``manifest.json`` (the mean measured
    count per sinogram bin; 3e5 / (252 · 172) ≈ 6.92 for the legopet presets)."""
    manifest = _manifest(str(dataset_dir))
    try:
        counts = float(manifest["config"]["measured_counts"])
        _, views, radial = manifest["sinogram_layout"]["shape_planes_views_radial"]
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{dataset_dir}/manifest.json has no legopet config.measured_counts / sinogram_layout ({error!r})"
        ) from error
    return check_positive(counts / (int(views) * int(radial)), "measured counts per bin")


@functools.cache
def _reference_max(dataset_dir: str, split: str, key: str, count_scale_key: str | None) -> float:
    path = Path(dataset_dir) / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the dataset first")
    entries = json.loads(path.read_text(encoding="utf-8")).get(split) or []
    if not entries:
        raise ValueError(f"{path} has no {split!r} entries to compute the image scale from")
    peak = 0.0
    for entry in entries:
        image, _ = load_image(Path(dataset_dir) / entry[key])
        c = 1.0 if count_scale_key is None else check_positive(entry[count_scale_key], count_scale_key)
        peak = max(peak, float(image.max()) * c)
    return check_positive(peak, f"maximum of the {split} {key} images")


def reference_max(
    dataset_dir: str | Path,
    *,
    split: str = "training",
    key: str = Keys.REFERENCE,
    count_scale_key: str | None = Keys.COUNT_SCALE,
) -> float:
    """Dataset-level image scale: ``max`` over the ``split`` entries of ``max(image) · c`` (``c`` = the entry's
    ``count_scale_key`` value, 1 when ``None``); cached per arguments, reads every image of the split once."""
    count_key = None if count_scale_key is None else str(count_scale_key)
    return _reference_max(str(dataset_dir), str(split), str(key), count_key)


def reference_moments(
    dataset_dir: str | Path,
    *,
    split: str = "training",
    key: str = Keys.REFERENCE,
    count_scale_key: str | None = Keys.COUNT_SCALE,
) -> tuple[float, float]:
    """(mean, std) over every pixel of the ``split`` references in network units, x' = image · c / ``reference_max``
    (unpadded): the numbers behind a diffusion model's :class:`~bundle.transforms.scaling.Standardisation`."""
    count_key = None if count_scale_key is None else str(count_scale_key)
    peak = _reference_max(str(dataset_dir), str(split), str(key), count_key)
    entries = json.loads((Path(dataset_dir) / "datalist.json").read_text(encoding="utf-8"))[split]
    total = total_sq = count = 0.0
    for entry in entries:
        image, _ = load_image(Path(dataset_dir) / entry[key])
        c = 1.0 if count_key is None else float(entry[count_key])
        x = np.asarray(image, dtype=np.float64) * c / peak
        total, total_sq, count = total + float(x.sum()), total_sq + float((x * x).sum()), count + x.size
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean * mean, 0.0))


# ---------------------------------------------------------------------------------------------------- loading
class LoadSinogramd(MapTransform):
    """Read a 2D sinogram ``.npy`` (``bundle.data.io.load_sinogram``) → ``(1, views, radial)`` float32.

    The single plane of the (plane, view, radial) file is the channel.  ``expected_shape`` = (views, radial)
    (e.g. (252, 172)) is checked when given.
    """

    def __init__(
        self, keys: KeysCollection, *, expected_shape: Sequence[int] | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if expected_shape is not None:
            expected_shape = tuple(check_int(s, "expected_shape entries", minimum=1) for s in expected_shape)
            if len(expected_shape) != 2:
                raise ValueError(f"expected_shape must be (views, radial), got {expected_shape}")
        self.expected_shape = expected_shape

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not isinstance(path, str | Path):
                raise TypeError(f"{key!r} must be a path to a .npy sinogram, got {type(path).__name__}")
            sinogram = load_sinogram(Path(path))
            if sinogram.ndim != 3 or sinogram.shape[0] != 1:
                raise ValueError(
                    f"{path}: a 2D (LegoPET) sinogram must have shape (1, views, radial), got {tuple(sinogram.shape)}"
                )
            if self.expected_shape is not None and tuple(sinogram.shape[1:]) != self.expected_shape:
                raise ValueError(
                    f"{path}: expected (views, radial) = {self.expected_shape}, got {tuple(sinogram.shape)}"
                )
            d[key] = sinogram.to(torch.float32)
        return d


class LoadImageZYXd(MapTransform):
    """Read a single-slice NIfTI (``bundle.data.io.load_image``, (z, y, x)) → ``(1, H, W)`` float32 (z = channel)."""

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            if not isinstance(path, str | Path):
                raise TypeError(f"{key!r} must be a path to a NIfTI image, got {type(path).__name__}")
            image, _ = load_image(Path(path))
            if image.shape[0] != 1:
                raise ValueError(
                    f"{path}: expected a single-slice image (1, H, W) in (z, y, x), got {tuple(image.shape)}"
                )
            d[key] = image.to(torch.float32)
        return d


class SaveImageZYXd(MapTransform):
    """Write ``(1, H, W)`` images as NIfTI (``bundle.data.io.save_image``) to ``output_dir/{name}_{key}.nii.gz``.

    Args (keyword-only after ``keys``):
        output_dir: folder, created when missing.
        geometry: the image geometry (shape must equal the image's, e.g. ``bundle.physics.preset("mmr_2d").image``).
        name_key: data key of the file name stem (the datalist ``id``).
    The written path is stored under ``f"{key}_path"``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        output_dir: str | Path,
        geometry: ImageGeometry,
        name_key: str = "id",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(geometry, ImageGeometry):
            raise TypeError(f"geometry must be an ImageGeometry, got {type(geometry).__name__}")
        self.output_dir = Path(output_dir)
        self.geometry = geometry
        self.name_key = name_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.name_key not in d:
            raise KeyError(f"no {self.name_key!r} entry to name the output file; keys: {sorted(map(str, d))}")
        for key in self.key_iterator(d):
            image = torch.as_tensor(_check_channel_first_2d(d[key], key)).detach().to("cpu", torch.float32)
            if tuple(image.shape) != tuple(self.geometry.shape):
                raise ValueError(f"{key!r} has shape {tuple(image.shape)}, the geometry {tuple(self.geometry.shape)}")
            path = self.output_dir / f"{d[self.name_key]}_{key}.nii.gz"
            save_image(path, image.as_subclass(torch.Tensor), self.geometry)
            d[f"{key}_path"] = str(path)
        return d


# ---------------------------------------------------------------------------------------------------- geometry
class PadToSquared(MapTransform):
    """Centred zero padding of ``(C, H, W)`` to ``(C, size, size)`` (:func:`padding_offsets`).

    The box of the original image is stored under ``f"{key}_padding"`` as an int64 tensor (top, left, height,
    width) so that :meth:`inverse` (and :func:`crop_box`) recover the input exactly.
    """

    def __init__(self, keys: KeysCollection, *, size: int = 256, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.size = check_int(size, "size", minimum=1)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = _check_channel_first_2d(d[key], key)
            try:
                box = padding_offsets(tuple(x.shape[-2:]), self.size)
            except ValueError as error:
                raise ValueError(f"{key!r}: {error}") from None
            pad = (box.left, self.size - box.width - box.left, box.top, self.size - box.height - box.top)
            d[key] = F.pad(x, pad)
            d[f"{key}_padding"] = torch.tensor(box, dtype=torch.int64)
        return d

    def inverse(self, data: Mapping[Hashable, object]) -> dict:
        """Crop every key back to its recorded box (one sample, not a batch)."""
        d = dict(data)
        for key in self.key_iterator(d):
            box_key = f"{key}_padding"
            if box_key not in d:
                raise KeyError(f"no {box_key!r} entry: {key!r} was not padded by PadToSquared")
            d[key] = crop_box(_check_channel_first_2d(d[key], key), torch.as_tensor(d.pop(box_key)).tolist())
        return d


class CropFromSquared(MapTransform):
    """Crop the centred ``shape = (height, width)`` box (:func:`padding_offsets`) out of square ``(C, S, S)`` images,
    e.g. predictions and labels on the padded grid back to 172 × 172 (metrics on the unpadded region)."""

    def __init__(self, keys: KeysCollection, *, shape: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        padding_offsets(shape, max(int(s) for s in shape))  # validates the shape
        self.shape = tuple(int(s) for s in shape)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = _check_channel_first_2d(d[key], key)
            if x.shape[-1] != x.shape[-2]:
                raise ValueError(f"{key!r} must be square (C, S, S), got {tuple(x.shape)}")
            try:
                d[key] = crop_box(x, padding_offsets(self.shape, x.shape[-1]))
            except ValueError as error:
                raise ValueError(f"{key!r}: {error}") from None
        return d
