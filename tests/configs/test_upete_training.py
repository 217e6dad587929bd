"""uPETe bundle configs end to end on a tiny synthetic dataset: autoencoder -> LDM-P-CT -> U-Net -> evaluation."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import run

from bundle.recipes import recipe
from tests.upete_fixtures import write_dataset

BASE, LDM, UNET, EVAL = ([str(p) for p in recipe(f"upete/{name}").paths()]
                         for name in ("autoencoder", "ldm", "unet", "evaluate"))
TINY = {
    "patch_size": [16, 16, 8],
    "samples_per_volume": 1,
    "autoencoder_layout": {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4},
    "discriminator_def#channels": 4,
    "discriminator_def#num_layers_d": 1,
    "denoiser_layout": {"channels": [8, 16], "num_res_blocks": 1, "attention_levels": [False, True],
                        "norm_num_groups": 4, "num_head_channels": 8, "ct_head_channels": 8, "ct_window": 2},
    "ct_encoder_layout": {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4},
    "device": "cpu",
}
UNET_TINY = {"unet_def#channels": [4, 8, 16]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("upete")
    data = write_dataset(root / "data")
    common = {"dataset_dir": str(data), "output_dir": str(root / "out"), **TINY}
    torch.manual_seed(0)
    run("training", config_file=BASE, ae_max_epochs=1, adversarial_warmup=0, **common)
    run("training", config_file=LDM, ldm_max_epochs=1, variant="LDM-P-CT", **common)
    run("training", config_file=UNET, unet_max_epochs=1, **common, **UNET_TINY)
    return root, common


def test_training_writes_checkpoints_and_calibration(trained):
    root, _ = trained
    out = root / "out" / "upete"
    assert (out / "autoencoder" / "autoencoder_final.pt").is_file()
    assert (out / "LDM-P-CT" / "ldm_final.pt").is_file()
    assert (out / "unet" / "unet_final.pt").is_file()
    cal = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
    assert cal["latent_scale"] > 0 and cal["count_scale"] > 0 and cal["reference_dose"] == 0.1
    state = torch.load(out / "LDM-P-CT" / "ldm_final.pt", weights_only=True)["network"]
    assert any(k.startswith("ct_encoder.") for k in state) and any("ct_attention" in k for k in state)


def test_evaluation_table_has_the_trained_rows(trained):
    root, common = trained
    run("evaluating", config_file=EVAL, eval_variants=["LDM-P-CT"], sw_roi_size=[16, 16, 8], num_reverse_steps=2,
        curve_doses=[0.1, 0.5], gaussian_grid=[1.0], nlm_grid=[0.8], **common, **UNET_TINY)
    table = (root / "out" / "upete" / "evaluation" / "table.md").read_text(encoding="utf-8").splitlines()
    assert table[0] == "| Method | PSNR | SSIM |"
    assert [line.split("|")[1].strip() for line in table[2:]] == ["LPET", "Gaussian", "NLM", "U-Net", "LDM-P-CT"]
    saved = json.loads((root / "out" / "upete" / "evaluation" / "results.json").read_text(encoding="utf-8"))
    estimates = saved["estimated_doses"]  # the calibrated image-only dose estimate of every test LPET
    assert set(estimates) == set(saved["test_cases"])
    assert all(set(e) == {"0.1", "0.5"} and all(0 < v <= 1 for v in e.values()) for e in estimates.values())
