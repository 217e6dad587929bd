"""bundle.app infer tasks: request -> (NIfTI file, result JSON) for PET-DDS-δ and LegoPET with tiny random weights."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.app import build_task
from bundle.app.cli import main, parse_overrides
from bundle.checkpoint import CheckpointError, shipped_weights

from .conftest import LEGOPET_TINY, PETDDS_TINY


@pytest.fixture(scope="module")
def petdds_task(petdds_files):
    return build_task("petdds", checkpoint=petdds_files["checkpoint"], overrides=PETDDS_TINY)


@pytest.fixture(scope="module")
def legopet_task(legopet_files):
    return build_task("legopet", checkpoint=legopet_files["checkpoint"], overrides=LEGOPET_TINY)


def test_petdds_request_to_nifti_and_json(petdds_task, petdds_files, tmp_path):
    request = {"image": str(petdds_files["sinogram"]), "normalisation": str(petdds_files["normalisation"]),
               "background": 0.5, "output": str(tmp_path / "recon.nii.gz"), "seed": 3}
    path, result = petdds_task(request)
    image = np.asarray(nib.load(path).dataobj)
    assert image.shape == (40, 40, 8)  # (x, y, z) of tiny_3d's (8, 40, 40) (z, y, x)
    assert np.isfinite(image).all() and image.min() >= 0
    assert result["method"] == "petdds" and result["file"] == path and result["seed"] == 3
    assert result["shape_zyx"] == [8, 40, 40] and result["voxel_size_mm"] == [2.0, 3.0, 3.0]
    assert json.loads(json.dumps(result))["latencies_s"]["total"] > 0
    again, _ = petdds_task({**request, "output": str(tmp_path)})  # a folder: <stem>_<method>.nii.gz inside it
    assert again.endswith("sino_petdds.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(again).dataobj), image)  # same seed, same image



def test_petdds_samples_write_their_mean_and_the_cv(petdds_task, petdds_files, tmp_path):
    request = {"image": str(petdds_files["sinogram"]), "normalisation": str(petdds_files["normalisation"]),
               "background": 0.5, "seed": 3}
    singles = []
    for seed in (3, 4):  # sample k of seed s uses seed s + k
        path, result = petdds_task({**request, "seed": seed, "output": str(tmp_path / f"one_{seed}.nii.gz")})
        singles.append(np.asarray(nib.load(path).dataobj, dtype=np.float64))
        assert result["samples"] == 1 and "cv_file" not in result
    path, result = petdds_task({**request, "samples": 2, "output": str(tmp_path / "two.nii.gz")})
    assert result["samples"] == 2 and result["sample_seeds"] == [3, 4] and result["image_is"] == "mean of the samples"
    assert result["cv_file"] == str(tmp_path / "two_cv.nii.gz")
    stacked = np.stack(singles)
    np.testing.assert_allclose(np.asarray(nib.load(path).dataobj), stacked.mean(0), rtol=1e-5, atol=1e-6)
    mean = stacked.mean(0)
    cv = np.where(mean > 0, stacked.std(0) / np.where(mean > 0, mean, 1.0), 0.0)
    np.testing.assert_allclose(np.asarray(nib.load(result["cv_file"]).dataobj), cv, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"request\['samples'\] must be >= 1"):
        petdds_task({**request, "samples": 0, "output": str(tmp_path / "zero.nii.gz")})

def test_a_failed_request_leaves_no_temporary_file(petdds_task, petdds_files, tmp_path, monkeypatch):
    """Without ``output`` the result goes to a new temporary file; a request that fails after it was made (here
    in the inferer) removes it again instead of leaving an empty bundle_petdds_*.nii.gz behind."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken(data):
        raise RuntimeError("inferer failed")

    monkeypatch.setattr(petdds_task, "run_inferer", broken)
    request = {"image": str(petdds_files["sinogram"]), "normalisation": str(petdds_files["normalisation"]),
               "background": 0.5}
    with pytest.raises(RuntimeError, match="inferer failed"):
        petdds_task(request)
    assert list(tmp_path.iterdir()) == []


