"""LegoPET evaluation workflows: checkpoint/EMA loading, checkpoint discovery, the method table against metrics
recomputed here with numpy, NFE counting, the training-progress curve and the sampling-cost table.

The dataset is a synthetic legopet folder in the builder's layout (disc phantoms, Poisson sinograms, ``osem``
images); predictors are tiny fakes so every expected number can be written down independently.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from bundle.data.io import load_image, save_image, save_sinogram
from bundle.data.legopet import load_samples
from bundle.inferers.legopet import LegoPETInferer
from bundle.keys import Keys
from bundle.physics import preset
from bundle.workflows.legopet import evaluate_legopet
from bundle.workflows.legopet_predictors import CountingNetwork, DiffusionPredictor, RegressionPredictor, gan_predictors
from bundle.workflows.legopet_studies import guidance_sweep, sampling_cost, training_progress

CROP = (42, 42, 172, 172)


def write_dataset(root: Path) -> Path:
    """2 training and 2 test samples; reference = disc × (1 + 0.2·subject), osem = reference · 0.8."""
    geometry = preset("mmr_2d").image
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(172.0), torch.arange(172.0), indexing="ij")
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    for subject, split in enumerate(("training", "test")):
        for s in range(2):
            sample_id = f"s{subject:02d}_r0_z{s:02d}"
            folder = root / "samples" / sample_id
            disc = (((yy - 86 - 5 * s) ** 2 + (xx - 86) ** 2) < 60.0**2).float()
            reference = (disc * (1.0 + 0.2 * subject) + 0.1 * disc * torch.sin(xx / 7)).unsqueeze(0)
            save_sinogram(folder / "sinogram.npy", torch.poisson(torch.full((1, 252, 172), 6.9), generator=generator))
            save_image(folder / "reference.nii.gz", reference, geometry)
            save_image(folder / "osem.nii.gz", 0.8 * reference, geometry)
            datalist[split].append({
                Keys.SINOGRAM: f"samples/{sample_id}/sinogram.npy",
                Keys.REFERENCE: f"samples/{sample_id}/reference.nii.gz",
                Keys.OSEM: f"samples/{sample_id}/osem.nii.gz", Keys.COUNT_SCALE: 0.25 + 0.05 * subject + 0.01 * s,
                "id": sample_id,
            })
    (root / "datalist.json").write_text(json.dumps(datalist), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({
        "kind": "legopet", "config": {"scanner_preset": "mmr_2d", "measured_counts": 3e5},
        "sinogram_layout": {"shape_planes_views_radial": [1, 252, 172]}, "complete": True,
    }), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("legopet_eval"))


def _entries(dataset: Path, split: str) -> list[dict]:
    return json.loads((dataset / "datalist.json").read_text(encoding="utf-8"))[split]


def _numpy_psnr(x: np.ndarray, r: np.ndarray) -> float:
    return float(10 * np.log10(r.max() ** 2 / np.mean((x - r) ** 2)))


def _image_divisor(dataset: Path, entry: dict) -> float:
    """k_x = max over training of max(reference)·c, divided by the entry's c (transforms docstring)."""
    peak = max(float(load_image(dataset / e[Keys.REFERENCE])[0].max()) * e[Keys.COUNT_SCALE]
               for e in _entries(dataset, "training"))
    return peak / entry[Keys.COUNT_SCALE]


