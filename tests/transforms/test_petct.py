"""PET/CT preprocessing for uPETe: grid, scaling, inversion, CT window, patches, input validation."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from bundle.transforms.petct import (
    CTWindowd,
    invert_petct_preprocessing,
    petct_preprocessing,
)

SHAPE = (40, 40, 30)  # (x, y, z) voxels at 3 mm
SMALL = (64, 64, 48)  # target grid (pads the 60 x 60 x 45 resampled volume)
AFFINE = np.array([[3.0, 0, 0, -60.0], [0, 3.0, 0, -50.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])


def smooth_pet() -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    blob = np.exp(-((x - 20) ** 2 + (y - 18) ** 2 + (z - 15) ** 2) / (2 * 6.0**2))
    return (10.0 * blob + 1.0).astype(np.float32)  # kBq/ml, background 1


def body_ct() -> np.ndarray:
    x, y, _ = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return np.where((x - 20) ** 2 + (y - 20) ** 2 < 15**2, 40.0, -1000.0).astype(np.float32)


def write(path, array, affine=AFFINE) -> str:
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("petct")
    return {"pet": write(d / "pet.nii.gz", smooth_pet()), "ct": write(d / "ct.nii.gz", body_ct())}


@pytest.fixture(scope="module")
def preprocessed(files):
    pre = petct_preprocessing(spatial_size=SMALL)
    return pre, pre(dict(files))


def test_grid_spacing_and_ranges(preprocessed):
    _, out = preprocessed
    for key in ("pet", "ct"):
        assert isinstance(out[key], MetaTensor)
        assert tuple(out[key].shape) == (1, *SMALL)
        torch.testing.assert_close(out[key].pixdim, torch.full((3,), 2.0, dtype=torch.float64))
        assert out[key].dtype == torch.float32
        assert 0.0 <= float(out[key].min()) and float(out[key].max()) <= 1.0
    lo, hi = out["pet_scale"].tolist()
    assert lo == pytest.approx(1.0, abs=1e-3) and 10.0 < hi <= 11.0
    assert float(out["pet"].max()) == pytest.approx(1.0)
    # CT window: air -> 0 (also the padding), soft tissue 40 HU -> 0.52
    assert float(out["ct"][0, 0, 0, 0]) == 0.0 and float(out["ct"].max()) == pytest.approx(0.52, abs=1e-6)


def test_inversion_restores_grid_and_units(files, preprocessed):
    pre, out = preprocessed
    prediction = out["pet"].as_tensor().clone()  # a perfect "network" on the preprocessed grid
    back = invert_petct_preprocessing(pre, prediction=prediction, reference=out["pet"])
    original = smooth_pet()
    assert tuple(back.shape) == (1, *SHAPE)
    torch.testing.assert_close(back.affine, torch.as_tensor(AFFINE, dtype=torch.float64))
    error = np.abs(back[0].numpy() - original)
    assert error.max() < 0.02 * original.max()  # 3 mm -> 2 mm -> 3 mm trilinear interpolation error
    assert error.mean() < 0.002 * original.max()


def test_ct_window_maps_window_ends_and_clips():
    hu = torch.tensor([-3000.0, -1000.0, 0.0, 500.0, 1000.0, 3000.0]).reshape(1, 6, 1, 1)
    out = CTWindowd("ct")({"ct": hu})["ct"].reshape(-1)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))
    narrow = CTWindowd("ct", window_hu=(-160, 240))({"ct": hu})["ct"].reshape(-1)
    torch.testing.assert_close(narrow[:3], torch.tensor([0.0, 0.0, 0.4]))
    with pytest.raises(ValueError, match="window_hu must have lo < hi"):
        CTWindowd("ct", window_hu=(100, -100))
    with pytest.raises(ValueError, match="window_hu must be two finite numbers"):
        CTWindowd("ct", window_hu=(0.0, float("inf")))


def test_patch_sampler_shape_and_seed(files):
    def patches(seed):
        return petct_preprocessing(spatial_size=SMALL, patch_size=(16, 16, 24), num_samples=3, seed=seed)(dict(files))

    first, again, other = patches(7), patches(7), patches(8)
    assert isinstance(first, list) and len(first) == 3
    for sample in first:
        assert tuple(sample["pet"].shape) == tuple(sample["ct"].shape) == (1, 16, 16, 24)
        assert "pet_scale" in sample
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["pet"], b["pet"]) and torch.equal(a["ct"], b["ct"])
    assert any(not torch.equal(a["pet"], b["pet"]) for a, b in zip(first, other, strict=True))


def test_pet_only_when_ct_not_required(files):
    out = petct_preprocessing(spatial_size=SMALL, require_ct=False)({"pet": files["pet"]})
    assert tuple(out["pet"].shape) == (1, *SMALL) and "ct" not in out


def test_missing_ct_key(files):
    with pytest.raises(ValueError, match="data must contain the CT key 'ct'"):
        petct_preprocessing(spatial_size=SMALL)({"pet": files["pet"]})
    with pytest.raises(ValueError, match="data must contain the CT key 'ctac'"):
        petct_preprocessing(spatial_size=SMALL, ct_key="ctac")({"pet": files["pet"], "ct": files["ct"]})


def test_different_grids_rejected(tmp_path, files):
    shifted = AFFINE.copy()
    shifted[0, 3] += 3.0
    ct_shifted = write(tmp_path / "ct_shift.nii.gz", body_ct(), shifted)
    with pytest.raises(ValueError, match=r"must be on the same grid.*PET spatial shape \(40, 40, 30\), affine"):
        petct_preprocessing(spatial_size=SMALL)({"pet": files["pet"], "ct": ct_shifted})
    ct_short = write(tmp_path / "ct_short.nii.gz", body_ct()[:, :, :29])
    with pytest.raises(ValueError, match=r"CT spatial shape \(40, 40, 29\)"):
        petct_preprocessing(spatial_size=SMALL)({"pet": files["pet"], "ct": ct_short})


def test_non_finite_and_negative_pet_rejected(tmp_path, files):
    bad = smooth_pet()
    bad[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"'pet' must hold finite values only, found 1 NaN/inf"):
        petct_preprocessing(spatial_size=SMALL)({"pet": write(tmp_path / "nan.nii.gz", bad), "ct": files["ct"]})
    negative = smooth_pet()
    negative[0, 0, 0] = -0.25
    with pytest.raises(ValueError, match=r"'pet' must be non-negative activity, found 1 negative voxels \(min -0.25\)"):
        petct_preprocessing(spatial_size=SMALL)({"pet": write(tmp_path / "neg.nii.gz", negative), "ct": files["ct"]})


def test_dicom_series_folders(tmp_path):
    itk = pytest.importorskip("itk")
    io = itk.GDCMImageIO.New()
    io.KeepOriginalUIDOn()
    folders = {}
    for key, modality, array in (("pet", "PT", smooth_pet() * 100), ("ct", "CT", body_ct())):
        folder = tmp_path / key
        folder.mkdir()
        uid = f"1.2.826.0.1.3680043.2.1125.7.{len(folders) + 1}"
        for k in range(SHAPE[2]):  # one transverse slice per file, 3 mm apart
            image = itk.image_from_array(np.ascontiguousarray(array[:, :, k].T.astype(np.int16)))
            meta = image.GetMetaDataDictionary()
            tags = {
                "0008|0060": modality, "0020|000d": uid + ".1", "0020|000e": uid + ".2", "0020|0013": str(k + 1),
                "0008|0016": "1.2.840.10008.5.1.4.1.1.128", "0008|0018": f"{uid}.3.{k + 1}",
                "0020|0032": f"0\\0\\{3.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": "3\\3",
                "0018|0050": "3",
            }
            for tag, value in tags.items():
                meta[tag] = value
            itk.imwrite(image, os.path.join(folder, f"slice{k:03d}.dcm"), imageio=io)
        folders[key] = str(folder)
    out = petct_preprocessing(spatial_size=SMALL)(folders)
    assert tuple(out["pet"].shape) == tuple(out["ct"].shape) == (1, *SMALL)
    torch.testing.assert_close(out["pet"].pixdim, torch.full((3,), 2.0, dtype=torch.float64))
    lo, hi = out["pet_scale"].tolist()
    assert lo == pytest.approx(100.0, abs=1.0) and 1000.0 < hi <= 1100.0  # max of the resampled PET


def test_argument_errors(preprocessed):
    with pytest.raises(ValueError, match="spatial_size must be three positive ints"):
        petct_preprocessing(spatial_size=(64, 64))
    with pytest.raises(ValueError, match="pixdim_mm must be three positive finite numbers"):
        petct_preprocessing(pixdim_mm=(2.0, -2.0, 2.0))
    with pytest.raises(ValueError, match="patch_size must fit into spatial_size"):
        petct_preprocessing(spatial_size=SMALL, patch_size=(96, 96, 96))
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        petct_preprocessing(spatial_size=SMALL, patch_size=(16, 16, 16), num_samples=0)
    with pytest.raises(ValueError, match="ct_key must differ from pet_key"):
        petct_preprocessing(pet_key="x", ct_key="x")
    with pytest.raises(TypeError, match="pet_key must be a non-empty str"):
        petct_preprocessing(pet_key="")
    pre, out = preprocessed
    with pytest.raises(ValueError, match="prediction spatial shape must equal reference's"):
        invert_petct_preprocessing(pre, prediction=torch.zeros(1, 8, 8, 8), reference=out["pet"])
    patch_pre = petct_preprocessing(spatial_size=SMALL, patch_size=(16, 16, 16))
    with pytest.raises(ValueError, match="preprocessing must be built without patch_size"):
        invert_petct_preprocessing(patch_pre, prediction=out["pet"], reference=out["pet"])
