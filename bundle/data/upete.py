"""Reader of a ``upete`` dataset (``python -m bundle.data build upete``): one :class:`Case` per subject.

Array layout: MONAI's channel-first (1, x, y, z) as written by ``LoadImaged`` from the dataset's NIfTI files, batch
added: ``(1, 1, X, Y, Z)``.  PET is in network units x' = x / (m · mean(x))
(:class:`~bundle.transforms.scaling.ToNetworkUnitsd`, ``statistic="mean"``, each volume its own scale, kept with the
case); CT is windowed to [0, 1] (:class:`~bundle.transforms.petct.CTWindowd`).  Importing this module runs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from ..transforms.petct import CTWindowd
from ..transforms.scaling import ToNetworkUnitsd
from .manifest import read_manifest

__all__ = ["Case", "load_split", "upete_loading"]


@dataclass(frozen=True)
class Case:
    """One subject: SPET, CT and LPETs in network units ``(1, 1, X, Y, Z)`` and their scales (kBq/ml per unit).

    Where the dataset has them (datasets built since the lesion metrics, docs/upete.md): ``activity`` the true
    activity in kBq/ml, ``labels`` the organ labels (:data:`bundle.data.torso.LABELS`) and ``lesions`` the lesion
    index map (0 none, k the k-th lesion), all ``(1, 1, X, Y, Z)``; otherwise ``None``.
    """

    case_id: str
    spet: torch.Tensor
    spet_scale: float
    ct: torch.Tensor
    low: Mapping[float, tuple[torch.Tensor, float]]
    activity: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    lesions: torch.Tensor | None = None


def upete_loading(keys: Sequence[str], *, mean_multiple: float, ct_window_hu: Sequence[float]) -> Compose:
    """LoadImaged → EnsureChannelFirstd → PET keys ÷ (m · mean) → CT window, for the file paths under ``keys``."""
    pet_keys = [k for k in keys if k != "ct"]
    return Compose([
        LoadImaged(keys=list(keys), image_only=True),
        EnsureChannelFirstd(keys=list(keys)),
        ToNetworkUnitsd(keys=pet_keys, statistic="mean", scale=mean_multiple),
        CTWindowd(keys="ct", window_hu=ct_window_hu),
    ])


def load_split(
    dataset_dir: str | Path,
    split: str,
    *,
    doses: Sequence[float] | None = None,
    mean_multiple: float = 10.0,
    ct_window_hu: Sequence[float] = (-1000.0, 1000.0),
) -> list[Case]:
    """The cases of ``split`` (``training``/``validation``/``test``) with the LPETs of ``doses`` (default: all)."""
    root = Path(dataset_dir)
    read_manifest(root, "upete", required=False)
    listing = root / "datalist.json"
    if not listing.is_file():
        raise ValueError(
            f"dataset_dir must hold a datalist.json (python -m bundle.data build upete), got {str(root)!r}"
        )
    entries = json.loads(listing.read_text(encoding="utf-8")).get(split)
    if not entries:
        raise ValueError(f"split {split!r} of {listing} is empty or missing")
    cases = []
    for entry in entries:
        by_dose = {float(k): v for k, v in entry.get("pet_low_by_dose", {}).items()}
        wanted = sorted(by_dose) if doses is None else [float(d) for d in doses if float(d) in by_dose]
        data = {"pet": str(root / entry["pet"]), "ct": str(root / entry["ct"])}
        data.update({f"pet_low_{i}": str(root / by_dose[d]) for i, d in enumerate(wanted)})
        out = upete_loading(list(data), mean_multiple=mean_multiple, ct_window_hu=ct_window_hu)(data)
        low = {d: (out[f"pet_low_{i}"].as_tensor()[None].float(), float(out[f"pet_low_{i}_scale"][0]))
               for i, d in enumerate(wanted)}
        truth_keys = [k for k in ("activity", "labels", "lesions") if k in entry]
        truth = Compose([LoadImaged(keys=truth_keys, image_only=True), EnsureChannelFirstd(keys=truth_keys)])(
            {k: str(root / entry[k]) for k in truth_keys}) if truth_keys else {}
        extra = {k: truth[k].as_tensor()[None].float() for k in truth_keys}
        cases.append(Case(entry.get("id", Path(entry["pet"]).parent.name), out["pet"].as_tensor()[None].float(),
                          float(out["pet_scale"][0]), out["ct"].as_tensor()[None].float(), low, **extra))
    return cases
