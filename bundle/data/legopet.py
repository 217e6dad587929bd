"""Reader of a ``legopet`` dataset (``python -m bundle.data build legopet``) for evaluation: one
:class:`LegoPETSample` per slice with its network input prepared exactly as in training.

The network input is the measured sinogram s ``(1, views, radial)`` in network units (s / k_s,
k_s = :func:`~bundle.transforms.legopet.manifest_counts_per_bin`, :class:`~bundle.transforms.scaling.ToNetworkUnitsd`)
zero-padded to ``pad_size × pad_size`` (:class:`~bundle.transforms.legopet.PadToSquared`).  Predictions in network
units go back to activity units with x = x' · k_x, k_x = ``image_scale / c`` (``image_scale`` =
:func:`~bundle.transforms.legopet.reference_max`, c = the entry's ``count_scale``): :attr:`LegoPETSample.image_divisor`.
Importing this module runs nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .._checks import check_int, check_positive
from ..keys import Keys
from ..transforms.legopet import LoadImageZYXd, LoadSinogramd, PadToSquared, manifest_counts_per_bin, reference_max
from ..transforms.scaling import ToNetworkUnitsd
from .manifest import build_command, read_manifest

__all__ = ["LegoPETSample", "legopet_datalist", "load_samples"]


@dataclass(frozen=True)
class LegoPETSample:
    """One evaluation slice."""

    id: str
    sinogram: torch.Tensor
    """Network input: ``(1, S, S)`` measured sinogram / k_s, zero-padded to the square grid."""
    counts: torch.Tensor
    """Measured counts ``(views, radial)`` (for the figure)."""
    reference: torch.Tensor
    """High-count OSEM reference ``(h, w)``, activity units."""
    osem: torch.Tensor | None
    """OSEM of the measured sinogram ``(h, w)``, activity units (``None`` when the entry has none)."""
    image_divisor: float
    """k_x: activity = network units · k_x."""


def legopet_datalist(dataset_dir: str | Path, split: str) -> list[dict]:
    """The entries of ``split`` in ``dataset_dir/datalist.json`` (``FileNotFoundError`` with the build command when
    missing, ``ValueError`` for an absent or empty split)."""
    dataset_dir = Path(dataset_dir)
    read_manifest(dataset_dir, "legopet", required=False)
    path = dataset_dir / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; build the dataset: {build_command('legopet', dataset_dir)}")
    entries = json.loads(path.read_text(encoding="utf-8")).get(split)
    if not entries:
        raise ValueError(f"split must name a non-empty split of {path}, got {split!r}")
    return entries


def load_samples(
    dataset_dir: str | Path,
    *,
    split: str = "test",
    pad_size: int = 256,
    limit: int | None = None,
    count_scale_key: str | None = Keys.COUNT_SCALE,
    sinogram_scale: float | None = None,
    image_scale: float | None = None,
) -> list[LegoPETSample]:
    """The slices of ``split`` with network inputs prepared as in training (module docstring).

    Args:
        dataset_dir: a legopet dataset folder (``datalist.json``, ``manifest.json``).
        split: datalist split.
        pad_size: side of the square grid S (≥ every sinogram/image side; 256 as the paper).
        limit: first ``limit`` entries only (``None`` = all).
        count_scale_key: entry key of c in k_x = image_scale / c (``None``: k_x = image_scale).
        sinogram_scale, image_scale: the network units of the model that will see the samples (a shipped model's
            stored settings); ``None`` = this dataset's (``manifest_counts_per_bin``, ``reference_max`` of its training
            split), the units a model trained on it has.
    """
    root = Path(dataset_dir)
    pad_size = check_int(pad_size, "pad_size", minimum=1)
    entries = legopet_datalist(root, split)
    if limit is not None:
        entries = entries[: check_int(limit, "limit", minimum=1)]
    if image_scale is None:
        image_scale = reference_max(root, count_scale_key=count_scale_key)
    if sinogram_scale is None:
        sinogram_scale = manifest_counts_per_bin(root)
    image_scale = check_positive(image_scale, "image_scale")
    load = LoadSinogramd(keys=Keys.SINOGRAM)
    to_units = ToNetworkUnitsd(keys=Keys.SINOGRAM, scale=check_positive(sinogram_scale, "sinogram_scale"),
                               arithmetic="input")
    pad = PadToSquared(keys=Keys.SINOGRAM, size=pad_size)
    images = LoadImageZYXd(keys=[Keys.REFERENCE, Keys.OSEM], allow_missing_keys=True)
    samples = []
    for index, entry in enumerate(entries):
        d = {k: (str(root / v) if k in (Keys.SINOGRAM, Keys.REFERENCE, Keys.OSEM) else v) for k, v in entry.items()}
        d = load(d)
        counts = d[Keys.SINOGRAM][0].clone()
        d = pad(to_units(d))
        d = images(d)
        c = 1.0 if count_scale_key is None else float(entry[count_scale_key])
        osem = d.get(Keys.OSEM)
        samples.append(LegoPETSample(
            id=str(entry.get("id", index)),
            sinogram=torch.as_tensor(d[Keys.SINOGRAM]).float(),
            counts=counts,
            reference=torch.as_tensor(d[Keys.REFERENCE])[0].float(),
            osem=None if osem is None else torch.as_tensor(osem)[0].float(),
            image_divisor=image_scale / c,
        ))
    return samples
