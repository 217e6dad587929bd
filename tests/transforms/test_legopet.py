"""LegoPET transforms: loading, centred padding and its exact crop back, dataset scales, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bundle.data.io import load_image, save_image, save_sinogram
from bundle.inferers.legopet import LegoPETInferer
from bundle.keys import Keys
from bundle.physics import preset
from bundle.transforms.legopet import (
    CropFromSquared,
    LoadImageZYXd,
    LoadSinogramd,
    PadToSquared,
    SaveImageZYXd,
    crop_box,
    manifest_counts_per_bin,
    padding_offsets,
    reference_max,
)

GEOMETRY = preset("mmr_2d").image  # (1, 172, 172)


def test_padding_offsets_are_centred():
    assert padding_offsets((172, 172), 256) == (42, 42, 172, 172)
    assert padding_offsets((252, 172), 256) == (2, 42, 252, 172)
    top, left, h, w = padding_offsets((171, 60), 256)
    assert (top, 256 - h - top) == (42, 43) and (left, 256 - w - left) == (98, 98)  # odd remainder after the image
    with pytest.raises(ValueError, match="does not fit"):
        padding_offsets((300, 172), 256)
    with pytest.raises(ValueError, match="height, width"):
        padding_offsets((1, 172, 172), 256)


def test_pad_and_crop_round_trip_is_exact():
    generator = torch.Generator().manual_seed(0)
    data = {
        "sinogram": torch.rand(1, 252, 172, generator=generator),
        "reference": torch.rand(1, 171, 172, generator=generator),  # odd remainder
    }
    padded = PadToSquared(keys=["sinogram", "reference"], size=256)(data)
    for key in data:
        x = padded[key]
        assert x.shape == (1, 256, 256)
        box = padded[f"{key}_padding"]
        assert torch.equal(crop_box(x, box.tolist()), data[key])
        inside = torch.zeros_like(x, dtype=torch.bool)
        inside[..., box[0] : box[0] + box[2], box[1] : box[1] + box[3]] = True
        assert float(x[~inside].abs().max()) == 0.0  # zero padding
    restored = PadToSquared(keys=["sinogram", "reference"], size=256).inverse(padded)
    for key in data:
        assert torch.equal(restored[key], data[key]) and f"{key}_padding" not in restored
    # the fixed-shape crop (validation post-processing) and the inferer's crop agree with the recorded box
    ref = PadToSquared(keys="reference", size=256)({"reference": torch.rand(1, 172, 172, generator=generator)})
    cropped = CropFromSquared(keys="reference", shape=(172, 172))(ref)["reference"]
    assert torch.equal(cropped, crop_box(ref["reference"], ref["reference_padding"].tolist()))
    inferer = LegoPETInferer(scheduler=_ddim(), num_inference_steps=1, crop=padding_offsets((172, 172), 256))
    assert torch.equal(inferer.crop_image(ref["reference"]), cropped)


def _ddim():
    from monai.networks.schedulers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=10)


def test_padding_errors():
    with pytest.raises(ValueError, match=r"must have shape \(C, H, W\)"):
        PadToSquared(keys="x")({"x": torch.zeros(172, 172)})
    with pytest.raises(ValueError, match="does not fit"):
        PadToSquared(keys="x", size=128)({"x": torch.zeros(1, 172, 172)})
    with pytest.raises(KeyError, match="was not padded"):
        PadToSquared(keys="x").inverse({"x": torch.zeros(1, 256, 256)})
    with pytest.raises(ValueError, match="square"):
        CropFromSquared(keys="x", shape=(172, 172))({"x": torch.zeros(1, 256, 255)})


def test_loading_saving_and_dataset_scales(tmp_path):
    counts = torch.poisson(torch.full((1, 252, 172), 7.0))
    image = torch.rand(GEOMETRY.shape)
    save_sinogram(tmp_path / "s" / "sinogram.npy", counts)
    save_image(tmp_path / "s" / "reference.nii.gz", image, GEOMETRY)
    d = LoadImageZYXd(keys="reference")(
        LoadSinogramd(keys="sinogram", expected_shape=(252, 172))(
            {"sinogram": str(tmp_path / "s" / "sinogram.npy"), "reference": tmp_path / "s" / "reference.nii.gz"}
        )
    )
    assert d["sinogram"].shape == (1, 252, 172) and d["sinogram"].dtype == torch.float32
    assert torch.equal(d["sinogram"], counts) and torch.equal(d["reference"], image)
    with pytest.raises(ValueError, match="expected"):
        LoadSinogramd(keys="s", expected_shape=(172, 252))({"s": tmp_path / "s" / "sinogram.npy"})
    save_sinogram(tmp_path / "bad.npy", torch.zeros(2, 252, 172))
    with pytest.raises(ValueError, match=r"\(1, views, radial\)"):
        LoadSinogramd(keys="s")({"s": tmp_path / "bad.npy"})
    volume = preset("tiny_3d").image
    save_image(tmp_path / "vol.nii.gz", torch.zeros(volume.shape), volume)
    with pytest.raises(ValueError, match="single-slice"):
        LoadImageZYXd(keys="x")({"x": tmp_path / "vol.nii.gz"})
    out = SaveImageZYXd(keys="reference", output_dir=tmp_path / "out", geometry=GEOMETRY)({**d, "id": "a"})
    written, geometry = load_image(out["reference_path"])
    assert torch.equal(written, image) and geometry.shape == GEOMETRY.shape
    assert np.allclose(geometry.voxel_size_mm, GEOMETRY.voxel_size_mm)
    assert np.allclose(geometry.origin_mm, GEOMETRY.origin_mm)
    with pytest.raises(ValueError, match="geometry"):
        SaveImageZYXd(keys="x", output_dir=tmp_path, geometry=GEOMETRY)({"x": torch.zeros(1, 256, 256), "id": "b"})

    root = tmp_path / "ds"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps(
        {"config": {"measured_counts": 3e5}, "sinogram_layout": {"shape_planes_views_radial": [1, 252, 172]}}
    ), encoding="utf-8")
    (root / "datalist.json").write_text(json.dumps({"training": [
        {"reference": "../s/reference.nii.gz", Keys.COUNT_SCALE: 0.5},
        {"reference": "../s/reference.nii.gz", Keys.COUNT_SCALE: 0.25},
    ]}), encoding="utf-8")
    assert manifest_counts_per_bin(root) == pytest.approx(3e5 / (252 * 172))
    assert reference_max(root) == pytest.approx(0.5 * float(image.max()))
    assert reference_max(root, count_scale_key=None) == pytest.approx(float(image.max()))
