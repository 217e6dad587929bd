"""The shipped weights of models/: every file has the sha256 its manifest records (the CI check), a changed or
missing file is a CheckpointError naming the hashes, ship round trip, and the shipped PET-DDS-δ score model fits the
configured network and reconstructs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.checkpoint import CheckpointError, load_weights
from bundle.checkpoint.shipped import MANIFEST, default_models_dir, main, ship, shipped_weights
from bundle.recipes import recipe

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()  # independent of bundle.zoo.archive's chunked reader


def _manifest(folder: Path = MODELS) -> dict:
    return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))


def test_every_manifest_entry_has_its_recorded_sha256_and_a_card(capsys):
    manifest = _manifest()
    assert "petdds_score" in manifest and default_models_dir() == MODELS
    for name, entry in manifest.items():
        assert _sha256(MODELS / entry["file"]) == entry["sha256"], name
        assert (MODELS / entry["card"]).is_file(), name
        assert shipped_weights(name) == MODELS / entry["file"]
        recipe(entry["recipe"])  # an inference recipe that exists
    assert main(["verify"]) == 0
    assert "all shipped weights match" in capsys.readouterr().out


@pytest.fixture()
def models_copy(tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder)
    return folder


def test_tampered_or_missing_file_is_an_error_naming_the_hashes(models_copy, capsys):
    entry = _manifest(models_copy)["petdds_score"]
    path = models_copy / entry["file"]
    with path.open("ab") as handle:
        handle.write(b"\0")
    actual = _sha256(path)
    with pytest.raises(CheckpointError) as error:
        shipped_weights("petdds_score", models_dir=models_copy)
    message = str(error.value)
    assert str(path) in message and entry["sha256"] in message and actual in message
    assert "python -m bundle.checkpoint.shipped ship petdds_score" in message and entry["train_command"] in message
    assert main(["--models-dir", str(models_copy), "verify"]) == 1
    assert capsys.readouterr().out.strip().splitlines() == [message]

    path.unlink()
    with pytest.raises(CheckpointError, match=rf"{path.name} is missing \(expected sha256 {entry['sha256']}\)"):
        shipped_weights("petdds_score", models_dir=models_copy)


def test_unknown_name_and_missing_manifest(models_copy, tmp_path):
    known = re.escape(repr(sorted(_manifest(models_copy))))
    with pytest.raises(ValueError, match=rf"name must be one of the shipped weights {known}.*got 'nope'"):
        shipped_weights("nope", models_dir=models_copy)
    with pytest.raises(CheckpointError, match=r"no shipped-weights manifest .*--checkpoint FILE"):
        shipped_weights("petdds_score", models_dir=tmp_path / "empty")


def _training_checkpoint(path: Path) -> tuple[dict, dict]:
    torch.manual_seed(0)
    network, ema = torch.nn.Conv2d(1, 2, 3).double(), torch.nn.Conv2d(1, 2, 3).double()
    optimizer = torch.optim.Adam(network.parameters())
    network(torch.ones(1, 1, 4, 4, dtype=torch.float64)).sum().backward()
    optimizer.step()
    torch.save({"network": network.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                "trainer": {"iteration": 7, "epoch": 1}}, path)
    return network.state_dict(), ema.state_dict()


def test_ship_round_trip_keeps_only_the_chosen_weights_as_float32(tmp_path):
    source = tmp_path / "network_final.pt"
    network, ema = _training_checkpoint(source)
    models = tmp_path / "models"
    path = ship("toy", source, method="petdds", train_command="train it", models_dir=models)
    stored = torch.load(path, weights_only=True)
    assert list(stored) == ["network"] and list(stored["network"]) == list(network)
    for key, value in network.items():
        assert stored["network"][key].dtype == torch.float32
        torch.testing.assert_close(stored["network"][key], value.float(), rtol=0, atol=0)
    entry = _manifest(models)["toy"]
    assert entry == {"file": "toy.pt", "sha256": _sha256(path), "card": "toy.md", "method": "petdds",
                     "recipe": "petdds/inference", "train_command": "train it"}
    assert shipped_weights("toy", models_dir=models) == path
    generated = (models / "toy.md").read_text(encoding="utf-8")
    assert entry["sha256"] in generated and "No measured numbers yet" in generated

    again = ship("toy", source, method="petdds", use_ema=True, models_dir=models)  # command kept from the entry
    stored = torch.load(again, weights_only=True)["network"]
    for key, value in ema.items():
        torch.testing.assert_close(stored[key], value.float(), rtol=0, atol=0)
    assert _manifest(models)["toy"]["train_command"] == "train it"
    assert _manifest(models)["toy"]["sha256"] == _sha256(again) != entry["sha256"]


def test_cli_ship_and_list(tmp_path, capsys):
    source = tmp_path / "network_final.pt"
    _training_checkpoint(source)
    models = tmp_path / "models"
    assert main(["--models-dir", str(models), "ship", "toy", str(source), "--method", "petdds",
                 "--train-command", "train it"]) == 0
    sha = _sha256(models / "toy.pt")
    assert sha in capsys.readouterr().out
    assert main(["--models-dir", str(models), "list"]) == 0
    assert capsys.readouterr().out.split("\t")[:4] == ["toy", "petdds", "toy.pt", f"sha256 {sha}"]
    assert main(["--models-dir", str(models), "ship", "toy", str(source), "--method", "nope"]) == 2
    assert "recipe must be one of" in capsys.readouterr().err


def test_ship_never_overwrites_a_persons_card_and_names_bad_arguments(tmp_path):
    source = tmp_path / "network_final.pt"
    _training_checkpoint(source)
    models = tmp_path / "models"
    models.mkdir()
    (models / "toy.md").write_text("# toy\n\nNRMSE 18 % (measured)\n", encoding="utf-8")
    ship("toy", source, method="petdds", train_command="train it", models_dir=models)
    assert (models / "toy.md").read_text(encoding="utf-8") == "# toy\n\nNRMSE 18 % (measured)\n"
    other = tmp_path / "other.md"
    other.write_text("# other\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"toy\.md was written by a person"):
        ship("toy", source, method="petdds", card=other, models_dir=models)
    with pytest.raises(ValueError, match=r"train_command must be .* 'fresh' has no earlier entry"):
        ship("fresh", source, method="petdds", models_dir=models)
    with pytest.raises(ValueError, match=r"recipe must be one of"):
        ship("toy", source, method="nope", models_dir=models)
    with pytest.raises(ValueError, match=r"name must be a plain file stem"):
        ship("../toy", source, method="petdds", models_dir=models)
    torch.save({"network": torch.nn.Linear(1, 1).state_dict()}, tmp_path / "no_ema.pt")
    with pytest.raises(CheckpointError, match=r"lacks the entries \['ema'\]"):
        ship("toy", tmp_path / "no_ema.pt", method="petdds", use_ema=True, models_dir=models)


def test_shipped_score_model_fits_the_configured_network_and_reconstructs():
    from bundle.physics import SinogramProjector, forward_model_from_arrays, preset

    parser = ConfigParser()
    parser.read_config([str(p) for p in recipe("petdds/inference").paths()])
    assert Path(parser.get_parsed_content("checkpoint")) == shipped_weights("petdds_score")  # the default
    network = load_weights(parser.get_parsed_content("network_def"), shipped_weights("petdds_score"), strict=True)
    for key, value in {"num_inference_steps": 2, "num_subsets": 2, "steps_per_diffusion_step": 1,
                       "osem_iterations": 1}.items():
        parser[key] = value
    inferer = parser.get_parsed_content("petdds_inferer")
    geometry = preset("tiny_3d")
    projector = SinogramProjector(layout=geometry.layout, image=geometry.image)
    model = forward_model_from_arrays(projector=projector, background=torch.full(projector.out_shape, 0.5))
    activity = torch.zeros(geometry.image.shape)
    activity[:, 10:30, 10:30] = 1.0
    counts = torch.poisson(model.expectation(activity), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = inferer(counts, network, models=model, generator=torch.Generator().manual_seed(0))
    assert image.shape == geometry.image.shape
    assert torch.isfinite(image).all() and image.min() >= 0


def test_paper_preset_defaults_to_its_own_training():
    """The shipped weights fit network.json's U-Net, not paper.json's: the paper preset's checkpoint is the file its
    training writes (ckpt_dir/network_final.pt), and the shipped file is indeed refused by its network."""
    parser = ConfigParser()
    parser.read_config([str(p) for p in recipe("petdds/evaluate").paths("petdds/paper.json")])
    parser["output_dir"] = "/runs/paper"
    assert parser.get_parsed_content("checkpoint") == "/runs/paper/petdds/checkpoints/network_final.pt"
    with pytest.raises(CheckpointError, match="does not fit the configured DiffusionModelUNet"):
        load_weights(parser.get_parsed_content("network_def"), shipped_weights("petdds_score"))


def test_ship_includes_further_networks_and_settings(tmp_path):
    """LegoPET ships the denoiser with its PnPNet and the training's scales: include / settings store them, the CLI
    takes ENTRY=CHECKPOINT and NAME=NUMBER, stored_settings reads them back and names what is missing."""
    from bundle.checkpoint import CheckpointError, stored_settings

    source, other = tmp_path / "legopet_final.pt", tmp_path / "pnpnet_final.pt"
    _, ema = _training_checkpoint(source)
    pnp, _ = _training_checkpoint(other)
    models = tmp_path / "models"
    assert main(["--models-dir", str(models), "ship", "lego", str(source), "--method", "legopet", "--use-ema",
                 "--train-command", "train it", "--include", f"pnpnet={other}", "--setting", "sinogram_scale=2.5",
                 "--setting", "image_scale=4"]) == 0
    stored = torch.load(models / "lego.pt", weights_only=True)
    assert sorted(stored) == ["network", "pnpnet", "settings"]
    for key, value in pnp.items():
        torch.testing.assert_close(stored["pnpnet"][key], value.float(), rtol=0, atol=0)
    for key, value in ema.items():
        torch.testing.assert_close(stored["network"][key], value.float(), rtol=0, atol=0)
    assert stored_settings(models / "lego.pt", "image_scale") == {"sinogram_scale": 2.5, "image_scale": 4.0}
    with pytest.raises(CheckpointError, match=r"lacks \['count'\].*--count"):
        stored_settings(models / "lego.pt", "count")
    with pytest.raises(ValueError, match=r"settings\['x'\] must be a finite number"):
        ship("bad", source, method="legopet", train_command="t", models_dir=models, settings={"x": "nan"})
    assert main(["--models-dir", str(models), "ship", "bad", str(source), "--method", "legopet",
                 "--train-command", "t", "--setting", "oops"]) == 2
