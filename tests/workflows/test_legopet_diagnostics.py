"""Held-out denoising loss: zero for an oracle ε-predictor, the analytic E[(b − ε)²] = b² + 1 for a constant one,
EMA weights per checkpoint, outputs and argument errors."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from bundle.data.legopet import load_samples
from bundle.inferers.legopet import LegoPETInferer
from bundle.workflows.legopet_diagnostics import denoising_loss, restart_from_reference
from tests.workflows.test_legopet import _Bias, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("legopet_diag"))


def _inferer() -> LegoPETInferer:
    return LegoPETInferer(scheduler=DDIMScheduler(num_train_timesteps=100), guidance_scale=1.0)


def _checkpoints(folder, biases):
    folder.mkdir()
    for epoch, b in biases:
        torch.save({"network": {"b": torch.tensor(9.0)}, "ema": {"b": torch.tensor(b)}},
                   folder / f"checkpoint_epoch={epoch}.pt")
    return folder


class _Oracle(torch.nn.Module):
    """Knows x_0 of every slice (looked up by its sinogram): ε = (x_t − sqrt(ᾱ_t) x_0) / sqrt(1 − ᾱ_t) exactly."""

    def __init__(self, dataset, alphas_cumprod) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(()))  # so that checkpoints load
        self.alphas_cumprod = alphas_cumprod
        self.table = {}
        for split in ("training", "test"):
            for sample in load_samples(dataset, split=split):
                x0 = torch.zeros((1, 256, 256))
                x0[0, 42:214, 42:214] = sample.reference / sample.image_divisor
                self.table[round(float(sample.sinogram.sum()), 2)] = x0

    def forward(self, x, t, s, **kwargs):
        x0 = torch.stack([self.table[round(float(si.sum()), 2)] for si in s])
        abar = self.alphas_cumprod[t].reshape(-1, 1, 1, 1)
        return (x - abar.sqrt() * x0) / (1 - abar).sqrt()


def test_oracle_scores_zero_and_a_constant_scores_b_squared_plus_one(dataset, tmp_path):
    inferer = _inferer()
    ckpt = _checkpoints(tmp_path / "ckpt", [(1, 0.0), (3, 0.5)])
    result = denoising_loss(dataset, output_dir=tmp_path / "out", iterations_per_epoch=2, timesteps=[5, 50, 95],
                            runs={"oracle": (_Oracle(dataset, inferer.scheduler.alphas_cumprod), inferer, ckpt),
                                  "constant": (_Bias(), inferer, ckpt)})
    oracle = [r for r in result["rows"] if r["method"] == "oracle"]
    assert len(oracle) == 2 * 2 * 3 and max(r["eps_mse"] for r in oracle) < 1e-8
    for row in (r for r in result["rows"] if r["method"] == "constant"):
        b = 0.0 if row["epoch"] == 1 else 0.5  # the EMA entry, not the network's 9.0
        # 2 slices x 2 draws x 256² pixels of N(0, 1): E[(b − ε)²] = b² + 1 within a few standard errors
        assert row["eps_mse"] == pytest.approx(b**2 + 1, abs=0.02)
        assert row["iteration"] == 2 * row["epoch"]
    means = {(m["method"], m["epoch"], m["split"]) for m in result["means"]}
    assert ("constant", 3, "test") in means and len(means) == 2 * 2 * 2
    on_disk = json.loads((tmp_path / "out" / "denoising_loss.json").read_text(encoding="utf-8"))
    assert on_disk["rows"] == result["rows"]
    assert (tmp_path / "out" / "denoising_loss.png").is_file()
    assert (tmp_path / "out" / "denoising_loss.csv").read_text(encoding="utf-8").startswith("method,epoch,iteration")


def test_argument_errors(dataset, tmp_path):
    ckpt = _checkpoints(tmp_path / "ckpt", [(1, 0.0)])
    runs = {"c": (_Bias(), _inferer(), ckpt)}
    with pytest.raises(ValueError, match="timesteps must be < num_train_timesteps \\(100\\), got 100"):
        denoising_loss(dataset, output_dir=tmp_path, runs=runs, iterations_per_epoch=1, timesteps=[10, 100])
    with pytest.raises(ValueError, match="runs must be a non-empty mapping"):
        denoising_loss(dataset, output_dir=tmp_path, runs={}, iterations_per_epoch=1)
    with pytest.raises(ValueError, match="splits must be a non-empty sequence"):
        denoising_loss(dataset, output_dir=tmp_path, runs=runs, iterations_per_epoch=1, splits="test")
    with pytest.raises(ValueError, match="split must name a non-empty split"):
        denoising_loss(dataset, output_dir=tmp_path, runs=runs, iterations_per_epoch=1, splits=["validation"])
    with pytest.raises(ValueError, match=r"no checkpoint_epoch=N\.pt"):
        denoising_loss(dataset, output_dir=tmp_path, iterations_per_epoch=1, timesteps=[10],
                       runs={"c": (_Bias(), _inferer(), _checkpoints(tmp_path / "empty", []))})


def test_restart_with_the_exact_denoiser_returns_the_reference_from_every_level(dataset, tmp_path):
    """With the exact ε the DDIM chain from any t0 lands on x_0: intensity ratio 1 and RMSE 0 (up to rounding).
    (No x̂_0 clipping: the test subject's x_0 reaches 1.4 in network units, above MONAI's clip at 1.)"""
    inferer = LegoPETInferer(scheduler=DDIMScheduler(num_train_timesteps=100, clip_sample=False), guidance_scale=1.0)
    rows = restart_from_reference(dataset, output_dir=tmp_path, start_steps=[5, 60, 99], num_inference_steps=10,
                                  runs={"oracle": (_Oracle(dataset, inferer.scheduler.alphas_cumprod), inferer)})
    assert [(r["t0"], r["steps"]) for r in rows] == [(5, 6), (60, 10), (99, 10)]
    for row in rows:
        assert row["intensity_ratio"] == pytest.approx(1.0, abs=1e-4) and row["rmse"] < 1e-4
    assert (tmp_path / "restart.md").read_text(encoding="utf-8").startswith("| Method | t0 | steps |")


def test_restart_argument_errors(dataset, tmp_path):
    runs = {"c": (_Bias(), _inferer())}
    with pytest.raises(ValueError, match=r"start_steps must be < num_train_timesteps \(100\), got 100"):
        restart_from_reference(dataset, output_dir=tmp_path, runs=runs, start_steps=[100])
    with pytest.raises(ValueError, match=r"head_fraction must be in \(0, 1\)"):
        restart_from_reference(dataset, output_dir=tmp_path, runs=runs, head_fraction=1.5)
    with pytest.raises(TypeError, match="must hold a LegoPETInferer"):
        restart_from_reference(dataset, output_dir=tmp_path, runs={"c": (_Bias(), object())}, start_steps=[5])