def test_legopet_request_to_nifti(legopet_task, legopet_files, tmp_path):
    path, result = legopet_task({"image": str(legopet_files["sinogram"]), "count_scale": 0.25,
                                 "output": str(tmp_path / "slice.nii")})
    assert np.asarray(nib.load(path).dataobj).shape == (64, 64, 1)
    assert result["shape_zyx"] == [1, 64, 64]
    with pytest.raises(ValueError, match=r"request\['count_scale'\] is required"):
        legopet_task({"image": str(legopet_files["sinogram"]), "output": str(tmp_path / "x.nii")})


def test_legopet_samples_write_their_mean_and_standard_deviation(legopet_task, legopet_files, tmp_path):
    """N = 2: the output is the mean M of samples A (the single sample of the same seed) and B, and the std file
    the sample standard deviation |A − B| / √2 = √2 |M − A|: both checked against a one-sample request."""
    request = {"image": str(legopet_files["sinogram"]), "count_scale": 0.25, "seed": 3}
    single, one = legopet_task({**request, "samples": 1, "output": str(tmp_path / "one.nii.gz")})
    assert one["samples"] == 1 and "std_file" not in one
    path, result = legopet_task({**request, "samples": 2, "output": str(tmp_path / "two.nii.gz")})
    assert result["samples"] == 2 and result["std_file"] == str(tmp_path / "two_std.nii.gz")
    a = np.asarray(nib.load(single).dataobj)
    mean = np.asarray(nib.load(path).dataobj)
    np.testing.assert_allclose(np.asarray(nib.load(result["std_file"]).dataobj), np.sqrt(2) * np.abs(mean - a),
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(mean, a)


@pytest.mark.parametrize(
    ("request_", "error", "match"),
    [
        ({"background": 1.0}, ValueError, r"request\['image'\] is required for method 'petdds'"),
        ({"image": "missing.npy", "background": 1.0}, FileNotFoundError, r"request\['image'\] must be a \.npy"),
        ({"image": "SINO", "background": 1.0, "colour": 1}, ValueError, r"unknown keys \['colour'\]"),
        ({"image": "SINO", "background": 1.0, "output": "out.png"}, ValueError, r"output must end with \.nii"),
        ({"image": "SINO", "background": 1.0, "seed": -1}, ValueError, r"seed must be an int >= 0, got -1"),
        ({"image": "SINO", "background": -2.0}, ValueError, r"background must be a finite number >= 0"),
        ({"image": "SINO", "background": 1.0, "scanner_preset": "mmr_2d"}, ValueError, r"has shape \(16, 64, 64\)"),
        ({"image": "SINO", "background": 1.0, "scanner_preset": "nope"}, ValueError, r"scanner_preset must be one"),
        ({"image": "SINO", "background": 1.0, "fwhm_mm": -1}, ValueError, r"fwhm_mm must be a finite number"),
    ],
)
def test_petdds_request_errors_name_the_key(petdds_task, petdds_files, request_, error, match):
    request = {k: (str(petdds_files["sinogram"]) if v == "SINO" else v) for k, v in request_.items()}
    with pytest.raises(error, match=match):
        petdds_task(request)
    with pytest.raises(TypeError, match="request must be a dict"):
        petdds_task(["image"])


def test_wrong_architecture_checkpoint_is_a_clear_error(petdds_files):
    with pytest.raises(CheckpointError, match=r"model\.pt: entry 'network' does not fit"):
        build_task("petdds", checkpoint=petdds_files["checkpoint"],
                   overrides={**PETDDS_TINY, "network_def#channels": [16, 16], "network_def#num_head_channels": 16})


def test_build_task_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"method must be one of \['legopet', 'petdds', 'upete'\], got 'deeppet'"):
        build_task("deeppet")


