"""uPETe multi-GPU overlays: two CPU processes on gloo under torchrun train two steps of each stage (autoencoder +
discriminator, latent diffusion, U-Net baseline) and end with identical weights; per-rank seeds differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle.recipes import recipe
from tests.upete_fixtures import write_dataset
from tests.upete_trained import TINY

ROOT = Path(__file__).resolve().parents[2]
STAGES = {  # recipe under the test layer; the trainer; what each rank saves; the stage's seed id
    "autoencoder": ("upete/autoencoder_multi_gpu", "ae_trainer",
                    "{'autoencoder': @autoencoder.module.state_dict(), "
                    "'discriminator': @discriminator.module.state_dict()}", "rank_seed"),
    "ldm": ("upete/ldm_multi_gpu", "ldm_trainer",
            "{'network': @ldm.state_dict(), 'batch_seed': @ldm_prepare_batch.generator.initial_seed(), "
            "'loader_seed': @ldm_train_loader.generator.initial_seed()}", "seed"),
    "unet": ("upete/unet_multi_gpu", "unet_trainer", "{'network': @unet.module.state_dict()}", "rank_seed"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The tiny uPETe dataset (with scan.npz for the sinogram-domain LDM), written once for the three stages."""
    return write_dataset(tmp_path_factory.mktemp("upete_ddp") / "data")


def _run_two_ranks(tmp_path: Path, data: Path, stage: str, extra: dict) -> list[dict]:
    name, trainer, saved, seed = STAGES[stage]
    layer = tmp_path / f"{stage}_test_layer.json"
    layer.write_text(json.dumps({  # 2 training subjects: one per rank, one patch per step, two epochs = two steps
        **TINY, "dataset_dir": str(data), "output_dir": str(tmp_path / "out"), "ae_max_epochs": 2,
        "ldm_max_epochs": 2, "unet_max_epochs": 2, "adversarial_warmup": 0,
        **extra,
        "training": [f"$monai.utils.set_determinism(seed=@{seed})", f"$@{trainer}.run()",
                     f"$torch.save({{**{saved}, 'iteration': @{trainer}.state.iteration, 'rank_seed': @rank_seed, "
                     "'global_seed': torch.initial_seed()}, "
                     "@output_dir + '/rank' + str(dist.get_rank()) + '.pt')"],
    }), encoding="utf-8")
    stack = [*recipe(name).paths(), layer]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "monai.bundle", "run", "training", "--config_file",
               "[" + ",".join(f"'{f}'" for f in stack) + "]"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / "out" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["iteration"] == ranks[1]["iteration"] == 2  # 2 subjects / 2 ranks, 1 patch per step, 2 epochs
    assert (ranks[0]["rank_seed"], ranks[1]["rank_seed"]) == (0, 1)
    return ranks


def _assert_identical(a: dict, b: dict) -> None:
    assert set(a) == set(b) and a
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=0, msg=name)


def _assert_unwrapped(path: Path, key: str) -> dict:
    state = torch.load(path, weights_only=True)[key]  # rank 0's checkpoint: plain module keys
    assert not any(k.startswith("module.") for k in state)
    return state


def test_autoencoder_and_discriminator_ddp_two_gloo_ranks_end_identical(tmp_path, dataset):
    ranks = _run_two_ranks(tmp_path, dataset, "autoencoder", {})
    assert (ranks[0]["global_seed"], ranks[1]["global_seed"]) == (0, 1)  # crops and reparametrisation noise
    _assert_identical(ranks[0]["autoencoder"], ranks[1]["autoencoder"])
    _assert_identical(ranks[0]["discriminator"], ranks[1]["discriminator"])  # the GAN step ran (warm-up 0)
    final = tmp_path / "out" / "upete" / "autoencoder" / "autoencoder_final.pt"
    state = _assert_unwrapped(final, "autoencoder")
    _assert_identical(state, ranks[0]["autoencoder"])
    _assert_unwrapped(final, "discriminator")


def test_latent_diffusion_ddp_two_gloo_ranks_end_identical(tmp_path, dataset):
    variant = "LDM-P-CT"  # Poisson, sinogram domain (RandDoseReductiond draws t), CT attention + E_CT
    from bundle.networks.upete import pet_autoencoder

    torch.manual_seed(0)  # stage 1's output: a (random) tiny autoencoder
    autoencoder = pet_autoencoder(latent_channels=3, **TINY["autoencoder_layout"])
    ae_file = tmp_path / "out" / "upete" / "autoencoder" / "autoencoder_final.pt"
    ae_file.parent.mkdir(parents=True)
    torch.save({"autoencoder": autoencoder.state_dict()}, ae_file)
    ranks = _run_two_ranks(tmp_path, dataset, "ldm",
                           {"variant": variant, "dose_osem": {"num_subsets": 2, "num_iterations": 1}})
    _assert_identical(ranks[0]["network"], ranks[1]["network"])  # f_θ, E_CT and the frozen autoencoder
    assert ranks[0]["batch_seed"] != ranks[1]["batch_seed"]  # t and noise: seed + rank
    assert ranks[0]["loader_seed"] != ranks[1]["loader_seed"]  # crops, sinogram-domain t and thinning
    state = _assert_unwrapped(tmp_path / "out" / "upete" / variant / "ldm_final.pt", "network")
    _assert_identical(state, ranks[0]["network"])
    assert (tmp_path / "out" / "upete" / "calibration.json").is_file()


def test_unet_baseline_ddp_two_gloo_ranks_end_identical(tmp_path, dataset):
    ranks = _run_two_ranks(tmp_path, dataset, "unet", {"unet_def#channels": [4, 8, 16]})
    _assert_identical(ranks[0]["network"], ranks[1]["network"])
    state = _assert_unwrapped(tmp_path / "out" / "upete" / "unet" / "unet_final.pt", "network")
    _assert_identical(state, ranks[0]["network"])
