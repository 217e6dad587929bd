"""bundle.app: inputs that used to end in a traceback or an internal message now name the argument."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bundle.app import build_task
from bundle.app.cli import main
from bundle.app.config import method_parser
from bundle.app.upete import _load_volumes


def _nifti(path, shape):
    nib.save(nib.Nifti1Image(np.ones(shape, dtype=np.float32), np.eye(4)), str(path))
    return str(path)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((8, 8), r"must be one 3D volume \(x, y, z\); .* holds a 2D image \(one slice\) of shape \(8, 8\)"),
     ((8, 8, 8, 2), r"must be one 3D volume \(x, y, z\); .* holds a 4D image \(a time series or several "
                    r"channels\) of shape \(8, 8, 8, 2\)")],
)
def test_upete_pet_of_another_dimension_is_named(tmp_path, shape, match):
    with pytest.raises(ValueError, match=r"request\['image'\] \(--image \(low-dose PET\)\) " + match):
        _load_volumes({"image": _nifti(tmp_path / "pet.nii.gz", shape)}, ["image"])


def test_upete_volume_of_one_frame_is_accepted(tmp_path):
    volume = _load_volumes({"image": _nifti(tmp_path / "pet.nii.gz", (8, 8, 8, 1))}, ["image"])["image"]
    assert volume.numel() == 8 ** 3


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_upete_unreadable_nifti_is_named(tmp_path, damage):
    path = tmp_path / "ct.nii.gz"
    _nifti(path, (8, 8, 8))
    data = path.read_bytes()
    path.write_bytes(b"garbage" * 40 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"request\['ct'\] \(--ct \(CT\)\) must be a readable NIfTI file or DICOM "
                                         r"series folder; .*ct\.nii\.gz could not be read"):
        _load_volumes({"ct": str(path)}, ["ct"])


def test_upete_unknown_variant_is_named_before_the_checkpoint_path():
    with pytest.raises(ValueError, match=r"variant must be one of \['LDM', 'LDM-P', 'LDM-CT', 'LDM-P-CT'\], got "
                                         r"'XYZ'"):
        build_task("upete", overrides={"variant": "XYZ"})


def test_override_text_for_a_number_is_refused():
    with pytest.raises(ValueError, match=r"override num_inference_steps='abc': 'abc' is not JSON, and "
                                         r"'num_inference_steps' holds a number in the configs"):
        method_parser("petdds", overrides={"num_inference_steps": "abc"})
    assert method_parser("petdds", overrides={"dataset_dir": "data/x"})["dataset_dir"] == "data/x"  # a string id


def test_checkpoint_of_another_method_is_a_short_message(tmp_path, capsys):
    """The shipped LegoPET weights given to PET-DDS-δ: counts and three examples, not every key (was 20 KB)."""
    sinogram = tmp_path / "s.npy"
    np.save(sinogram, np.ones((16, 64, 64), dtype=np.float32))
    status = main(["infer", "--method", "petdds", "--image", str(sinogram), "--background", "1", "--output",
                   str(tmp_path / "o.nii.gz"), "--checkpoint", "models/legopet.pt", "--override", 'device="cpu"'])
    err = capsys.readouterr().err
    assert status == 2 and len(err) < 700 and "Traceback" not in err
    assert "or a checkpoint of another method?" in err
    assert "154 of the 154 configured entries are missing (e.g. conv_in.conv.weight" in err