# ---------------------------------------------------------------------------------------------------- weights
# ---------------------------------------------------------------------------------------------------- samples
# ---------------------------------------------------------------------------------------------------- evaluation
class _Constant(torch.nn.Module):
    """A 'DeepPET' that outputs ``value`` (network units) on the padded grid, whatever the input."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.full_like(s, self.value)


def test_evaluate_table_csv_and_figure(dataset, tmp_path):
    predictor = RegressionPredictor(network=_Constant(0.5), crop=CROP)
    summary = evaluate_legopet(dataset, output_dir=tmp_path, predictors={"DeepPET": predictor}, batch_size=1)
    entries = _entries(dataset, "test")
    refs = [load_image(dataset / e[Keys.REFERENCE])[0][0].numpy().astype(np.float64) for e in entries]
    osem_psnr = [_numpy_psnr(0.8 * r, r) for r in refs]
    const_psnr = [
        _numpy_psnr(np.full_like(r, 0.5 * _image_divisor(dataset, e)), r) for r, e in zip(refs, entries, strict=True)
    ]

    with (tmp_path / "metrics.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["method"]) for r in rows] == [(e["id"], m) for m in ("OSEM", "DeepPET") for e in entries]
    np.testing.assert_allclose([float(r["PSNR"]) for r in rows], osem_psnr + const_psnr, rtol=1e-5)
    # x = 0.8 r: SSIM < 1; the constant image has no structure
    assert all(0.5 < float(r["SSIM"]) < 1.0 for r in rows[:2])

    methods = summary["methods"]
    assert list(methods) == ["OSEM", "DeepPET"]
    assert methods["OSEM"]["PSNR"]["mean"] == pytest.approx(np.mean(osem_psnr), rel=1e-6)
    assert methods["OSEM"]["PSNR"]["std"] == pytest.approx(np.std(osem_psnr, ddof=1), rel=1e-5, abs=1e-9)
    table = (tmp_path / "table.md").read_text(encoding="utf-8").splitlines()
    assert table[0] == "| Method | PSNR | SSIM |"
    assert [line.split(" | ")[0] for line in table[2:4]] == ["| OSEM", "| DeepPET"]
    wins = sum(a > b for a, b in zip(const_psnr, osem_psnr, strict=True))  # the paired per-slice count
    assert methods["DeepPET"]["psnr_wins"] == {"OSEM": wins} and table[-1] == f"| DeepPET | {wins} |  |  |"
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["slices"] == 2
    assert (tmp_path / "figure.png").stat().st_size > 1000


def test_evaluate_argument_checks(dataset, tmp_path):
    with pytest.raises(ValueError, match="predictors keys must be among"):
        evaluate_legopet(dataset, output_dir=tmp_path, predictors={"OSEM": lambda s: s})
    with pytest.raises(ValueError, match="needs include_osem=True or at least one predictor"):
        evaluate_legopet(dataset, output_dir=tmp_path, predictors={}, include_osem=False)
    with pytest.raises(ValueError, match="figure_index must be < the number of slices"):
        evaluate_legopet(dataset, output_dir=tmp_path, predictors={}, figure_index=5)
    with pytest.raises(ValueError, match="split must name a non-empty split"):
        evaluate_legopet(dataset, output_dir=tmp_path, predictors={}, split="validation")


def test_gan_rows_sit_between_deeppet_and_the_diffusion_models(dataset, tmp_path):
    """The paper's Table-1 order, whatever the order of the predictors mapping."""
    predictors = {name: RegressionPredictor(network=_Constant(v), crop=CROP)
                  for name, v in (("Pix2Pix", 0.3), ("cDPM", 0.1), ("DeepPET", 0.5), ("cGAN", 0.4))}
    summary = evaluate_legopet(dataset, output_dir=tmp_path, predictors=predictors, limit=1)
    assert list(summary["methods"]) == ["OSEM", "DeepPET", "cGAN", "Pix2Pix", "cDPM"]
    table = (tmp_path / "table.md").read_text(encoding="utf-8").splitlines()
    assert [line.split(" | ")[0][2:] for line in table[2:7]] == ["OSEM", "DeepPET", "cGAN", "Pix2Pix", "cDPM"]