def test_cli_petdds_writes_nifti_and_sidecar(petdds_files, tmp_path, capsys):
    output = tmp_path / "cli.nii.gz"
    overrides = [f"--override={k}={json.dumps(v)}" for k, v in PETDDS_TINY.items()]
    status = main(["infer", "--method", "petdds", "--image", str(petdds_files["sinogram"]), "--background", "0.5",
                   "--output", str(output), "--checkpoint", str(petdds_files["checkpoint"]), *overrides])
    assert status == 0, capsys.readouterr().err
    assert output.is_file()
    sidecar = json.loads((tmp_path / "cli.nii.gz.json").read_text(encoding="utf-8"))  # <output>.json
    assert sidecar["file"] == str(output) and json.loads(capsys.readouterr().out) == sidecar
    # nothing is overwritten without --overwrite: neither the image, nor a user's file of the sidecar's name
    before = output.read_bytes()
    status = main(["infer", "--method", "petdds", "--image", str(petdds_files["sinogram"]), "--background", "0.5",
                   "--output", str(output), "--checkpoint", str(petdds_files["checkpoint"]), "--seed", "5",
                   *overrides])
    assert status == 2 and "output files exist" in capsys.readouterr().err and output.read_bytes() == before
    status = main(["infer", "--method", "petdds", "--image", str(petdds_files["sinogram"]), "--background", "0.5",
                   "--output", str(output), "--checkpoint", str(petdds_files["checkpoint"]), "--seed", "5",
                   "--overwrite", *overrides])
    assert status == 0 and output.read_bytes() != before
    capsys.readouterr()
    # --samples 2: the mean of seeds 0 and 1 and the CV file beside it, as the task's own request key
    status = main(["infer", "--method", "petdds", "--image", str(petdds_files["sinogram"]), "--background", "0.5",
                   "--output", str(tmp_path / "two.nii.gz"), "--checkpoint", str(petdds_files["checkpoint"]),
                   "--samples", "2", *overrides])
    assert status == 0, capsys.readouterr().err
    sidecar = json.loads((tmp_path / "two.nii.gz.json").read_text(encoding="utf-8"))
    assert sidecar["samples"] == 2 and sidecar["sample_seeds"] == [0, 1] and Path(sidecar["cv_file"]).is_file()


def test_cli_errors_exit_2_with_the_argument_named(petdds_files, tmp_path, capsys):
    status = main(["infer", "--method", "petdds", "--image", str(petdds_files["sinogram"]), "--count-scale", "1",
                   "--output", str(tmp_path / "x.nii.gz")])
    assert status == 2 and "--count-scale applies to --method legopet only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["infer", "--method", "nope", "--image", "x", "--output", "y"])


def test_unknown_override_is_rejected_with_a_suggestion(petdds_files):
    with pytest.raises(ValueError, match=r"'num_inference_step': .*not an id.*did you mean 'num_inference_steps'"):
        build_task("petdds", checkpoint=petdds_files["checkpoint"], overrides={**PETDDS_TINY, "num_inference_step": 3})


def test_parse_overrides():
    assert parse_overrides(["a#b=[1,2]", "c=text", "d=null"]) == {"a#b": [1, 2], "c": "text", "d": None}
    with pytest.raises(ValueError, match="--override must be KEY=VALUE"):
        parse_overrides(["novalue"])


def test_network_runs_on_the_task_device(petdds_task):
    assert next(petdds_task.network.parameters()).device == torch.device("cpu")
    request = petdds_task.info()["request"]
    assert request["image"]["required"] is False and "sample" in request  # image, or a dataset sample folder
    with pytest.raises(ValueError, match=r"request\['image'\] is required .*or give request\['sample'\]"):
        petdds_task.validate_request({"background": 1.0})


def test_petdds_default_checkpoint_is_the_shipped_score_model():
    """Without --checkpoint the task loads models/petdds_score.pt (sha256-verified), not a training folder."""
    task = build_task("petdds", overrides={"device": "cpu"})
    assert task.checkpoint == str(shipped_weights("petdds_score"))
    stored = torch.load(task.checkpoint, weights_only=True)["network"]
    loaded = task.network.state_dict()
    assert loaded.keys() == stored.keys() and all(torch.equal(loaded[k], stored[k]) for k in stored)
