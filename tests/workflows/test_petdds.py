"""PET-DDS-δ workflows on a tiny petdds dataset: rebuilt forward model, evaluation table, studies, inference config.

The MNI152 head does not fit ``tiny_3d``'s 120 mm field of view (μ > 0 in every voxel), so the dataset uses
``small_3d`` (256 mm FOV) with reduced counts, 1 test subject (no training subject: nothing here trains; it saves
a third of the suite's build time) and 2 low-count realisations.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from bundle.app.petdds import reconstruct_petdds_file
from bundle.data.build import build_dataset
from bundle.data.io import load_image
from bundle.data.petdds import PETDDSCase, PETDDSDataset, load_petdds_case
from bundle.inferers.petdds import default_inferer
from bundle.metrics import image_metrics
from bundle.workflows.petdds import METHODS, SAMPLE_SEED_STRIDE, evaluate_petdds, mean_label, sample_seeds
from bundle.workflows.petdds_studies import (
    bias_variance_study,
    count_sweep,
    sweep_expectation,
    sweep_seed,
    uncertainty_study,
)
from bundle.workflows.petdds_tuning import tune_petdds

ROOT = Path(__file__).resolve().parents[2]
HEADER = "| method | NRMSE | PSNR | SSIM |"
FULL_COUNTS = 3e6
TINY_NET = ["--network_def#channels", "[8,16,16]", "--network_def#num_head_channels", "8",
            "--network_def#norm_num_groups", "8"]


def _tiny_network() -> DiffusionModelUNet:
    torch.manual_seed(0)
    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 16, 16),
                              attention_levels=(False, False, False), num_res_blocks=1, num_head_channels=8,
                              norm_num_groups=8)


def _tiny_inferer():
    return default_inferer(num_subsets=4, num_inference_steps=2, steps_per_diffusion_step=1, osem_iterations=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("petdds") / "data"
    build_dataset("petdds", output=out, seed=0, progress=False, subjects=1, split=(0, 0, 1), realisations=2,
                  full_counts=FULL_COUNTS, osem_subsets=4, osem_iterations=1)
    return out


def _test_entry(dataset: Path) -> dict:
    return json.loads((dataset / "datalist.json").read_text(encoding="utf-8"))["test"][0]


def test_rebuilt_model_reproduces_the_stored_expectation(dataset):
    entry = _test_entry(dataset)
    activity, _ = load_image(dataset / entry["activity"])
    full = load_petdds_case(dataset, entry["id"], low_index=None)
    assert isinstance(full, PETDDSCase)
    counts, model, reference, mask = full
    assert counts.shape == model.projector.out_shape == (64, 128, 96)
    assert model.attenuation_factors is None and reference.shape == mask.shape == (8, 64, 64)
    assert mask.dtype == torch.bool and 0 < int(mask.sum()) < mask.numel()  # the head, not the whole image
    expected = float(model.expectation(activity).double().sum())
    assert abs(expected - FULL_COUNTS) < 1e-3 * FULL_COUNTS  # Σȳ = the simulated total
    assert abs(float(counts.double().sum()) - expected) < 5 * math.sqrt(expected)  # Poisson noise
    low = load_petdds_case(dataset, entry, low_index=1)
    expected_low = float(low.model.expectation(activity).double().sum())
    assert abs(expected_low - 0.01 * expected) < 1e-3 * expected_low  # background and c scaled by f = 1 %
    assert abs(float(low.counts.double().sum()) - expected_low) < 5 * math.sqrt(expected_low)


def test_load_case_argument_errors(dataset, tmp_path):
    entry = _test_entry(dataset)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((64, 128, 95), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(64, 128, 95\).*\(64, 128, 96\)"):
        load_petdds_case(dataset, {**entry, "sinogram_low": [str(bad)]}, low_index=0)
    with pytest.raises(ValueError, match="low_index must be < 2"):
        load_petdds_case(dataset, entry, low_index=2)
    with pytest.raises(TypeError, match="low_index must be an int"):
        load_petdds_case(dataset, entry, low_index=True)
    with pytest.raises(ValueError, match="no sample with id 'nope'"):
        load_petdds_case(dataset, "nope")
    with pytest.raises(TypeError, match="entry must be"):
        load_petdds_case(dataset, 3)
    with pytest.raises(FileNotFoundError, match="build the dataset first"):
        load_petdds_case(tmp_path / "missing", entry)


def test_evaluate_argument_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        evaluate_petdds(dataset, output_dir=tmp_path, methods=["FBP"])
    with pytest.raises(ValueError, match="no network"):
        evaluate_petdds(dataset, output_dir=tmp_path, methods=["PET-DDS-δ"])
    with pytest.raises(ValueError, match=r"osem\[0\] \(subsets\) must be >= 1"):
        evaluate_petdds(dataset, output_dir=tmp_path, osem=(0, 2))
    with pytest.raises(ValueError, match="realisations must be <= 2"):
        evaluate_petdds(dataset, output_dir=tmp_path, realisations=3)
    with pytest.raises(ValueError, match="map_em_beta"):
        evaluate_petdds(dataset, output_dir=tmp_path, map_em_beta=-1.0)
    with pytest.raises(TypeError, match="inferer must be a PETDDSInferer"):
        evaluate_petdds(dataset, output_dir=tmp_path, inferer="ddim")
    with pytest.raises(ValueError, match="split 'validation'"):
        evaluate_petdds(dataset, output_dir=tmp_path, split="validation")
    with pytest.raises(ValueError, match="deltas must be > 0"):
        bias_variance_study(dataset, output_dir=tmp_path, deltas=(0.0,))
    with pytest.raises(ValueError, match="needs >= 2 realisations"):
        bias_variance_study(dataset, output_dir=tmp_path, realisations=1)
    with pytest.raises(ValueError, match="seeds must hold >= 2"):
        uncertainty_study(dataset, network=_tiny_network(), output_dir=tmp_path, seeds=[3])


def test_osem_only_evaluation_writes_table_csv_images_and_figures(dataset, tmp_path):
    result = evaluate_petdds(dataset, output_dir=tmp_path, methods=["OSEM"], osem=(4, 1))
    lines = result["table"].splitlines()
    assert lines[0] == HEADER
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| OSEM"]
    assert (tmp_path / "table.md").read_text(encoding="utf-8").startswith(result["table"])
    rows = list(csv.DictReader((tmp_path / "per_case.csv").open(encoding="utf-8")))
    assert len(rows) == 2  # 1 test subject × 2 realisations × 1 method
    for row in rows:
        values = [float(row[k]) for k in ("NRMSE", "PSNR", "SSIM", "time_s")]
        assert all(math.isfinite(v) for v in values)
        assert 0 < values[0] < 100 and values[1] > 0 and 0 < values[2] <= 100
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["summary"]) == {"OSEM"} and summary["settings"]["mask"].startswith("mu_map > 0")
    assert summary["summary"]["OSEM"]["n"] == 2 and summary["summary"]["OSEM"]["PSNR"]["std"] > 0
    assert len(list((tmp_path / "reconstructions").glob("*.nii.gz"))) == 2
    assert len(result["files"]["figures"]) == 1 and Path(result["files"]["figures"][0]).stat().st_size > 0


def test_petdds_metric_convention_gives_nrmse_and_ssim_in_percent(dataset, tmp_path):
    options = {"methods": ["OSEM"], "osem": (4, 1), "realisations": 1, "save_images": False, "figures": False}
    default = evaluate_petdds(dataset, output_dir=tmp_path / "default", **options)
    percent = evaluate_petdds(dataset, output_dir=tmp_path / "percent", metric_convention="petdds", **options)
    a, b = default["rows"][0], percent["rows"][0]
    assert (b["NRMSE"], b["SSIM"], b["PSNR"]) == pytest.approx((100 * a["NRMSE"], 100 * a["SSIM"], a["PSNR"]))
    assert default["settings"]["units"]["SSIM"] == "fraction" and percent["settings"]["units"]["NRMSE"] == "%"
    assert "NRMSE and SSIM in %" in (tmp_path / "percent" / "table.md").read_text(encoding="utf-8")


def test_evaluation_with_an_untrained_network_adds_the_petdds_row(dataset, tmp_path):
    result = evaluate_petdds(dataset, output_dir=tmp_path, network=_tiny_network(), inferer=_tiny_inferer(),
                             osem=(4, 1), map_em_iterations=1, realisations=1)
    lines = result["table"].splitlines()
    assert lines[0] == HEADER
    assert [line.split(" | ")[0] for line in lines[2:]] == [f"| {m}" for m in METHODS]
    assert result["settings"]["map_em_beta_absolute"]  # the relative β was converted and recorded
    row = next(r for r in result["rows"] if r["method"] == "PET-DDS-δ")
    assert all(math.isfinite(row[k]) for k in ("NRMSE", "PSNR", "SSIM"))
    assert 0 < row["network_s"] < row["time_s"] and row["projector_s"] > 0 and row["other_s"] > 0
    assert row["network_s"] + row["projector_s"] + row["other_s"] == pytest.approx(row["time_s"])
    image, _ = load_image(tmp_path / "reconstructions" / f"{row['subject']}_r00_pet_dds_delta.nii.gz")
    assert image.shape == (8, 64, 64) and bool((image >= 0).all())


def test_bias_variance_study_gives_one_point_per_setting(dataset, tmp_path):
    network = _tiny_network()
    result = bias_variance_study(dataset, output_dir=tmp_path, betas=(0.01,), map_em_iterations=(1, 2),
                                 num_subsets=4, network=network, inferer=_tiny_inferer(), deltas=(0.5,),
                                 lambda_rdps=(0.0, 5.0))
    points = result["points"]
    assert len(points) == 1 * 2 + 1 + 2  # one point per (β, iterations), per δ and per λ_RDP
    assert [(p["beta"], p["iterations"]) for p in points[:2]] == [(0.01, 1), (0.01, 2)]
    assert [p["method"] for p in points] == ["MAP-EM", "MAP-EM"] + ["PET-DDS-δ"] * 3 and points[2]["delta"] == 0.5
    assert [(p["varied"], p["lambda_rdp"]) for p in points[3:]] == [("lambda_rdp", 0.0), ("lambda_rdp", 5.0)]
    assert points[3]["delta"] == points[4]["delta"] == _tiny_inferer().delta
    assert points[3]["normalised_std"] != points[4]["normalised_std"]  # the axial coupling acts
    assert all(p["normalised_bias"] > 0 and p["normalised_std"] > 0 for p in points)
    assert json.loads((tmp_path / "bias_variance.json").read_text(encoding="utf-8"))["points"] == points
    assert (tmp_path / "bias_variance.png").stat().st_size > 0


def test_uncertainty_study_writes_mean_cv_and_panel(dataset, tmp_path):
    network = _tiny_network()
    unc = uncertainty_study(dataset, network=network, output_dir=tmp_path, inferer=_tiny_inferer(), seeds=2)
    cv, _ = load_image(Path(unc["files"]["cv"]))
    assert cv.shape == (8, 64, 64) and bool(torch.isfinite(cv).all()) and unc["mean_cv_in_mask"] >= 0
    assert Path(unc["files"]["figure"]).stat().st_size > 0


def test_inference_config_reconstructs_a_sinogram_with_a_checkpoint(dataset, tmp_path):
    entry = _test_entry(dataset)
    checkpoint = tmp_path / "model.pt"
    torch.save({"network": _tiny_network().state_dict()}, checkpoint)
    output = tmp_path / "recon.nii.gz"
    configs = "[" + ",".join(f"'{ROOT / 'configs' / f}'" for f in
                             ("common.json", "petdds/network.json", "petdds/inference.json")) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", configs,
               "--dataset_dir", str(dataset), "--bundle_root", str(tmp_path), "--checkpoint", str(checkpoint),
               "--case_id", entry["id"],
               "--sinogram_file", str(dataset / entry["sinogram_low"][0]), "--output_file", str(output),
               "--num_inference_steps", "2", "--steps_per_diffusion_step", "1", "--num_subsets", "4",
               "--osem_iterations", "1", *TINY_NET]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    image, _ = load_image(output)
    assert image.shape == (8, 64, 64) and bool(torch.isfinite(image).all()) and float(image.sum()) > 0



def test_reconstruct_file_with_two_samples_writes_their_mean_and_cv(dataset, tmp_path):
    entry = _test_entry(dataset)
    options = {"case": entry["id"], "sinogram": dataset / entry["sinogram_low"][0], "network": _tiny_network(),
               "inferer": _tiny_inferer()}
    singles = [load_image(reconstruct_petdds_file(dataset, output_file=tmp_path / f"s{seed}.nii.gz", seed=seed,
                                                  **options))[0].double() for seed in (5, 6)]
    output = reconstruct_petdds_file(dataset, output_file=tmp_path / "mean.nii.gz", seed=5, samples=2, **options)
    assert not (tmp_path / "s5_cv.nii.gz").exists()  # one sample: no CV
    stacked = torch.stack(singles)
    torch.testing.assert_close(load_image(output)[0].double(), stacked.mean(0), rtol=1e-5, atol=1e-6)
    expected_cv = torch.where(stacked.mean(0) > 0, stacked.std(0, correction=0) / stacked.mean(0), 0.0)
    cv, _ = load_image(tmp_path / "mean_cv.nii.gz")
    torch.testing.assert_close(cv.double(), expected_cv, rtol=1e-4, atol=1e-5)

def test_evaluate_config_resolves_both_entries_and_matches_the_training_schedule():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    files = ("common.json", "petdds/network.json", "petdds/evaluate.json")
    parser.read_config([str(ROOT / "configs" / f) for f in files])
    assert "run" not in parser.config  # every id is named: `monai.bundle run` without one must fail, not guess
    assert "network=@trained_network" in parser["evaluating"][0] and "network=" not in parser["evaluating_baselines"][0]
    for entry, function in (("bias_variance", "bias_variance_study"), ("uncertainty", "uncertainty_study")):
        assert f"petdds_studies.{function}(" in parser[entry][0] and "network=@trained_network" in parser[entry][0]
    assert parser.get_parsed_content("bias_variance_deltas") == [0.1, 0.2, 0.5]
    assert "samples=@petdds_samples" in parser["evaluating"][0] and parser["petdds_samples"] == 4
    assert "petdds_studies.count_sweep(" in parser["count_sweep"][0]
    assert parser.get_parsed_content("count_sweep_fractions") == [0.005, 0.01, 0.02, 0.05, 0.1]
    assert "petdds_tuning.tune_petdds(" in parser["tuning"][0] and "network=@trained_network" in parser["tuning"][0]
    assert "network=" not in parser["tuning_baselines"][0] and parser["tuning_split"] == "validation"
    assert parser.get_parsed_content("tuning_num_inference_steps") == [parser.get_parsed_content("num_inference_steps")]
    inferer = parser.get_parsed_content("petdds_inferer")
    training = parser.get_parsed_content("scheduler")
    assert inferer.num_subsets == 21 and torch.equal(inferer.scheduler.alphas_cumprod, training.alphas_cumprod)


# ------------------------------------------------------------------------------------- N samples: mean and CV


def test_sample_seeds_are_distinct_and_sample_zero_is_the_single_sample_seed():
    assert sample_seeds(7, 0, 1) == [7]
    assert sample_seeds(7, 2, 3) == [9, 9 + SAMPLE_SEED_STRIDE, 9 + 2 * SAMPLE_SEED_STRIDE]
    seeds = [s for r in range(5) for s in sample_seeds(0, r, 4)]
    assert len(set(seeds)) == len(seeds)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        sample_seeds(0, 0, 0)


def test_evaluation_with_two_samples_scores_their_mean_and_saves_the_cv(dataset, tmp_path):
    network, inferer = _tiny_network(), _tiny_inferer()
    options = {"network": network, "inferer": inferer, "methods": ["PET-DDS-δ"], "osem": (4, 1), "realisations": 1}
    result = evaluate_petdds(dataset, output_dir=tmp_path / "two", samples=2, **options)
    single = evaluate_petdds(dataset, output_dir=tmp_path / "one", figures=False, **options)
    label = mean_label(2)
    assert label == "PET-DDS-δ (mean of 2)"
    assert [line.split(" | ")[0] for line in result["table"].splitlines()[2:]] == ["| PET-DDS-δ", f"| {label}"]
    rows = {row["method"]: row for row in result["rows"]}
    # sample 0 is the single-sample reconstruction: old numbers stay comparable
    assert rows["PET-DDS-δ"]["NRMSE"] == single["rows"][0]["NRMSE"]
    folder, subject = tmp_path / "two" / "reconstructions", rows["PET-DDS-δ"]["subject"]
    first, _ = load_image(folder / f"{subject}_r00_pet_dds_delta.nii.gz")
    second, _ = load_image(folder / f"{subject}_r00_pet_dds_delta_sample01.nii.gz")
    mean, _ = load_image(folder / f"{subject}_r00_pet_dds_delta_mean.nii.gz")
    cv, _ = load_image(folder / f"{subject}_r00_pet_dds_delta_cv.nii.gz")
    assert not torch.equal(first, second)  # distinct seeds
    stacked = torch.stack([first, second]).double()
    torch.testing.assert_close(mean.double(), stacked.mean(0), rtol=1e-6, atol=1e-6)
    expected_cv = torch.where(stacked.mean(0) > 0, stacked.std(0, correction=0) / stacked.mean(0), 0.0)
    torch.testing.assert_close(cv.double(), expected_cv, rtol=1e-4, atol=1e-5)
    case = load_petdds_case(dataset, subject, low_index=0)
    scores = image_metrics(stacked.mean(0).float(), case.reference, mask=case.mask)
    assert rows[label]["NRMSE"] == pytest.approx(scores["NRMSE"], rel=1e-5)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text(encoding="utf-8"))
    timings = summary["sample_timings"][f"{subject}/0"]
    assert len(timings) == 2 and rows[label]["time_s"] == pytest.approx(sum(t["time_s"] for t in timings))
    assert summary["settings"]["samples"] == 2 and Path(result["files"]["figures"][0]).stat().st_size > 0


# ------------------------------------------------------------------------------------------------ count sweep


def test_sweep_expectation_is_the_stored_model_scaled_by_g_over_f(dataset):
    ds = PETDDSDataset.open(dataset)
    entry = _test_entry(dataset)
    activity, _ = load_image(dataset / entry["activity"])
    f = float(entry["low_count_fraction"])
    _, at_f = sweep_expectation(ds, entry, activity, f)
    _, at_g = sweep_expectation(ds, entry, activity, 0.05)
    torch.testing.assert_close(at_g.double(), (0.05 / f) * at_f.double(), rtol=1e-5, atol=1e-6)
    # the builder's realisations are Poisson draws of the expectation at f: their mean matches it within noise
    stored = torch.stack([ds.load_array(p, "sinogram") for p in entry["sinogram_low"]]).double().mean(0)
    total = float(at_f.double().sum())
    assert abs(float(stored.sum()) - total) < 5 * math.sqrt(total / len(entry["sinogram_low"]))
    planes = at_f.double().sum((1, 2))  # and plane by plane (64 planes, 5σ each)
    assert bool(((stored.sum((1, 2)) - planes).abs() < 5 * (planes / 2).sqrt() + 1).all())
    seeds = {sweep_seed(0, i, j) for i in range(3) for j in range(5)}
    assert len(seeds) == 15 and sweep_seed(0, 1, 2) == sweep_seed(0, 1, 2)


def test_count_sweep_writes_json_table_and_figure(dataset, tmp_path):
    result = count_sweep(dataset, output_dir=tmp_path, fractions=(0.01, 0.1), realisations=2, osem=(4, 2),
                         map_em_iterations=1, network=_tiny_network(), inferer=_tiny_inferer())
    rows = result["rows"]
    assert len(rows) == 1 * 2 * 2 * 3  # subject × fraction × realisation × method
    osem_rows = [r for r in rows if r["method"] == "OSEM"]
    assert osem_rows[0]["NRMSE"] != osem_rows[1]["NRMSE"]  # independent realisations
    summary = result["summary"]
    assert summary["0.1"]["OSEM"]["NRMSE"]["mean"] < summary["0.01"]["OSEM"]["NRMSE"]["mean"]  # 10× the counts
    assert set(summary["0.01"]) == {"OSEM", "MAP-EM", "PET-DDS-δ"} and summary["0.01"]["MAP-EM"]["n"] == 2
    table = (tmp_path / "sweep.md").read_text(encoding="utf-8")
    assert "| 1 % | OSEM |" in table and "| 10 % | PET-DDS-δ |" in table
    assert json.loads((tmp_path / "sweep.json").read_text(encoding="utf-8"))["summary"] == summary
    assert (tmp_path / "sweep.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"fractions\[0\] must be a finite number in \(0, 1\]"):
        count_sweep(dataset, output_dir=tmp_path, fractions=(0.0,))


# ----------------------------------------------------------------------------------------------------- tuning


@pytest.fixture()
def validation_only(dataset, tmp_path) -> Path:
    """The fixture's subject as the only validation subject; the test split points at files that do not exist, so
    reading it would raise."""
    root = tmp_path / "validation_only"
    shutil.copytree(dataset, root)
    entry = _test_entry(dataset)
    missing = {k: f"missing/{k}.npy" for k in ("sinogram_high", "multiplicative_factors", "background_full")}
    test_entry = {**entry, "id": "never_read", **missing, "sinogram_low": ["missing/low.npy"],
                  "reference": "missing/ref.nii.gz", "mu_map": "missing/mu.nii.gz", "activity": "missing/a.nii.gz"}
    (root / "datalist.json").write_text(json.dumps({"training": [], "validation": [entry], "test": [test_entry]}),
                                        encoding="utf-8")
    return root


def test_tuning_picks_the_argmin_of_mean_nrmse_and_records_failures(validation_only, tmp_path):
    result = tune_petdds(validation_only, output_dir=tmp_path, network=_tiny_network(), inferer=_tiny_inferer(),
                         lambda_rdp=(0.0, 0.5), lambda_dds=(0.5,), delta=(0.5,), num_inference_steps=(1, 2),
                         map_em_betas=(0.001, 1e4), map_em_iterations=(1, 2), realisations=2, osem=(4, 1))
    points = json.loads((tmp_path / "tune.json").read_text(encoding="utf-8"))["points"]
    validation = json.loads((validation_only / "datalist.json").read_text(encoding="utf-8"))["validation"]
    assert {p["subject"] for p in points} == {validation[0]["id"]}  # never the test split
    dds = [p for p in points if p["method"] == "PET-DDS-δ"]
    assert len(dds) == 2 * 2 * 2 and all("error" not in p for p in dds)  # grid × realisations

    def mean_nrmse(method, keys, setting):
        chosen = [p["NRMSE"] for p in points if p["method"] == method and tuple(p[k] for k in keys) == setting]
        return sum(chosen) / len(chosen)

    keys = ("lambda_rdp", "lambda_dds", "delta", "num_inference_steps")
    settings = {tuple(p[k] for k in keys) for p in dds}
    best = min(settings, key=lambda s: mean_nrmse("PET-DDS-δ", keys, s))
    written = json.loads((tmp_path / "best.json").read_text(encoding="utf-8"))
    assert written == result["best"] and tuple(written["pet_dds"][k] for k in keys) == best
    failed = [p for p in points if p["method"] == "MAP-EM" and p["beta"] == 1e4]
    assert failed and all("one-step-late" in p["error"] for p in failed)  # recorded, not fatal
    ok = {(p["beta"], p["iterations"]) for p in points if p["method"] == "MAP-EM" and "error" not in p}
    assert ok == {(0.001, 1), (0.001, 2)}
    chosen = min(ok, key=lambda s: mean_nrmse("MAP-EM", ("beta", "iterations"), s))
    assert (written["map_em"]["beta"], written["map_em"]["iterations"]) == chosen
    table = (tmp_path / "tune.md").read_text(encoding="utf-8")
    assert "| OSEM |" in table and "failed: " in table
    with pytest.raises(ValueError, match="split must not be 'test'"):
        tune_petdds(validation_only, output_dir=tmp_path, split="test")


def test_tuning_without_a_network_tunes_map_em_only(validation_only, tmp_path):
    result = tune_petdds(validation_only, output_dir=tmp_path, map_em_betas=(0.001,), map_em_iterations=(1,),
                         osem=(4, 1))
    assert result["best"] == {"pet_dds": None, "map_em": {"beta": 0.001, "iterations": 1}}
    assert not [p for p in result["points"] if p["method"] == "PET-DDS-δ"]