def _scale_checkpoint(path: Path, weight: float) -> Path:
    """A 1 × 1 convolution checkpoint x ↦ weight · x, with a decoy 'ema' entry the GAN rows must not use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network": {"weight": torch.full((1, 1, 1, 1), weight)},
                "ema": {"weight": torch.full((1, 1, 1, 1), -1.0)}}, path)
    return path


def test_gan_predictors_load_each_rows_network_weights(tmp_path):
    generator = torch.nn.Conv2d(1, 1, 1, bias=False)
    before = generator.weight.detach().clone()
    checkpoints = {"cGAN": _scale_checkpoint(tmp_path / "c.pt", 2.0),
                   "Pix2Pix": _scale_checkpoint(tmp_path / "p.pt", 3.0)}
    predictors = gan_predictors(["Pix2Pix", "cGAN"], generator=generator, checkpoints=checkpoints, crop=CROP)
    s = torch.rand(2, 1, 256, 256)
    assert list(predictors) == ["Pix2Pix", "cGAN"]
    torch.testing.assert_close(predictors["cGAN"](s), 2.0 * s[:, :, 42:214, 42:214])
    torch.testing.assert_close(predictors["Pix2Pix"](s), 3.0 * s[:, :, 42:214, 42:214])
    assert torch.equal(generator.weight.detach(), before)  # every row loads into its own copy
    assert gan_predictors([], generator=None, checkpoints={}, crop=CROP) == {}  # no rows: no generator needed


def test_gan_predictors_argument_checks(tmp_path):
    generator = torch.nn.Conv2d(1, 1, 1, bias=False)
    ok = {"cGAN": _scale_checkpoint(tmp_path / "c.pt", 2.0)}
    with pytest.raises(TypeError, match="gan_rows must be a list of names"):
        gan_predictors("cGAN", generator=generator, checkpoints=ok, crop=CROP)
    for rows in (["GAN"], ["cGAN", "cGAN"]):
        with pytest.raises(ValueError, match="gan_rows must name distinct rows among"):
            gan_predictors(rows, generator=generator, checkpoints=ok, crop=CROP)
    with pytest.raises(TypeError, match=r"configs/legopet/gan\.json"):
        gan_predictors(["cGAN"], generator=None, checkpoints=ok, crop=CROP)
    with pytest.raises(ValueError, match="checkpoints must map every requested row"):
        gan_predictors(["Pix2Pix"], generator=generator, checkpoints=ok, crop=CROP)
    missing = tmp_path / "run" / "pix2pix_final.pt"
    with pytest.raises(FileNotFoundError, match=f"{re.escape(str(missing))}.*--pix2pix_ckpt"):
        gan_predictors(["cGAN", "Pix2Pix"], generator=generator, checkpoints={**ok, "Pix2Pix": missing}, crop=CROP)


# ---------------------------------------------------------------------------------------------------- diffusion
class _Bias(torch.nn.Module):
    """ε_θ = b (a learned constant): the DDIM sample is then a known function of b and x_T."""

    def __init__(self) -> None:
        super().__init__()
        self.b = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.zeros_like(x) + self.b


def _inferer(kind: str, steps: int | None, total: int = 5) -> LegoPETInferer:
    scheduler = DDIMScheduler(num_train_timesteps=total) if kind == "ddim" else DDPMScheduler(num_train_timesteps=total)
    return LegoPETInferer(scheduler=scheduler, num_inference_steps=steps, guidance_scale=1.0, crop=CROP)


def test_counting_network_and_nfe(dataset):
    """With λ2 > 0 every step evaluates the network on the conditional and the null input: NFE = 2k per image."""
    predictor = DiffusionPredictor(network=_Bias(), inferer=_inferer("ddim", 3), seed=1)
    samples = load_samples(dataset, split="test")
    out = predictor(torch.stack([s.sinogram for s in samples]))
    assert out.shape == (2, 1, 172, 172)
    assert isinstance(predictor.network, CountingNetwork)
    assert predictor.network.calls == 3 and predictor.network.images / len(samples) == 6
    again = DiffusionPredictor(network=_Bias(), inferer=_inferer("ddim", 3), seed=1)
    torch.testing.assert_close(again(torch.stack([s.sinogram for s in samples])), out)  # same seed, same sample


def test_sampling_cost_rows(dataset, tmp_path):
    rows = sampling_cost(dataset, output_dir=tmp_path, network=_Bias(),
                         inferers=[_inferer("ddim", 2), _inferer("ddpm", None)], limit=1)
    assert [(r["sampler"], r["steps"], r["nfe_per_slice"]) for r in rows] == [("DDIM 2", 2, 4), ("DDPM 5", 5, 10)]
    assert all(r["seconds_per_slice"] > 0 and math.isfinite(r["PSNR"]) for r in rows)
    with pytest.raises(ValueError, match="inferers must be a non-empty sequence"):
        sampling_cost(dataset, output_dir=tmp_path, network=_Bias(), inferers={"a": _inferer("ddim", 2)})
    assert (tmp_path / "sampling_cost.md").read_text(encoding="utf-8").startswith("| Sampler | steps | NFE / slice |")


def test_training_progress_evaluates_every_checkpoint(dataset, tmp_path):
    """Two checkpoints with different ε-biases give different samples; EMA weights are the ones used."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for epoch, b in ((2, 0.0), (4, 0.3)):
        state = {"network": {"b": torch.tensor(9.0)}, "ema": {"b": torch.tensor(b)}}
        torch.save(state, ckpt / f"checkpoint_epoch={epoch}.pt")
    rows = training_progress(dataset, output_dir=tmp_path / "out", runs={"cDPM": (_Bias(), _inferer("ddim", 2), ckpt)},
                             iterations_per_epoch=3, limit=1)
    assert [(r["method"], r["epoch"], r["iteration"]) for r in rows] == [("cDPM", 2, 6), ("cDPM", 4, 12)]
    assert rows[0]["PSNR"] != rows[1]["PSNR"]

    # independent check of the first row: x_0 from a DDIM run written out by hand with ε = 0 (MONAI clips x0)
    sample = load_samples(dataset, split="test", limit=1)[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, 1, 256, 256), generator=g)
    sched = DDIMScheduler(num_train_timesteps=5)
    sched.set_timesteps(2)
    times = sched.timesteps.tolist()
    for i, t in enumerate(times):  # t_prev = the next entry of the schedule (bundle.diffusion.ddim)
        a_t = sched.alphas_cumprod[t]
        a_prev = sched.alphas_cumprod[times[i + 1]] if i + 1 < len(times) else sched.final_alpha_cumprod
        # ε = 0: x0 = clip(x_t / sqrt(ā_t), -1, 1), x_{t-1} = sqrt(ā_prev) x0
        x = a_prev.sqrt() * (x / a_t.sqrt()).clamp(-1, 1)
    image = x[0, 0, 42:214, 42:214].double().numpy() * sample.image_divisor
    ref = sample.reference.double().numpy()
    assert rows[0]["PSNR"] == pytest.approx(_numpy_psnr(image, ref), rel=1e-4)
    assert (tmp_path / "out" / "progress.png").is_file() and (tmp_path / "out" / "progress.csv").is_file()


