"""Each dataset builder end to end with the embedded-default phantoms (MNI152 brains, procedural torso)."""

from __future__ import annotations

import json

import pytest
import torch

from bundle.data.build import build_dataset
from bundle.data.io import load_image, load_sinogram
from bundle.data.simulate import load_scan
from bundle.keys import Keys


def test_legopet_with_mni152_brains(tmp_path):
    datalist = build_dataset("legopet", output=tmp_path, seed=0, progress=False, subjects=3, split=(1, 1, 1),
                             rotations=2, slices=1, osem_iterations=2)
    entry = datalist["training"][1]
    assert entry["rotation_deg"] != 0.0 and datalist["training"][0]["rotation_deg"] == 0.0  # first rotation 0°
    activity, geometry = load_image(tmp_path / entry[Keys.ACTIVITY])
    assert geometry.shape == (1, 172, 172)
    assert load_sinogram(tmp_path / entry[Keys.SINOGRAM]).shape == (1, 252, 172)  # mMR 2D slice geometry
    values = activity[activity > 0]
    assert float(values.max()) / float(values[values > 0.5].min()) > 3  # grey and white matter present


def test_petdds_with_mni152_brains(tmp_path):
    datalist = build_dataset("petdds", output=tmp_path, seed=0, progress=False, subjects=2, split=(1, 0, 1),
                             realisations=1, osem_subsets=8, osem_iterations=1)
    entry = datalist["test"][0]
    reference, geometry = load_image(tmp_path / entry[Keys.REFERENCE])
    assert geometry.shape == (8, 64, 64)
    assert float(reference.min()) >= 0 and float(reference.sum()) > 0
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["sinogram_layout"]["shape_planes_views_radial"] == [64, 128, 96]


def test_upete_with_torso_phantoms(tmp_path):
    pytest.importorskip("bundle.data.torso")
    datalist = build_dataset("upete", output=tmp_path, seed=0, progress=False, subjects=2, split=(1, 0, 1),
                             generalisation_fractions=(0.5,), osem_iterations=2)
    test = datalist["test"][0]
    assert set(test["pet_low_by_dose"]) == {"0.1", "0.5"}
    assert set(datalist["training"][0]["pet_low_by_dose"]) == {"0.1"}
    truth = load_image(tmp_path / test[Keys.ACTIVITY])[0]
    pet = load_image(tmp_path / test[Keys.PET])[0]
    low = load_image(tmp_path / test[Keys.PET_LOW])[0]
    half = load_image(tmp_path / test["pet_low_by_dose"]["0.5"])[0]
    # all doses reconstruct to the same activity units; lower dose -> noisier -> further from the truth
    assert float(low.sum()) == pytest.approx(float(pet.sum()), rel=0.1)
    err = {name: float((img - truth).norm()) for name, img in (("full", pet), ("half", half), ("tenth", low))}
    assert err["full"] < err["half"] < err["tenth"]
    ct = load_image(tmp_path / test[Keys.CT])[0]
    assert float(ct.min()) >= -1024 and float(ct.max()) > 300  # air and bone in Hounsfield units
    assert not torch.equal(pet, low)
    # the saved scan reconstructs to the saved SPET (the sinogram-domain training's d = 1 end point)
    scan, image = load_scan(tmp_path / test[Keys.SCAN])
    assert image.shape == pet.shape
    torch.testing.assert_close(scan.reconstruct_osem(num_subsets=8, num_iterations=2), pet, rtol=1e-5, atol=1e-6)
