"""The embedded MNI152 FDG phantom: tissue values, μ-map, head shells, seeding, lesions and fit to the grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.data.brain import MU_BONE_PER_MM, MU_TISSUE_PER_MM, BrainPhantom, Tissue
from bundle.data.mni152 import ACTIVITY_SCALE_RANGE, mni152_brain_phantom, mni152_tissue_fractions
from bundle.physics.geometry import ImageGeometry, preset

MMR_2D = preset("mmr_2d").image
SMALL_3D = ImageGeometry(shape=(28, 40, 40), voxel_size_mm=(8.0, 6.0, 6.0))


@pytest.fixture(scope="module")
def slice_phantom() -> BrainPhantom:
    return mni152_brain_phantom(image=MMR_2D, seed=7)


def test_grey_white_ratio_in_pure_tissue():
    fractions = mni152_tissue_fractions(image=MMR_2D, seed=3)
    phantom = mni152_brain_phantom(image=MMR_2D, seed=3, num_lesions=0)
    gm = torch.from_numpy(fractions[Tissue.GREY_MATTER] > 0.98)
    wm = torch.from_numpy(fractions[Tissue.WHITE_MATTER] > 0.98)
    assert int(gm.sum()) > 20 and int(wm.sum()) > 200
    ratio = float(phantom.activity[gm].mean() / phantom.activity[wm].mean())
    assert ratio == pytest.approx(4.0, rel=0.03)  # 2 % partial volume left in "pure" voxels
    # exactly: activity = scale * (4 f_gm + 1 f_wm + 0.5 f_skin), one scale factor in the documented range
    model = 4 * fractions[Tissue.GREY_MATTER] + fractions[Tissue.WHITE_MATTER] + 0.5 * fractions[Tissue.SKIN]
    inside = model > 0.2
    scale = phantom.activity.numpy()[inside] / model[inside]
    assert np.ptp(scale) < 1e-4 and ACTIVITY_SCALE_RANGE[0] <= scale.mean() <= ACTIVITY_SCALE_RANGE[1]


def test_mu_values_and_activity_range(slice_phantom):
    mu, activity = slice_phantom.mu_map_per_mm, slice_phantom.activity
    assert mu.dtype == activity.dtype == slice_phantom.t1.dtype == torch.float32
    assert float(mu.min()) >= 0.0 and float(mu.max()) <= MU_BONE_PER_MM + 1e-7
    for value in (0.0, MU_TISSUE_PER_MM, MU_BONE_PER_MM):  # pure air, soft tissue and bone are all present
        assert int((mu - value).abs().lt(1e-6).sum()) > 50
    assert float(activity.min()) >= 0.0 and float(activity.max()) > 3.0
    assert float(activity[mu == 0].abs().max()) == 0.0  # no activity in air


@pytest.mark.parametrize("direction", [(0, 1), (0, -1), (1, 0), (-1, 0)])
def test_bone_surrounds_brain(slice_phantom, direction):
    """A ray from the centre meets brain, then bone, then air."""
    n = MMR_2D.shape[1]
    c = n // 2
    steps = np.arange(c - 1)
    ys, xs = c + direction[0] * steps, c + direction[1] * steps
    act = slice_phantom.activity[0, ys, xs].numpy()
    mu = slice_phantom.mu_map_per_mm[0, ys, xs].numpy()
    brain = np.flatnonzero(act > 0.75)  # scalp carries at most 0.5 x 1.2
    bone = np.flatnonzero(mu > 0.5 * (MU_TISSUE_PER_MM + MU_BONE_PER_MM))
    assert brain.size and bone.size
    assert brain.max() < bone.min()
    air = np.flatnonzero(mu[bone.max() :] == 0)
    assert air.size and act[bone.max() + air.min() :].max() == 0


def test_seeding():
    a = mni152_brain_phantom(image=MMR_2D, seed=11)
    b = mni152_brain_phantom(image=MMR_2D, seed=11)
    c = mni152_brain_phantom(image=MMR_2D, seed=12)
    for name in ("activity", "mu_map_per_mm", "t1"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))
    assert a.description == b.description != c.description
    fixed = mni152_brain_phantom(image=MMR_2D, seed=11, rotation_deg=0.0)
    assert "yaw 0.00 deg, tilts 0.00/0.00" in fixed.description
    assert not torch.equal(fixed.mu_map_per_mm, a.mu_map_per_mm)


def test_lesions_change_activity_locally():
    plain = mni152_brain_phantom(image=SMALL_3D, seed=5, num_lesions=0)
    lesioned = mni152_brain_phantom(image=SMALL_3D, seed=5, num_lesions=2)
    assert torch.equal(plain.mu_map_per_mm, lesioned.mu_map_per_mm)
    fractions = mni152_tissue_fractions(image=SMALL_3D, seed=5)
    brain = torch.from_numpy(fractions[Tissue.GREY_MATTER] + fractions[Tissue.WHITE_MATTER])
    changed = (plain.activity - lesioned.activity).abs() > 1e-4
    assert 0 < int(changed.sum()) < 0.05 * int((brain > 0.5).sum())
    assert float(brain[changed].min()) > 0  # only grey/white matter voxels change
    assert lesioned.description.count("r=") == 2


@pytest.mark.parametrize("image", [MMR_2D, SMALL_3D], ids=["mmr_2d", "small_3d"])
def test_centred_and_fits(image):
    phantom = mni152_brain_phantom(image=image, seed=2)
    assert phantom.activity.shape == image.shape and phantom.image == image
    mu = phantom.mu_map_per_mm
    assert float(mu[:, 0].max()) == float(mu[:, -1].max()) == 0.0  # transaxial borders empty
    assert float(mu[:, :, 0].max()) == float(mu[:, :, -1].max()) == 0.0
    head = mu > 0
    for axis, voxel in ((1, image.voxel_size_mm[1]), (2, image.voxel_size_mm[2])):
        idx = torch.nonzero(head.any(dim=tuple(a for a in range(3) if a != axis))).flatten().double()
        centre_mm = (float(idx.min() + idx.max()) / 2 - (image.shape[axis] - 1) / 2) * voxel
        assert abs(centre_mm) < 15.0
    if image.shape[0] > 1:
        assert float(mu[0].max()) == float(mu[-1].max()) == 0.0  # whole head inside the axial field
    assert float(phantom.activity.min()) >= 0.0


def test_bad_arguments():
    with pytest.raises(TypeError, match="image must be an ImageGeometry"):
        mni152_brain_phantom(image=(1, 10, 10), seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        mni152_brain_phantom(image=MMR_2D, seed=1.5)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        mni152_brain_phantom(image=MMR_2D, seed=-1)
    with pytest.raises(ValueError, match="num_lesions must be"):
        mni152_brain_phantom(image=MMR_2D, seed=0, num_lesions=4)
    with pytest.raises(ValueError, match="template_resolution_mm must be 1 or 2"):
        mni152_brain_phantom(image=MMR_2D, seed=0, template_resolution_mm=3)
    with pytest.raises(ValueError, match="deformation_mm must be"):
        mni152_brain_phantom(image=MMR_2D, seed=0, deformation_mm=-1.0)
