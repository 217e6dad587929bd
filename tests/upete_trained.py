"""A tiny *trained* uPETe run (autoencoder + one latent variant, one epoch each, through the bundle configs) and
its combined checkpoint, shared by the workflow, app and zoo tests (trained once per test session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bundle.recipes import recipe
from tests.upete_fixtures import write_dataset

TRAIN_AE, TRAIN_LDM, INFERENCE = ([str(p) for p in recipe(f"upete/{name}").paths()]
                                  for name in ("autoencoder", "ldm", "combine"))
VARIANT = "LDM-CT"  # Gaussian process + CT attention + E_CT: every part of the container, no Poisson-domain data
TINY_NETWORK = {
    "patch_size": [16, 16, 8],
    "autoencoder_layout": {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4},
    "denoiser_layout": {"channels": [8, 16], "num_res_blocks": 1, "attention_levels": [False, True],
                        "norm_num_groups": 4, "num_head_channels": 8, "ct_head_channels": 8, "ct_window": 2},
    "ct_encoder_layout": {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4},
    "device": "cpu",
}
"""The tiny sizes of configs/upete/network.json's keys (what the inference and combine recipes define)."""
TINY = {
    **TINY_NETWORK,
    "samples_per_volume": 1,
    "discriminator_def#channels": 4,
    "discriminator_def#num_layers_d": 1,
}
"""The tiny sizes of the training stacks (network.json's and the training files' keys)."""
INFER = {"sw_roi_size": [16, 16, 8], "num_reverse_steps": 2}
"""Inference options of the tests (one sliding window per tiny volume, two reverse steps)."""

_CACHE: dict[str, dict] = {}


def train_tiny_upete(root: Path) -> dict:
    """Dataset, autoencoder and ``VARIANT`` trained one epoch each, then ``combining``; returns the paths and the
    config overrides (``overrides``: training ones; ``network_overrides``: those of the inference stack;
    ``app_overrides``: what the infer task needs)."""
    from monai.bundle import run

    data = write_dataset(root / "data")
    out = root / "out"
    overrides = {"dataset_dir": str(data), "output_dir": str(out), **TINY}
    torch.manual_seed(0)
    run("training", config_file=TRAIN_AE, ae_max_epochs=1, adversarial_warmup=0, **overrides)
    run("training", config_file=TRAIN_LDM, ldm_max_epochs=1, variant=VARIANT, **overrides)
    network_overrides = {"dataset_dir": str(data), "output_dir": str(out), **TINY_NETWORK}
    run("combining", config_file=INFERENCE, variant=VARIANT, **network_overrides)
    upete = out / "upete"
    return {
        "root": root, "data": data, "upete_dir": upete, "overrides": overrides, "network_overrides": network_overrides,
        "app_overrides": {"output_dir": str(out), "variant": VARIANT, "device": "cpu",
                          "checkpoint": str(upete / VARIANT / "upete_model.pt"), **INFER},
        "autoencoder": upete / "autoencoder" / "autoencoder_final.pt",
        "ldm": upete / VARIANT / "ldm_final.pt", "calibration": upete / "calibration.json",
        "combined": upete / VARIANT / "upete_model.pt",
    }


@pytest.fixture(scope="session")
def upete_run(tmp_path_factory):
    """:func:`train_tiny_upete` once per session (import this fixture into the test module)."""
    if "run" not in _CACHE:
        _CACHE["run"] = train_tiny_upete(tmp_path_factory.mktemp("upete_trained"))
    return _CACHE["run"]
