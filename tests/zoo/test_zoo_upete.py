"""uPETe model-zoo export from the combined checkpoint of a tiny trained run: verify, unzip, infer in a fresh
process from the unpacked folder (no repository on the path), same result as the in-process task."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch

from bundle.app import build_task
from bundle.zoo import safe_extract, verify_bundle
from bundle.zoo.cli import main
from tests.upete_trained import INFER, VARIANT


def test_upete_export_verify_and_run_the_unzipped_bundle(upete_run, tmp_path):
    args = ["export", "--method", "upete", "--output", str(tmp_path / "dist"), "--checkpoint",
            str(upete_run["combined"]), *[f"--override={k}={json.dumps(v)}" for k, v in INFER.items()]]
    assert main(args) == 0
    exported = tmp_path / "dist" / "upete_bundle"
    assert "models/model.pt" in verify_bundle(exported)
    weights = torch.load(exported / "models" / "model.pt", weights_only=True)
    assert weights["variant"] == VARIANT and weights["calibration"]["latent_scale"] > 0
    assert weights["settings"]["denoiser_layout"]["channels"] == [8, 16]  # the architecture travels with the weights
    assert json.loads((exported / "configs/upete/zoo.json").read_text(encoding="utf-8")) == INFER
    target = tmp_path / "unpacked"
    safe_extract(tmp_path / "dist" / "upete_bundle.zip", target)
    root = target / "upete_bundle"
    datalist = json.loads((upete_run["data"] / "datalist.json").read_text(encoding="utf-8"))["test"][0]
    pet = str(upete_run["data"] / datalist["pet_low_by_dose"]["0.1"])
    ct = str(upete_run["data"] / datalist["ct"])
    output = tmp_path / "pred.nii.gz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", "configs/inference.json",
               "--meta_file", "configs/metadata.json", "--image", pet, "--ct", ct, "--dose", "0.1",
               "--output", str(output), "--device", "cpu"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"bundle package: {root.resolve() / 'bundle' / '__init__.py'}" in result.stdout  # the bundled code
    task = build_task("upete", checkpoint=upete_run["combined"], overrides={**INFER, "device": "cpu"})
    path, _ = task({"image": pet, "ct": ct, "dose": 0.1, "output": str(tmp_path / "here.nii.gz")})
    np.testing.assert_allclose(np.asarray(nib.load(output).dataobj), np.asarray(nib.load(path).dataobj),
                               rtol=1e-5, atol=1e-6)
