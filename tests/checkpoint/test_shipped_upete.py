"""The shipped uPETe model (models/upete_image.pt): its hash, and a quick inference through the app's default path on
a freshly simulated torso of the small preset that no training run saw (seed 7)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.app.cli import main
from bundle.checkpoint import read_combined, read_manifest, shipped_weights
from bundle.metrics import image_metrics


def test_manifest_entry_and_settings():
    entry = read_manifest()["upete_image"]
    assert entry["method"] == "upete" and entry["card"] == "upete_image.md"
    combined = read_combined(shipped_weights("upete_image"))  # sha256 checked first
    assert combined["variant"] == "LDM-P-CT"
    settings = combined["settings"]
    assert settings["image_space"] is True and settings["poisson_domain"] == "ladder"
    assert settings["patch_size"] == [48, 48, 16]


@pytest.fixture(scope="module")
def held_out_torso(tmp_path_factory):
    from bundle.data.build import build_dataset

    root = tmp_path_factory.mktemp("upete_shipped") / "data"
    datalist = build_dataset("upete", output=root, preset_name="small", seed=7, progress=False, subjects=1,
                             split=(0, 1, 0))
    return root, datalist["validation"][0]


def _kbq(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(nib.load(str(path)).dataobj, dtype=np.float32))


def test_default_app_path_enhances_a_held_out_scan(held_out_torso, tmp_path):
    """``bundle.app infer --method upete`` with no checkpoint uses the shipped model: on a 10 % dose scan of a torso
    simulated here it must beat its own input against the standard-dose reconstruction by more than 1 dB and keep
    the total activity within 2 % (an untrained or mis-scaled model fails both)."""
    root, entry = held_out_torso
    out = tmp_path / "enhanced.nii.gz"
    assert main(["infer", "--method", "upete", "--image", str(root / entry["pet_low"]), "--ct", str(root / entry["ct"]),
                 "--output", str(out), "--dose", "0.1"]) == 0
    result = json.loads((tmp_path / "enhanced.nii.gz.json").read_text(encoding="utf-8"))
    assert result["checkpoint"] == str(shipped_weights("upete_image"))
    spet, lpet, enhanced = (_kbq(p) for p in (root / entry["pet"], root / entry["pet_low"], out))
    gain = image_metrics(enhanced, spet)["PSNR"] - image_metrics(lpet, spet)["PSNR"]
    assert gain > 1.0, gain
    assert float(enhanced.sum() / spet.sum()) == pytest.approx(1.0, abs=0.02)
