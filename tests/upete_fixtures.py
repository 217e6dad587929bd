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


def _scan(activity_xyz: np.ndarray, mu_xyz: np.ndarray, seed: int):
    """A slice-wise scan of the (x, y, z) activity (bundle.data.simulate), its image geometry and its OSEM (x, y, z)."""
    import torch

    from bundle.data.simulate import simulate_scan, slicewise_layout
    from bundle.physics import ImageGeometry

    image = ImageGeometry(shape=SHAPE[::-1], voxel_size_mm=(16.0, 10.0, 10.0))
    zyx = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 1, 0))).float() for a in (activity_xyz, mu_xyz)]
    scan = simulate_scan(*zyx, layout=slicewise_layout(image), image=image, total_counts=2e5,
                         generator=torch.Generator().manual_seed(seed), fwhm_mm=10.0)
    return scan, image, scan.reconstruct_osem(num_subsets=4, num_iterations=2).numpy().transpose(2, 1, 0)


def write_dataset(root: Path, *, seed: int = 0) -> Path:
    """2 training, 2 validation, 2 test subjects.  Training subjects: SPET = OSEM (4 × 2) of a simulated slice-wise
    scan saved as scan.npz (for sinogram-domain training); the others: SPET = Poisson image of the activity.
    LPET = Poisson at dose d of the SPET's expected counts.  Every subject has its activity, organ labels (the body
    labelled liver) and lesion map (one lesion) for the reading metrics."""
    from bundle.data.simulate import save_scan

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
        entry = {"pet": f"samples/s{i:03d}/pet.nii.gz", "ct": f"samples/s{i:03d}/ct.nii.gz", "dose_fraction": 0.1,
                 "id": f"s{i:03d}", "pet_low_by_dose": {}}
        if split == "training":
            scan, image, spet = _scan(activity, np.where(body, 0.0096, 0.0), seed * 100 + i)
            save_scan(folder / "scan.npz", scan, image=image, fwhm_mm=10.0)
            entry["scan"] = f"samples/s{i:03d}/scan.npz"
        _save(folder / "pet.nii.gz", spet)
        _save(folder / "ct.nii.gz", ct)
        _save(folder / "activity.nii.gz", activity)  # truth, organ labels (body = liver) and lesion map (1 lesion)
        _save(folder / "labels.nii.gz", np.where(lesion, 12.0, np.where(body, 4.0, 0.0)))
        _save(folder / "lesions.nii.gz", lesion.astype(np.float32))
        entry.update({k: f"samples/s{i:03d}/{k}.nii.gz" for k in ("activity", "labels", "lesions")})
        for d in DOSES if split == "test" else DOSES[:1]:
            low = rng.poisson(activity * counts * d) / (counts * d)
            name = f"samples/s{i:03d}/pet_low_{d:g}.nii.gz"
            _save(root / name, low)
            entry["pet_low_by_dose"][f"{d:g}"] = name
        entry["pet_low"] = entry["pet_low_by_dose"]["0.1"]
        datalist[split].append(entry)
    (root / "datalist.json").write_text(json.dumps(datalist, indent=1), encoding="utf-8")
    return root
