"""The 64 × 64 CPU-study overlay (configs/legopet/small.json, layered after tiny.json) on a legopet dataset in the
``brain_2d`` geometry (``python -m bundle.data build legopet --preset small``): its geometry keys, and a smoke run of
every workflow through the bundle configs (in-process ``ConfigParser``, no subprocess start-up): PnPNet → LegoPET /
cDPM (2 steps each) → sampling, evaluation table and λ2 sweep.

The dataset is synthetic, in the builder's exact layout (manifest.json, datalist.json, sinograms (1, 64, 64), NIfTI
images (1, 64, 64) in the brain_2d geometry); tests/data/test_build.py builds the real preset.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data.io import load_image, save_image, save_sinogram
from bundle.keys import Keys
from bundle.physics import preset
from bundle.recipes import recipe

SMALL = ("legopet/tiny.json", "legopet/small.json")


def _parser(name: str, *overlays: str, **overrides) -> ConfigParser:
    """Recipe ``legopet/<name>`` (configs/recipes.json) with ``overlays`` (relative to configs/) and ``overrides``."""
    parser = ConfigParser()
    parser.read_config([str(f) for f in recipe(f"legopet/{name}").paths(*overlays)])
    parser.update(overrides)
    return parser


def _run(names: tuple[str, ...], run_id: str, **overrides) -> ConfigParser:
    """What ``python -m monai.bundle run <run_id> --config_file <recipe files + overlays> --key value …`` does, in this
    process; ``names`` = (recipe name, *overlays) as :func:`_parser` takes them."""
    parser = _parser(*names, **overrides)
    if "initialize" in parser.get():
        parser.get_parsed_content("initialize")
    parser.get_parsed_content(run_id)
    return parser


def write_small_dataset(root: Path) -> Path:
    """2 training, 2 validation and 2 test slices (3 subjects) on the 64 × 64 brain_2d grid: discs, Poisson
    sinograms at the preset's 3e5 counts per slice (≈ 73 per bin), ``osem`` = 0.8 · reference."""
    geometry = preset("brain_2d").image
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    for subject, split in enumerate(datalist):
        for s in range(2):
            sample_id = f"s{subject:02d}_r0_z{s:02d}"
            folder = root / "samples" / sample_id
            disc = (((yy - 32 - 2 * s) ** 2 + (xx - 32) ** 2) < 22.0**2).float()
            reference = (disc * (1.0 + 0.2 * subject) + 0.1 * disc * torch.sin(xx / 3)).unsqueeze(0)
            save_sinogram(folder / "sinogram.npy", torch.poisson(torch.full((1, 64, 64), 73.0), generator=generator))
            save_image(folder / "reference.nii.gz", reference, geometry)
            save_image(folder / "osem.nii.gz", 0.8 * reference, geometry)
            datalist[split].append({
                Keys.SINOGRAM: f"samples/{sample_id}/sinogram.npy",
                Keys.REFERENCE: f"samples/{sample_id}/reference.nii.gz",
                Keys.OSEM: f"samples/{sample_id}/osem.nii.gz", Keys.COUNT_SCALE: 0.25 + 0.05 * subject + 0.01 * s,
                "id": sample_id, Keys.SUBJECT: subject,
            })
    (root / "datalist.json").write_text(json.dumps(datalist), encoding="utf-8")
    (root / "manifest.json").write_text(json.dumps({
        "kind": "legopet", "preset": "small", "config": {"scanner_preset": "brain_2d", "measured_counts": 3e5},
        "sinogram_layout": {"shape_planes_views_radial": [1, 64, 64]}, "complete": True,
    }), encoding="utf-8")
    return root


def test_small_overlay_sets_the_64_grid_everywhere():
    for names in (("pnpnet", *SMALL), ("legopet", *SMALL)):
        p = _parser(*names)
        assert (p["pad_size"], p["image_shape"], p["sinogram_shape"]) == (64, [64, 64], [64, 64])
        assert p["layout"]["channels"] == [16, 32, 32, 32]  # small.json: the shipped networks' width
    evaluation = _parser("evaluate", *SMALL)
    assert evaluation.get_parsed_content("crop") == (0, 0, 64, 64)  # nothing padded: the whole grid
    inference = _parser("inference", *SMALL)
    assert inference.get_parsed_content("image_geometry") == preset("brain_2d").image
    assert tuple(inference.get_parsed_content("sampler#crop")) == (0, 0, 64, 64)
    # the geometry keys small.json overrides are exactly the ones tiny.json and the base configs leave at 256 / 172
    assert _parser("legopet", "legopet/tiny.json")["pad_size"] == 256


