"""The analytic head phantom: tissue values, μ at 511 keV, fit to the grid."""

from __future__ import annotations

import pytest
import torch

from bundle.data.ellipsoid_head import MU_BONE_PER_MM, MU_TISSUE_PER_MM, ellipsoid_head_phantom
from bundle.physics.geometry import ImageGeometry, preset


@pytest.mark.parametrize("name", ["tiny_2d", "tiny_3d", "mmr_2d"])
def test_tissue_values_and_mu(name):
    image = preset(name).image
    activity, mu = ellipsoid_head_phantom(image)
    assert activity.shape == mu.shape == image.shape
    allowed = torch.tensor([0.0, MU_TISSUE_PER_MM, MU_BONE_PER_MM], dtype=mu.dtype)
    assert all(bool(torch.isclose(v, allowed).any()) for v in torch.unique(mu))
    bone = torch.isclose(mu, torch.tensor(MU_BONE_PER_MM, dtype=mu.dtype))
    assert bool(bone.any())
    values = set(torch.unique(activity).tolist())
    assert {0.0, 1.0, 4.0} <= values  # background/skull, white matter, grey matter (FDG 4 : 1)
    # the skull (bone μ) carries no activity; activity lives only where there is tissue
    assert float(activity[bone].abs().max()) == 0.0
    assert float(activity[mu == 0].abs().max()) == 0.0
    # the head fits inside the grid: the outermost voxels are empty
    assert float(mu[:, 0, :].abs().max()) == 0.0 and float(mu[:, :, -1].abs().max()) == 0.0


def test_rejects_non_geometry():
    with pytest.raises(TypeError, match="image must be an ImageGeometry"):
        ellipsoid_head_phantom((1, 10, 10))


def test_same_head_on_two_grids():
    """Sizes are in mm: the white-matter volume is grid independent (to voxelisation error)."""
    coarse = ImageGeometry(shape=(1, 60, 60), voxel_size_mm=(2.0, 4.0, 4.0))
    fine = ImageGeometry(shape=(1, 120, 120), voxel_size_mm=(2.0, 2.0, 2.0))
    a_c, _ = ellipsoid_head_phantom(coarse)
    a_f, _ = ellipsoid_head_phantom(fine)
    area_c = float((a_c == 1.0).sum()) * 16.0
    area_f = float((a_f == 1.0).sum()) * 4.0
    assert area_c == pytest.approx(area_f, rel=0.05)
