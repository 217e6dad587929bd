"""The shipped LegoPET-family weights (models/legopet*.pt, cdpm*.pt): sha256 checked, default of their inference
recipes, and a quick inference that images a simulated object in the right units (not a retraining)."""

from __future__ import annotations

import pytest
import torch

from bundle.app import build_task
from bundle.checkpoint import shipped_weights, stored_settings
from bundle.data.io import load_image, save_sinogram
from bundle.data.simulate import simulate_scan
from bundle.physics import preset
from bundle.recipes import recipe

SHIPPED = {"legopet": "legopet/inference", "cdpm": "legopet/cdpm_inference",
           "legopet_image": "legopet/legopet_image_inference", "cdpm_image": "legopet/cdpm_image_inference"}


@pytest.fixture(scope="module")
def disc_scan(tmp_path_factory):
    """A uniform disc (activity 1, water attenuation) scanned on the brain_2d preset at the small preset's 3e5
    counts: the sinogram file and its count scale c."""
    scanner = preset("brain_2d")
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = (((yy - 31.5) ** 2 + (xx - 31.5) ** 2) < 18.0**2).float().unsqueeze(0)
    scan = simulate_scan(disc, 0.0096 * disc, layout=scanner.layout, image=scanner.image, total_counts=3e5,
                         generator=torch.Generator().manual_seed(0))
    root = tmp_path_factory.mktemp("shipped_legopet")
    save_sinogram(root / "disc.npy", scan.counts)
    return root / "disc.npy", scan.count_scale, disc[0].bool()


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_are_the_recipes_default_and_image_the_object(name, disc_scan, tmp_path):
    path = shipped_weights(name)  # sha256 against models/manifest.json
    assert set(stored_settings(path, "sinogram_scale", "image_scale")) == {"sinogram_scale", "image_scale"}
    task = build_task("legopet", config_files=[str(p) for p in recipe(SHIPPED[name]).paths()],
                      overrides={"num_inference_steps": 10, "device": "cpu"})
    assert str(task.checkpoint) == str(path)
    sinogram, count_scale, inside = disc_scan
    output, result = task({"image": str(sinogram), "count_scale": count_scale, "samples": 1,
                           "output": str(tmp_path / f"{name}.nii.gz")})
    image = load_image(output)[0][0]
    assert result["shape_zyx"] == [1, 64, 64] and bool(torch.isfinite(image).all())
    radius2 = (torch.arange(64.0).reshape(-1, 1) - 31.5) ** 2 + (torch.arange(64.0) - 31.5) ** 2
    ring = ~inside & (radius2 > 24.0**2)
    assert 0.5 < float(image[inside].mean()) < 2.0  # activity 1 in activity units (c = counts per unit)
    assert float(image[ring].abs().mean()) < 0.25 * float(image[inside].mean())  # empty outside the object
