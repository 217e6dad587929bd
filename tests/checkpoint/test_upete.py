"""Combined uPETe checkpoint from separately saved parts (random tiny weights): contents, consistency checks and the
errors that name the missing or mismatched file."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from bundle.checkpoint import (
    COMBINED_FILENAME,
    Calibration,
    CheckpointError,
    combine_upete,
    combined_calibration,
    combined_state,
    read_combined,
)
from bundle.networks.upete import build_upete, pet_autoencoder

AE = {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4}
DENOISER = {"channels": [8, 16], "num_res_blocks": 1, "attention_levels": [False, True], "norm_num_groups": 4,
            "num_head_channels": 8, "ct_head_channels": 8, "ct_window": 2}
CT_ENCODER = {"channels": [4, 8, 8], "num_res_blocks": 1, "norm_num_groups": 4}
CALIBRATION = Calibration(latent_scale=2.5, count_scale=1000.0, latent_noise_variance=0.05, reference_dose=0.1,
                          dose_estimator_a=0.001, dose_estimator_b=0.04)


def _autoencoder():
    return pet_autoencoder(latent_channels=3, **AE)


def _parts(root, variant: str, *, seed: int = 0, calibration: Calibration = CALIBRATION) -> dict:
    """Random parts written as training does: autoencoder_final.pt, <variant>/ldm_final.pt, calibration.json."""
    torch.manual_seed(seed)
    autoencoder = _autoencoder()
    paths = {"autoencoder_checkpoint": root / "autoencoder" / "autoencoder_final.pt",
             "ldm_checkpoint": root / variant / "ldm_final.pt", "calibration_file": root / "calibration.json"}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"autoencoder": autoencoder.state_dict(), "discriminator": {}}, paths["autoencoder_checkpoint"])
    network = build_upete(variant, autoencoder=autoencoder, latent_scale=calibration.latent_scale,
                          denoiser_layout=DENOISER, ct_encoder_layout=CT_ENCODER)
    torch.save({"network": network.state_dict(), "optimizer": {}}, paths["ldm_checkpoint"])
    paths["calibration_file"].write_text(json.dumps(asdict(calibration)), encoding="utf-8")
    return {"network": network, **paths}


def _combine(paths: dict, variant: str, output, **kwargs):
    return combine_upete(variant=variant, autoencoder_def=_autoencoder(), denoiser_layout=DENOISER,
                         ct_encoder_layout=CT_ENCODER, output_file=output,
                         **{k: v for k, v in paths.items() if k != "network"}, **kwargs)


@pytest.mark.parametrize("variant", ["LDM", "LDM-P-CT"])
def test_combined_file_holds_the_trained_parts_and_loads_weights_only(tmp_path, variant):
    parts = _parts(tmp_path, variant)
    settings = {"denoiser_layout": DENOISER, "ct_window_hu": (-1000.0, 1000.0), "min_dose": 0.005}
    path = _combine(parts, variant, tmp_path / variant / COMBINED_FILENAME, settings=settings)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"network", "calibration", "variant", "settings"} and raw["variant"] == variant
    expected = parts["network"].state_dict()
    assert set(raw["network"]) == set(expected)
    for name, value in expected.items():
        assert torch.equal(raw["network"][name], value), name
    assert any(k.startswith("ct_encoder.") for k in expected) == (variant == "LDM-P-CT")
    combined = read_combined(path)
    assert combined["calibration"] == CALIBRATION == combined_calibration(path)
    assert combined["settings"]["ct_window_hu"] == [-1000.0, 1000.0]  # plain lists (weights_only)
    assert not list(tmp_path.glob(f"{variant}/.*.tmp"))  # written atomically, no leftovers


@pytest.mark.parametrize(
    ("missing", "match"),
    [
        ("autoencoder_checkpoint", r"autoencoder_checkpoint '.*autoencoder_final\.pt' does not exist: train the "
                                   r"autoencoder first"),
        ("ldm_checkpoint", r"ldm_checkpoint '.*LDM-P-CT/ldm_final\.pt' does not exist: train variant LDM-P-CT"),
        ("calibration_file", r"calibration_file '.*calibration\.json' does not exist"),
    ],
)
def test_missing_part_names_the_file(tmp_path, missing, match):
    parts = _parts(tmp_path, "LDM-P-CT")
    parts[missing].unlink()
    with pytest.raises(ValueError, match=match):
        _combine(parts, "LDM-P-CT", tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_inconsistent_parts_are_refused(tmp_path):
    parts = _parts(tmp_path, "LDM-P-CT")
    with pytest.raises(ValueError, match=r"ldm_checkpoint .*LDM-P-CT/ldm_final\.pt' lies in the folder of variant "
                                         r"LDM-P-CT, but variant is 'LDM-CT'"):
        _combine(parts, "LDM-CT", tmp_path / "a.pt")  # same modules as LDM-P-CT: only the folder tells them apart
    moved = tmp_path / "elsewhere" / "ldm.pt"
    moved.parent.mkdir()
    moved.write_bytes(parts["ldm_checkpoint"].read_bytes())
    with pytest.raises(CheckpointError, match=r"(?s)ldm\.pt: entry 'network' does not fit the configured UPETe of "
                                              r"variant LDM \(.*Unexpected key"):
        _combine({**parts, "ldm_checkpoint": moved}, "LDM", tmp_path / "b.pt")  # no E_CT / CT attention in LDM
    torch.manual_seed(5)  # the autoencoder was retrained after the variant
    torch.save({"autoencoder": _autoencoder().state_dict()}, parts["autoencoder_checkpoint"])
    with pytest.raises(ValueError, match=r"the autoencoder inside ldm_checkpoint .* differs from "
                                         r"autoencoder_checkpoint .*retrain the variant"):
        _combine(parts, "LDM-P-CT", tmp_path / "c.pt")
    parts = _parts(tmp_path / "s", "LDM-P-CT")
    other = {**asdict(CALIBRATION), "latent_scale": 3.0}
    parts["calibration_file"].write_text(json.dumps(other), encoding="utf-8")
    with pytest.raises(ValueError, match=r"latent scale of ldm_checkpoint .* \(s = 2\.5\) differs from "
                                         r"calibration_file .* \(s = 3\.0\)"):
        _combine(parts, "LDM-P-CT", tmp_path / "d.pt")
    with pytest.raises(ValueError, match="variant must be one of"):
        _combine(parts, "LDM-X", tmp_path / "e.pt")
    with pytest.raises(ValueError, match="output_file must be a file path"):
        _combine(parts, "LDM-P-CT", "")


def test_read_combined_errors_name_the_file(tmp_path):
    parts = _parts(tmp_path, "LDM")
    with pytest.raises(ValueError, match=r"uPETe checkpoint '.*nope\.pt' does not exist: write it .*run combining"):
        read_combined(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=r"ldm_final\.pt is not a combined uPETe checkpoint: it lacks "
                                              r"\['calibration', 'variant'\].*run combining"):
        read_combined(parts["ldm_checkpoint"])
    bad = tmp_path / "bad.pt"
    torch.save({"network": {}, "calibration": {"latent_scale": 1.0}, "variant": "LDM"}, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pt: entry 'calibration' must have the fields"):
        read_combined(bad)
    torch.save({"network": {}, "calibration": asdict(CALIBRATION), "variant": "LDM-Q"}, bad)
    with pytest.raises(CheckpointError, match=r"bad\.pt: entry 'variant' is invalid"):
        read_combined(bad)


def test_combined_state_argument_checks():
    network = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match=r"network must be a torch\.nn\.Module"):
        combined_state(network=object(), calibration=CALIBRATION, variant="LDM")
    with pytest.raises(ValueError, match=r"calibration must have the fields \[.*\], got \['latent_scale'\]"):
        combined_state(network=network, calibration={"latent_scale": 1.0}, variant="LDM")
    with pytest.raises(ValueError, match=r"settings\['layout'\] must be a str, number, bool, None, list or dict"):
        combined_state(network=network, calibration=CALIBRATION, variant="LDM", settings={"layout": object()})
    with pytest.raises(ValueError, match="settings must not hold 'variant'"):
        combined_state(network=network, calibration=CALIBRATION, variant="LDM", settings={"variant": "LDM"})


def test_calibration_shows_progress_when_forced_on_and_is_silent_when_off(tmp_path, monkeypatch, capsys):
    """bundle.checkpoint.calibrate (uPETe's calibration step) draws its bars through bundle.progress."""
    from bundle.checkpoint import calibrate
    from bundle.progress import PROGRESS_ENV
    from tests.upete_fixtures import write_dataset

    data = write_dataset(tmp_path / "data")
    torch.manual_seed(0)
    autoencoder = _autoencoder()
    monkeypatch.setenv(PROGRESS_ENV, "on")
    shown = calibrate(data, autoencoder=autoencoder)
    err = capsys.readouterr().err
    assert "calibration: latent scale" in err and "calibration: count scale, latent noise" in err and "2/2" in err
    monkeypatch.setenv(PROGRESS_ENV, "off")
    assert calibrate(data, autoencoder=autoencoder) == shown  # the bars change nothing
    assert capsys.readouterr().err == ""