class _Guided(torch.nn.Module):
    """ε_θ = 0.3 with the condition and 0 with the null condition (zeros), so λ2 changes the sample."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, **kwargs) -> torch.Tensor:
        conditioned = (s.flatten(1).abs().sum(1) > 0).to(x.dtype).view(-1, 1, 1, 1)
        return torch.zeros_like(x) + 0.3 * conditioned


def test_guidance_sweep_rows_nfe_and_files(dataset, tmp_path):
    """One row per (method, λ2); λ2 = 0 costs one network pass per step, λ2 > 0 two; λ2 changes the sample and
    equals a plain run of the inferer built with that λ2; the given inferer is left unchanged."""
    inferer = _inferer("ddim", 2)
    rows = guidance_sweep(dataset, output_dir=tmp_path, runs={"LegoPET": (_Guided(), inferer)},
                          guidance_scales=[0, 1.0, 3], split="test", limit=1)
    assert [(r["method"], r["guidance_scale"], r["nfe_per_slice"]) for r in rows] == [
        ("LegoPET", 0.0, 2), ("LegoPET", 1.0, 4), ("LegoPET", 3.0, 4)]
    assert len({r["PSNR"] for r in rows}) == 3 and inferer.guidance_scale == 1.0
    direct = evaluate_legopet(dataset, output_dir=tmp_path / "direct", include_osem=False, limit=1, predictors={
        "LegoPET": DiffusionPredictor(network=_Guided(), inferer=LegoPETInferer(
            scheduler=DDIMScheduler(num_train_timesteps=5), num_inference_steps=2, guidance_scale=3.0, crop=CROP))})
    assert rows[2]["PSNR"] == pytest.approx(direct["methods"]["LegoPET"]["PSNR"]["mean"], rel=1e-6)
    saved = json.loads((tmp_path / "guidance_sweep.json").read_text(encoding="utf-8"))
    assert saved["split"] == "test" and saved["best_by_psnr"]["LegoPET"] in (0.0, 1.0, 3.0)
    best = max(rows, key=lambda r: r["PSNR"])["guidance_scale"]
    assert saved["best_by_psnr"]["LegoPET"] == best
    table = (tmp_path / "guidance_sweep.md").read_text(encoding="utf-8").splitlines()
    assert table[0] == "| Method | λ2 | NFE / slice | PSNR | SSIM |" and len(table) == 5
    assert (tmp_path / "guidance_sweep.png").is_file() and (tmp_path / "guidance_sweep.csv").is_file()


def test_guidance_sweep_argument_checks(dataset, tmp_path):
    run = {"LegoPET": (_Guided(), _inferer("ddim", 2))}
    with pytest.raises(ValueError, match="guidance_scales\\[1\\] \\(λ2\\) must be a finite number >= 0"):
        guidance_sweep(dataset, output_dir=tmp_path, runs=run, guidance_scales=[0.0, -1.0], split="test")
    with pytest.raises(ValueError, match="guidance_scales must be a non-empty sequence"):
        guidance_sweep(dataset, output_dir=tmp_path, runs=run, guidance_scales=[], split="test")
    with pytest.raises(ValueError, match="runs must be a non-empty mapping"):
        guidance_sweep(dataset, output_dir=tmp_path, runs={}, guidance_scales=[1.0], split="test")
    with pytest.raises(ValueError, match="runs\\['x'\\] must be \\(network, LegoPETInferer\\)"):
        guidance_sweep(dataset, output_dir=tmp_path, runs={"x": (_Guided(),)}, guidance_scales=[1.0], split="test")
    with pytest.raises(TypeError, match="guidance_scales\\[0\\] \\(λ2\\) must be a finite number >= 0"):
        guidance_sweep(dataset, output_dir=tmp_path, runs=run, guidance_scales=["1"], split="test")


class _Draws:
    """A diffusion-like predictor returning N 'samples' per slice: constant images 0.2, 0.4, … (network units)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        _, _, h, w = CROP
        values = torch.tensor([0.2 * (k + 1) for k in range(self.count)])
        return values.reshape(1, -1, 1, 1).expand(s.shape[0], self.count, h, w).clone()


