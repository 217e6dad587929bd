"""uPETe from the combined checkpoint of a tiny trained run: same output as the separately loaded variant, the
command line end to end, and the errors for a missing or incomplete checkpoint."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.app import build_task
from bundle.app.cli import main
from bundle.app.config import method_parser
from bundle.checkpoint import CheckpointError, load_calibration, load_trained_variants, load_weights
from bundle.data.upete import load_split
from tests.upete_trained import TINY, VARIANT


def _test_files(run) -> tuple[str, str]:
    entry = json.loads((run["data"] / "datalist.json").read_text(encoding="utf-8"))["test"][0]
    return str(run["data"] / entry["pet_low_by_dose"]["0.1"]), str(run["data"] / entry["ct"])


def test_combined_checkpoint_equals_the_separately_loaded_variant(upete_run, tmp_path):
    task = build_task("upete", overrides=upete_run["app_overrides"])  # layouts come from the file's settings
    assert task.checkpoint == str(upete_run["combined"]) and task.variant == VARIANT
    parser = method_parser("upete", overrides={**upete_run["network_overrides"], **upete_run["app_overrides"]})
    autoencoder = load_weights(parser.get_parsed_content("autoencoder_def"), upete_run["autoencoder"],
                               key="autoencoder")
    network, inferer = load_trained_variants(
        upete_run["upete_dir"], variants=[VARIANT], autoencoder_def=autoencoder,
        calibration=load_calibration(upete_run["calibration"]), latent_channels=3,
        denoiser_layout=TINY["denoiser_layout"], ct_encoder_layout=TINY["ct_encoder_layout"],
        inferer_options=parser.get_parsed_content("inferer_options"), require_all=True)[VARIANT]
    separate = network.state_dict()
    assert set(task.network.state_dict()) == set(separate)
    for name, value in task.network.state_dict().items():
        assert torch.equal(value, separate[name]), name
    case = load_split(upete_run["data"], "test", doses=[0.1])[0]
    x = case.low[0.1][0]
    outputs = [inf(x, net, ct=case.ct, dose=0.1, generator=torch.Generator().manual_seed(7))
               for net, inf in ((task.network, task.inferer), (network, inferer))]
    assert torch.equal(outputs[0], outputs[1]) and bool(torch.isfinite(outputs[0]).all())
    pet, ct = _test_files(upete_run)  # and end to end: the task's file = the separate variant's output x the scale
    path, _ = task({"image": pet, "ct": ct, "output": str(tmp_path / "app.nii.gz"), "seed": 7, "dose": 0.1})
    expected = (outputs[1][0, 0].double() * float(case.low[0.1][1])).float().numpy()
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), expected)
    parser["pet_file"], parser["ct_file"], parser["dose"] = pet, ct, 0.1  # configs/upete/inference.json's run id
    parser["output_file"] = str(tmp_path / "config.nii.gz")
    parser.get_parsed_content("inferring")
    seed = parser.get_parsed_content("seed")
    y = inferer(x, network, ct=case.ct, dose=0.1, generator=torch.Generator().manual_seed(seed))
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "config.nii.gz").dataobj),
                                  (y[0, 0].double() * float(case.low[0.1][1])).float().numpy())


def test_cli_infer_with_a_combined_checkpoint(upete_run, tmp_path, capsys):
    pet, ct = _test_files(upete_run)
    out = tmp_path / "spet.nii.gz"
    overrides = [f"--override={k}={json.dumps(v)}" for k, v in upete_run["app_overrides"].items()]
    assert main(["infer", "--method", "upete", "--image", pet, "--ct", ct, "--output", str(out), "--dose", "0.1",
                 *overrides]) == 0
    image = nib.load(out)
    assert image.shape == nib.load(pet).shape and np.isfinite(np.asarray(image.dataobj)).all()
    np.testing.assert_allclose(image.affine, nib.load(pet).affine)
    result = json.loads((tmp_path / "spet.nii.gz.json").read_text(encoding="utf-8"))  # <output>.json
    assert result["variant"] == VARIANT and result["checkpoint"] == str(upete_run["combined"])
    capsys.readouterr()
    missing = tmp_path / "no_run" / "upete_model.pt"
    assert main(["infer", "--method", "upete", "--image", pet, "--ct", ct, "--output", str(out),
                 f"--override=checkpoint={json.dumps(str(missing))}"]) == 2
    error = capsys.readouterr().err
    assert f"uPETe checkpoint '{missing}' does not exist" in error
    assert "run combining" in error


def test_incomplete_or_contradicted_checkpoint_is_a_clear_error(upete_run):
    with pytest.raises(CheckpointError, match=r"ldm_final\.pt is not a combined uPETe checkpoint: it lacks "
                                              r"\['calibration', 'variant'\]"):
        build_task("upete", checkpoint=upete_run["ldm"], overrides=upete_run["app_overrides"])
    with pytest.raises(ValueError, match=r"override denoiser_layout#channels=\[16, 32\] contradicts the checkpoint "
                                         r".*upete_model\.pt, which was trained with "
                                         r"denoiser_layout#channels=\[8, 16\]"):
        build_task("upete", overrides={**upete_run["app_overrides"], "denoiser_layout#channels": [16, 32]})
    with pytest.raises(ValueError, match=r"override variant='LDM' contradicts"):
        build_task("upete", checkpoint=upete_run["combined"], overrides={"variant": "LDM", "device": "cpu"})
