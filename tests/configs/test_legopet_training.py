"""LegoPET workflows through `python -m monai.bundle run`: PnPNet → LegoPET (frozen PnPNet) → cDPM → sampling.

The dataset is a synthetic legopet folder in the builder's exact layout (manifest.json, datalist.json with paths
relative to the folder, samples/<id>/sinogram.npy (1, 252, 172) counts and single-slice NIfTI references
(1, 172, 172) in the mmr_2d geometry, ``count_scale`` per entry).  The real builder (numba projector + OSEM) takes
about 30 s even for 4 samples, tests/data covers it; the workflows only need the format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data.io import load_image, save_image, save_sinogram
from bundle.keys import Keys
from bundle.physics import preset
from bundle.recipes import recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = {"channels": [8, 16, 16, 16], "num_res_blocks": 1, "norm_num_groups": 8, "num_head_channels": 8}
TINY_ARGS = ["--layout#channels", "[8,16,16,16]", "--layout#num_res_blocks", "1", "--layout#norm_num_groups", "8",
             "--layout#num_head_channels", "8"]


def _files(name: str) -> list[str]:
    """The config files of recipe ``name`` (configs/recipes.json)."""
    return [str(p) for p in recipe(name).paths()]


def _write_dataset(root: Path) -> None:
    """2 training, 2 validation and 2 test samples (3 subjects), disc phantoms and Poisson counts."""
    geometry = preset("mmr_2d").image
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(172.0), torch.arange(172.0), indexing="ij")
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    for subject, split in enumerate(datalist):
        for s in range(2):
            sample_id = f"s{subject:02d}_r0_z{s:02d}"
            folder = root / "samples" / sample_id
            disc = (((yy - 86 - 5 * s) ** 2 + (xx - 86) ** 2) < 60.0**2).float()
            activity = (disc * (1.0 + 0.2 * subject)).unsqueeze(0)
            mean = torch.full((1, 252, 172), 6.9) * (1 + torch.sin(torch.arange(172.0) / 20) ** 2) / 1.5
            save_sinogram(folder / "sinogram.npy", torch.poisson(mean, generator=generator))
            save_image(folder / "reference.nii.gz", activity, geometry)
            datalist[split].append({
                Keys.SINOGRAM: f"samples/{sample_id}/sinogram.npy",
                Keys.REFERENCE: f"samples/{sample_id}/reference.nii.gz",
                Keys.COUNT_SCALE: 0.25 + 0.05 * subject, "id": sample_id, Keys.SUBJECT: subject,
            })
    (root / "datalist.json").write_text(json.dumps(datalist, indent=1), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({
        "kind": "legopet", "config": {"scanner_preset": "mmr_2d", "measured_counts": 3e5},
        "sinogram_layout": {"shape_planes_views_radial": [1, 252, 172]}, "complete": True,
    }), encoding="utf-8")


def _run(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "monai.bundle", "run", *args, *TINY_ARGS]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    return result


def _network(config: list[str], name: str) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(config)
    parser["layout"].update(TINY)
    return parser.get_parsed_content(name)


def _load(path: Path, network: torch.nn.Module) -> None:
    state = torch.load(path, weights_only=True)
    network.load_state_dict(state["network"])  # fits the configured architecture exactly (strict)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("legopet")
    _write_dataset(root / "data")
    return root / "data", root / "run"


@pytest.mark.slow
def test_pnpnet_legopet_cdpm_training_and_sampling(workspace):
    dataset, run = workspace
    common = ["--dataset_dir", str(dataset), "--bundle_root", str(run), "--max_epochs", "1", "--batch_size", "4"]
    results = run / "results"

    out = _run("training", "--config_file", recipe("legopet/pnpnet").config_arg(), *common)
    log = out.stdout + out.stderr
    assert "train_loss" in log and "val_psnr" in log and "val_ssim" in log
    pnpnet_ckpt = results / "pnpnet" / "checkpoints" / "pnpnet_final.pt"
    assert pnpnet_ckpt.is_file() and (results / "pnpnet" / "checkpoints" / "pnpnet_best.pt").is_file()
    _load(pnpnet_ckpt, _network(_files("legopet/pnpnet"), "network_def"))
    assert list((results / "pnpnet" / "logs").glob("events.out.tfevents.*"))

    for method in ("legopet", "cdpm"):
        _run("training", "--config_file", recipe(f"legopet/{method}").config_arg(), *common,
             "--pnpnet_ckpt", str(pnpnet_ckpt))
        ckpt = results / method / "checkpoints" / f"{method}_final.pt"
        assert ckpt.is_file() and list((results / method / "logs").glob("events.out.tfevents.*"))
        _load(ckpt, _network(_files(f"legopet/{method}"), "network_def"))

    paper = [f for f in recipe("legopet/inference").files if f not in ("legopet/tiny.json", "legopet/small.json")]
    _run("inferring", "--config_file", "[" + ",".join(f"'configs/{f}'" for f in paper) + "]", *common,
         "--pnpnet_ckpt", str(pnpnet_ckpt), "--pnpnet_key", "network", "--num_inference_steps", "2",
         "--checkpoint", str(results / "legopet" / "checkpoints" / "legopet_final.pt"))
    predictions = sorted((results / "legopet" / "predictions").glob("*.nii.gz"))
    test_ids = [e["id"] for e in json.loads((dataset / "datalist.json").read_text(encoding="utf-8"))["test"]]
    assert [p.name for p in predictions] == [f"{i}_pred.nii.gz" for i in test_ids]
    for path in predictions:
        image, geometry = load_image(path)
        assert image.shape == (1, 172, 172) and geometry.shape == (1, 172, 172)
        assert bool(torch.isfinite(image).all())


def test_cdpm_override_removes_pnpnet():
    parser = ConfigParser()
    parser.read_config(_files("legopet/cdpm"))
    parser["layout"].update(TINY)
    assert parser["pnpnet"] is None and parser["method"] == "cdpm"
    prepare = parser.get_parsed_content("prepare_batch")
    assert prepare.pnpnet is None and prepare.drop_probability == 0.1