def test_n_samples_give_a_single_sample_row_a_mean_row_and_the_uncertainty_figure(dataset, tmp_path):
    """Sample 0 is the single-sample row, the mean of the N the '(mean of N)' row (both against the known constant
    images), the paired wins compare like with like, and uncertainty.png is written."""
    summary = evaluate_legopet(dataset, output_dir=tmp_path, predictors={"cDPM": _Draws(3), "LegoPET": _Draws(3)},
                               batch_size=2)
    entries = _entries(dataset, "test")
    refs = [load_image(dataset / e[Keys.REFERENCE])[0][0].numpy().astype(np.float64) for e in entries]
    for name, value in (("LegoPET", 0.2), ("LegoPET (mean of 3)", 0.4)):  # mean of 0.2, 0.4, 0.6
        expected = [_numpy_psnr(np.full_like(r, value * _image_divisor(dataset, e)), r)
                    for r, e in zip(refs, entries, strict=True)]
        assert summary["methods"][name]["PSNR"]["mean"] == pytest.approx(np.mean(expected), rel=1e-5)
    assert list(summary["methods"]) == ["OSEM", "cDPM", "cDPM (mean of 3)", "LegoPET", "LegoPET (mean of 3)"]
    assert summary["methods"]["LegoPET (mean of 3)"]["psnr_wins"]["cDPM"] == 0  # identical to cDPM (mean of 3)
    assert (tmp_path / "uncertainty.png").stat().st_size > 1000


def test_image_condition_predictors_switch_the_sampler_and_check_their_rows(tmp_path):
    """Each row copies LegoPET's sampler with the PnPNet image on (features off for the cDPM row) and loads its own
    checkpoint; unknown rows, a sampler without PnPNet and missing checkpoints are named errors."""
    from bundle.networks import LegoPETDenoiser, PnPNet
    from bundle.workflows.legopet_predictors import image_condition_predictors

    layout = {"channels": (8, 8, 8, 8), "num_res_blocks": 1, "attention_levels": (False,) * 4,
              "norm_num_groups": 8, "num_head_channels": 8}
    network = LegoPETDenoiser(**layout, condition_channels=2)
    sampler = LegoPETInferer(scheduler=DDIMScheduler(num_train_timesteps=1000), pnpnet=PnPNet(**layout))
    rows = ["cDPM + image condition", "LegoPET + image condition"]
    checkpoints = {row: tmp_path / f"{i}.pt" for i, row in enumerate(rows)}
    for path in checkpoints.values():
        torch.save({"network": network.state_dict()}, path)
    predictors = image_condition_predictors(rows, network=network, sampler=sampler, checkpoints=checkpoints,
                                            num_samples=2)
    cdpm, lego = (predictors[r].inferer for r in rows)
    assert cdpm.pnpnet_image and lego.pnpnet_image and not cdpm.pnpnet_features and lego.pnpnet_features
    assert not sampler.pnpnet_image and predictors[rows[0]].num_samples == 2  # the shared sampler is unchanged
    assert image_condition_predictors([], network=network, sampler=sampler, checkpoints={}) == {}
    with pytest.raises(ValueError, match="extension_rows must name distinct rows among"):
        image_condition_predictors(["LegoPET"], network=network, sampler=sampler, checkpoints=checkpoints)
    with pytest.raises(ValueError, match="need LegoPET's sampler with its PnPNet"):
        image_condition_predictors(rows, network=network, sampler=LegoPETInferer(scheduler=DDIMScheduler()),
                                   checkpoints=checkpoints)
    with pytest.raises(FileNotFoundError, match=r"extension_rows requests the cDPM \+ image condition row"):
        image_condition_predictors(rows, network=network, sampler=sampler,
                                   checkpoints={**checkpoints, rows[0]: tmp_path / "missing.pt"})
