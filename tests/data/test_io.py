"""NIfTI/sinogram I/O: geometry round trip (spacing, origin, axis order), atomic writes, clear errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.data.io import load_image, load_sinogram, save_image, save_sinogram
from bundle.physics import ImageGeometry


def test_image_round_trip_keeps_axes_spacing_and_origin(tmp_path):
    geometry = ImageGeometry(shape=(3, 4, 5), voxel_size_mm=(2.5, 1.5, 1.0), origin_mm=(-10.0, 3.0, 7.0))
    image = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    save_image(tmp_path / "a.nii.gz", image, geometry)
    loaded, g = load_image(tmp_path / "a.nii.gz")
    assert torch.equal(loaded, image)
    assert g == geometry
    # independent check with nibabel: array axis 0 of the file is x, and the affine maps voxel (i,j,k)=(x,y,z)
    nii = nib.load(str(tmp_path / "a.nii.gz"))
    assert nii.shape == (5, 4, 3)
    world = nii.affine @ np.array([4, 3, 2, 1.0])  # x index 4, y index 3, z index 2
    assert np.allclose(world[:3], [7.0 + 4 * 1.0, 3.0 + 3 * 1.5, -10.0 + 2 * 2.5])
    assert float(np.asarray(nii.dataobj)[4, 3, 2]) == float(image[2, 3, 4])
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_sinogram_round_trip_and_shape_check(tmp_path):
    sino = torch.rand(2, 3, 4)
    save_sinogram(tmp_path / "s.npy", sino)
    torch.testing.assert_close(load_sinogram(tmp_path / "s.npy", expected_shape=(2, 3, 4)), sino)
    with pytest.raises(ValueError, match=r"expected \(2, 3, 5\)"):
        load_sinogram(tmp_path / "s.npy", expected_shape=(2, 3, 5))


def test_errors_for_missing_corrupt_and_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "missing.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(ValueError, match="cannot read NIfTI image"):
        load_image(tmp_path / "bad.nii.gz")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read sinogram"):
        load_sinogram(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=r"must be a \.npy array of counts .*got an image file"):
        load_sinogram(tmp_path / "bad.nii.gz")  # a NIfTI where a sinogram is expected
    np.save(tmp_path / "objects.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="must hold integer or floating counts, got dtype <U1"):
        load_sinogram(tmp_path / "objects.npy")
    geometry = ImageGeometry(shape=(3, 4, 5), voxel_size_mm=(1, 1, 1))
    with pytest.raises(ValueError, match="must equal the geometry shape"):
        save_image(tmp_path / "x.nii.gz", torch.zeros(3, 4, 4), geometry)