@pytest.mark.slow
def test_small_overlay_trains_samples_and_evaluates(tmp_path):
    dataset = write_small_dataset(tmp_path / "data")
    common = {"dataset_dir": str(dataset), "bundle_root": str(tmp_path / "run"), "max_epochs": 2, "batch_size": 2,
              "image_log_steps": 2}
    results = tmp_path / "run" / "results"
    _run(("pnpnet", *SMALL), "training", **common, val_interval=2)
    for method in ("legopet", "cdpm"):
        _run((method, *SMALL), "training", **common, ckpt_interval=1)
        folder = results / method / "checkpoints"
        assert (folder / f"{method}_final.pt").is_file()
        assert sorted(p.name for p in folder.glob("checkpoint_epoch=*.pt")) == [
            "checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
        state = torch.load(folder / f"{method}_final.pt", weights_only=True)
        assert int(state["trainer"]["iteration"]) == 2  # 2 epochs x (2 slices / batch 2)

    _run(("inference", *SMALL), "inferring", **common, num_inference_steps=2,
         checkpoint=str(results / "legopet" / "checkpoints" / "legopet_final.pt"), pnpnet_key="network",
         pnpnet_ckpt=str(results / "pnpnet" / "checkpoints" / "pnpnet_final.pt"))
    for path in sorted((results / "legopet" / "predictions").glob("*.nii.gz")):
        image, geometry = load_image(path)
        assert image.shape == (1, 64, 64) and geometry == preset("brain_2d").image
        assert bool(torch.isfinite(image).all())

    names = ("evaluate", *SMALL)
    _run(("deeppet", *SMALL), "training", **common, val_interval=2)
    _run(names, "evaluating", **common, num_inference_steps=2)
    table = (results / "legopet_evaluation" / "table.md").read_text(encoding="utf-8").splitlines()
    assert [line.split(" | ")[0][2:] for line in table[2:8]] == [
        "OSEM", "DeepPET", "cDPM", "cDPM (mean of 4)", "LegoPET", "LegoPET (mean of 4)"]
    _run(names, "guidance_sweep", **common, num_inference_steps=2, guidance_scales=[0, 2], eval_limit=1)
    sweep = json.loads((results / "legopet_evaluation" / "guidance_sweep" / "guidance_sweep.json").read_text(
        encoding="utf-8"))
    assert sweep["split"] == "validation" and sweep["slices"] == 1
    assert [(r["method"], r["guidance_scale"], r["nfe_per_slice"]) for r in sweep["rows"]] == [
        ("cDPM", 0.0, 2), ("cDPM", 2.0, 4), ("LegoPET", 0.0, 2), ("LegoPET", 2.0, 4)]
    _run(names, "denoising_loss", **common, eval_limit=1, loss_timesteps=[10, 900], loss_noise_draws=1)
    loss = json.loads((results / "legopet_evaluation" / "denoising_loss" / "denoising_loss.json").read_text(
        encoding="utf-8"))
    assert {(m["method"], m["epoch"], m["split"]) for m in loss["means"]} == {
        (method, epoch, split) for method in ("cDPM", "LegoPET") for epoch in (1, 2) for split in ("training", "test")}
    assert all(math.isfinite(r["eps_mse"]) and r["eps_mse"] > 0 for r in loss["rows"])
    _run(names, "restart_from_reference", **common, eval_limit=1, restart_steps=[10, 999], num_inference_steps=2)
    restart = json.loads((results / "legopet_evaluation" / "restart" / "restart.json").read_text(encoding="utf-8"))
    assert [(r["method"], r["t0"]) for r in restart["rows"]] == [("cDPM", 10), ("cDPM", 999), ("LegoPET", 10),
                                                                 ("LegoPET", 999)]
    assert all(math.isfinite(r["intensity_ratio"]) and r["rmse"] >= 0 for r in restart["rows"])
