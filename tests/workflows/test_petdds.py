"""PET-DDS-δ workflows on a tiny petdds dataset: rebuilt forward model, evaluation table, studies, inference config.

The MNI152 head does not fit ``tiny_3d``'s 120 mm field of view (μ > 0 in every voxel), so the dataset uses
``small_3d`` (256 mm FOV) with reduced counts, 1 test subject (no training subject: nothing here trains; it saves
a third of the suite's build time) and 2 low-count realisations.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from bundle.data.build import build_dataset
from bundle.data.io import load_image
from bundle.data.petdds import PETDDSCase, load_petdds_case
from bundle.inferers.petdds import default_inferer
from bundle.workflows.petdds import METHODS, evaluate_petdds
from bundle.workflows.petdds_studies import bias_variance_study, uncertainty_study

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
                                 num_subsets=4, network=network, inferer=_tiny_inferer(), deltas=(0.5,))
    points = result["points"]
    assert len(points) == 1 * 2 + 1  # one point per (β, iterations) and per δ
    assert [(p["beta"], p["iterations"]) for p in points[:2]] == [(0.01, 1), (0.01, 2)]
    assert [p["method"] for p in points] == ["MAP-EM", "MAP-EM", "PET-DDS-δ"] and points[2]["delta"] == 0.5
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
    inferer = parser.get_parsed_content("petdds_inferer")
    training = parser.get_parsed_content("scheduler")
    assert inferer.num_subsets == 21 and torch.equal(inferer.scheduler.alphas_cumprod, training.alphas_cumprod)
