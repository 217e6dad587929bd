"""The image-space extension of uPETe through the bundle configs (configs/upete/image_space.json): a dose ladder,
one epoch of IMG-P-CT on it, the evaluation row, the combined checkpoint and the app built from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import run

from bundle.app import build_task
from bundle.checkpoint import read_combined
from bundle.data.ladder import build_dose_ladder
from bundle.networks.upete import IdentityAutoencoder
from bundle.recipes import recipe
from tests.upete_fixtures import write_dataset

OVERLAY = str(Path(__file__).resolve().parents[2] / "configs" / "upete" / "image_space.json")
LDM, EVAL, COMBINE = ([*map(str, recipe(f"upete/{name}").paths()), OVERLAY] for name in ("ldm", "evaluate", "combine"))
TINY = {
    "patch_size": [16, 16, 8],
    "denoiser_layout": {"channels": [8, 8, 16], "num_res_blocks": 1, "attention_levels": [False, False, True],
                        "norm_num_groups": 4, "num_head_channels": 8, "ct_head_channels": 8, "ct_window": 2,
                        "residual": True},
    "ct_encoder_layout": {"channels": [4], "num_res_blocks": 1, "norm_num_groups": 4, "latent_channels": 4},
    "device": "cpu",
}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("upete_image")
    data = write_dataset(root / "data")
    manifest = {"kind": "upete", "complete": True, "config": {"osem_subsets": 4, "osem_iterations": 2}}
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    build_dose_ladder(data, doses=[0.1, 0.5], realisations=1, progress=False)
    common = {"dataset_dir": str(data), "output_dir": str(root / "out"), **TINY}
    torch.manual_seed(0)
    run("training", config_file=LDM, ldm_max_epochs=1, samples_per_volume=1, **common)
    return root, data, common


def test_training_uses_the_ladder_and_no_autoencoder(image_run):
    root, _, _ = image_run
    out = root / "out" / "upete_image"
    assert not (root / "out" / "upete").exists()  # its own folder, no autoencoder stage
    state = torch.load(out / "LDM-P-CT" / "ldm_final.pt", weights_only=True)["network"]
    assert not any(k.startswith("autoencoder.") for k in state)
    assert state["ct_encoder.encoder.blocks.3.conv.weight"].shape[:2] == (4, 4)  # E_CT: 4 CT channels, full resolution
    cal = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
    assert cal["latent_scale"] > 1  # network units (mean 0.1) to unit spread


def test_evaluation_labels_the_row_and_has_no_autoencoder_ceiling(image_run):
    root, _, common = image_run
    run("evaluating", config_file=EVAL, sw_roi_size=[16, 16, 8], curve_doses=[0.1, 0.5], gaussian_grid=[1.0],
        nlm_grid=[0.8], trained_unet="$None", **common)
    out = root / "out" / "upete_image" / "evaluation"
    table = (out / "table.md").read_text(encoding="utf-8").splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["LPET", "Gaussian", "NLM", "IMG-P-CT"]
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["autoencoder_ceiling"] == {} and set(saved["curves"]["IMG-P-CT"]) == {"0.1", "0.5"}
    reverse = saved["tuned"]["reverse"]["IMG-P-CT"]  # K and the re-degradation chosen on validation (image_space.json)
    assert list(reverse["scores"]) == ["K=1, process", "K=2, process", "K=2, none", "K=4, process", "K=4, none"]
    best = max(reverse["scores"], key=reverse["scores"].__getitem__)
    assert best == f"K={reverse['num_reverse_steps']}, {reverse['redegradation']}"


def test_combined_checkpoint_drives_the_app(image_run, tmp_path):
    root, data, common = image_run
    run("combining", config_file=COMBINE, **common)
    combined = root / "out" / "upete_image" / "LDM-P-CT" / "upete_model.pt"
    settings = read_combined(combined)["settings"]
    assert settings["image_space"] is True and settings["poisson_domain"] == "ladder"
    assert settings["num_reverse_steps"] == 1 and settings["patch_size"] == [16, 16, 8]
    task = build_task("upete", checkpoint=combined, overrides={"device": "cpu"})
    assert isinstance(task.network.autoencoder, IdentityAutoencoder)
    entry = json.loads((data / "datalist.json").read_text(encoding="utf-8"))["test"][0]
    output = tmp_path / "enhanced.nii.gz"
    task({"image": str(data / entry["pet_low_by_dose"]["0.1"]), "ct": str(data / entry["ct"]), "dose": 0.1,
          "output": str(output), "seed": 0})
    import nibabel as nib

    enhanced = np.asarray(nib.load(str(output)).dataobj)
    assert enhanced.shape == (16, 16, 8) and np.isfinite(enhanced).all()


def test_the_combined_file_ships_with_its_calibration_and_settings(image_run, tmp_path):
    """``ship`` keeps a uPETe combined checkpoint whole (weights as float32, calibration, variant, settings), records
    its sha256, and the shipped file drives the app exactly as the combined file does."""
    from bundle.checkpoint import ship, shipped_weights, verify_shipped

    root, _, common = image_run
    combined = root / "out" / "upete_image" / "LDM-P-CT" / "upete_model.pt"
    if not combined.is_file():
        run("combining", config_file=COMBINE, **common)
    models = tmp_path / "models"
    models.mkdir()
    target = ship("upete_image", combined, method="upete", train_command="see docs/upete.md", models_dir=models)
    assert shipped_weights("upete_image", models_dir=models) == target and verify_shipped(models) == []
    original, shipped = read_combined(combined), read_combined(target)
    assert shipped["calibration"] == original["calibration"] and shipped["settings"] == original["settings"]
    assert shipped["variant"] == "LDM-P-CT"
    for name, value in original["network"].items():
        assert torch.equal(shipped["network"][name], value.float()), name
    with pytest.raises(ValueError, match="combined file"):
        ship("upete_image", combined, method="upete", use_ema=True, models_dir=models)
