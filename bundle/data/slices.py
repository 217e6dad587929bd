"""2D transverse training slices from 3D volumes, for the PET-DDS-δ score model.

A petdds dataset (``python -m bundle.data build petdds``) lists, per subject, the full-count reference volume
and the axial indices of the slices that contain the head (``training_slices``).  :func:`slice_datalist` expands
those into one datalist entry per slice; :class:`LoadVolumeSliced` loads the slice as (1, n_y, n_x), and
``ToNetworkUnitsd(statistic="positive_mean", arithmetic="input")`` (:mod:`bundle.transforms.scaling`) divides it by
its mean over positive voxels, the per-slice scale c_z that the PET-DDS-δ sampler uses at reconstruction
(:func:`bundle.transforms.scaling.slice_scale_from_volume`).  The paper's augmentation (multiply by U(0.5, 1.5))
is MONAI's ``RandScaleIntensityd(factors=0.5, prob=1.0)``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Mapping
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..keys import Keys
from .io import load_image
from .manifest import build_command, read_manifest

__all__ = ["LoadVolumeSliced", "slice_datalist"]


def slice_datalist(
    dataset_dir: str | Path, split: str, *, volume_key: str = Keys.REFERENCE, slices_key: str = "training_slices"
) -> list[dict]:
    """One entry ``{"image": absolute volume path, "slice_index": z, "subject": s}`` per listed slice of ``split``."""
    dataset_dir = Path(dataset_dir)
    read_manifest(dataset_dir, "petdds", required=False)
    path = dataset_dir / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the dataset: {build_command('petdds', dataset_dir)}")
    datalist = json.loads(path.read_text(encoding="utf-8"))
    if split not in datalist:
        raise ValueError(f"split must be one of {sorted(datalist)}, got {split!r}")
    entries = []
    for item in datalist[split]:
        for key in (volume_key, slices_key):
            if key not in item:
                raise ValueError(f"datalist entry {item.get('id', '?')} in {path} has no {key!r}")
        entries += [
            {"image": str(dataset_dir / item[volume_key]), Keys.SLICE: int(z), Keys.SUBJECT: item.get(Keys.SUBJECT)}
            for z in item[slices_key]
        ]
    if not entries:
        raise ValueError(f"split {split!r} of {path} holds no slices")
    return entries


@functools.lru_cache(maxsize=8)
def _volume(path: str) -> torch.Tensor:
    return load_image(Path(path))[0]


class LoadVolumeSliced(MapTransform):
    """Replace the volume path under each key by its axial slice ``data[slice_key]`` as a (1, n_y, n_x) tensor."""

    def __init__(self, keys: KeysCollection = "image", *, slice_key: str = Keys.SLICE) -> None:
        super().__init__(keys)
        self.slice_key = slice_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        z = int(d[self.slice_key])
        for key in self.key_iterator(d):
            volume = _volume(str(d[key]))
            if not 0 <= z < volume.shape[0]:
                raise ValueError(f"{self.slice_key}={z} is outside the {volume.shape[0]} slices of {d[key]}")
            d[key] = volume[z : z + 1].clone()
        return d
