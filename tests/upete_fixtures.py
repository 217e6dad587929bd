"""A tiny synthetic uPETe dataset on disk (NIfTI + datalist.json) for the workflow and config tests."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (16, 16, 8)  # MONAI (x, y, z)
DOSES = (0.1, 0.5)


def _save(path: Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([10.0, 10.0, 16.0, 1.0])), str(path))


def write_dataset(root: Path, *, seed: int = 0) -> Path:
    """2 training, 2 validation, 2 test subjects; LPET = Poisson at dose d of the SPET's expected counts."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.arange(s) for s in SHAPE), indexing="ij")
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    splits = ["training"] * 2 + ["validation"] * 2 + ["test"] * 2
    for i, split in enumerate(splits):
        folder = root / "samples" / f"s{i:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = ((x - 7.5) ** 2 / 49 + (y - 7.5) ** 2 / 36) <= 1.0
        lesion = ((x - 5 - i % 3) ** 2 + (y - 8) ** 2 + (z - 4) ** 2) <= 4
        activity = np.where(body, 1.0, 0.0) + np.where(lesion, 4.0, 0.0)
        counts = 200.0
        spet = rng.poisson(activity * counts) / counts
        ct = np.where(body, 40.0, -1000.0) + np.where(lesion, 20.0, 0.0)
        _save(folder / "pet.nii.gz", spet)
        _save(folder / "ct.nii.gz", ct)
        entry = {"pet": f"samples/s{i:03d}/pet.nii.gz", "ct": f"samples/s{i:03d}/ct.nii.gz", "dose_fraction": 0.1,
                 "id": f"s{i:03d}", "pet_low_by_dose": {}}
        for d in DOSES if split == "test" else DOSES[:1]:
            low = rng.poisson(activity * counts * d) / (counts * d)
            name = f"samples/s{i:03d}/pet_low_{d:g}.nii.gz"
            _save(root / name, low)
            entry["pet_low_by_dose"][f"{d:g}"] = name
        entry["pet_low"] = entry["pet_low_by_dose"]["0.1"]
        datalist[split].append(entry)
    (root / "datalist.json").write_text(json.dumps(datalist, indent=1), encoding="utf-8")
    return root
