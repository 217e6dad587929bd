"""Reading and writing images (NIfTI) and sinograms (.npy) in the bundle's conventions.

Images are (z, y, x) tensors in memory.  NIfTI stores (i, j, k) = (x, y, z) with an affine whose diagonal holds
the voxel sizes (mm) and whose translation is the world position of voxel [0, 0, 0]'s centre, so
``ImageGeometry.origin_mm`` (z, y, x) round-trips.  Sinograms are ``.npy`` float32 arrays of shape
(n_planes, n_views, n_radial) (MONAI's NumpyReader loads them); their layout is recorded in the manifest.
Files are written atomically (temporary file + rename) so an interrupted build never leaves a half file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..physics import ImageGeometry

__all__ = ["atomic_write", "load_image", "load_sinogram", "save_image", "save_sinogram"]


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` for a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_image(path: Path, image: torch.Tensor, geometry: ImageGeometry) -> None:
    """Write a (z, y, x) image as NIfTI (float32) with the geometry's voxel size and origin."""
    import nibabel as nib

    if tuple(image.shape) != geometry.shape:
        raise ValueError(f"image shape {tuple(image.shape)} must equal the geometry shape {geometry.shape}")
    data = image.detach().cpu().permute(2, 1, 0).contiguous().numpy().astype(np.float32)
    vz, vy, vx = geometry.voxel_size_mm
    oz, oy, ox = geometry.origin_mm
    affine = np.array([[vx, 0, 0, ox], [0, vy, 0, oy], [0, 0, vz, oz], [0, 0, 0, 1]], dtype=np.float64)
    atomic_write(Path(path), lambda p: nib.save(nib.Nifti1Image(data, affine), str(p)))


def load_image(path: Path) -> tuple[torch.Tensor, ImageGeometry]:
    """Read a NIfTI written by :func:`save_image` (axis-aligned affine) -> ((z, y, x) tensor, geometry)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        nii = nib.load(str(path))
        data = np.asarray(nii.dataobj, dtype=np.float32)
    except Exception as error:  # nibabel raises several types for corrupt files
        raise ValueError(f"cannot read NIfTI image {path}: {error}") from error
    if data.ndim != 3:
        raise ValueError(f"{path} must hold a 3D image, got shape {data.shape}")
    affine = nii.affine
    if not np.allclose(affine[:3, :3], np.diag(np.diag(affine[:3, :3]))) or (np.diag(affine)[:3] <= 0).any():
        raise ValueError(f"{path} must have a positive axis-aligned affine (x, y, z), got\n{affine}")
    vx, vy, vz = np.diag(affine)[:3]
    ox, oy, oz = affine[:3, 3]
    geometry = ImageGeometry(shape=(data.shape[2], data.shape[1], data.shape[0]), voxel_size_mm=(vz, vy, vx),
                             origin_mm=(oz, oy, ox))
    return torch.from_numpy(np.ascontiguousarray(data.transpose(2, 1, 0))), geometry


def save_sinogram(path: Path, sinogram: torch.Tensor) -> None:
    """Write a (n_planes, n_views, n_radial) sinogram as float32 ``.npy``."""
    if sinogram.ndim != 3:
        raise ValueError(f"sinogram must have shape (n_planes, n_views, n_radial), got {tuple(sinogram.shape)}")
    array = sinogram.detach().cpu().numpy().astype(np.float32)
    atomic_write(Path(path), lambda p: np.save(p, array))


def load_sinogram(path: Path, *, expected_shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """Read a sinogram ``.npy``; ``expected_shape`` (the layout's shape) is checked when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sinogram file {path} does not exist")
    if path.name.endswith((".nii", ".nii.gz", ".dcm")):
        raise ValueError(f"sinogram {path} must be a .npy array of counts (n_planes, n_views, n_radial), got an image "
                         "file (NIfTI / DICOM); images go to --image of uPETe only")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as error:
        raise ValueError(f"cannot read sinogram {path} as a .npy array of counts (n_planes, n_views, n_radial): "
                         f"{error}") from error
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"sinogram {path} must hold integer or floating counts, got dtype {array.dtype}")
    if expected_shape is not None and tuple(array.shape) != tuple(expected_shape):
        raise ValueError(f"sinogram {path} has shape {array.shape}, expected {tuple(expected_shape)} for this layout")
    return torch.from_numpy(array)
