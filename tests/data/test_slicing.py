"""LegoPET recipe helpers: rotation angles, axial slice selection, subject split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.data.brainweb import BRAINWEB_SUBJECTS
from bundle.data.slicing import axial_slice_indices, rotation_angles_deg, split_by_subject


def test_rotation_angles():
    angles = rotation_angles_deg(seed=0)
    assert len(angles) == 5 and angles[0] == 0.0
    assert all(-15.0 <= a <= 15.0 for a in angles) and len(set(angles)) == 5
    assert angles == rotation_angles_deg(5, 15.0, seed=0)
    assert angles != rotation_angles_deg(seed=1)
    assert rotation_angles_deg(5, 15.0, seed=np.random.default_rng(0)) == angles
    assert rotation_angles_deg(1, seed=3) == (0.0,)
    assert all(abs(a) <= 2.0 for a in rotation_angles_deg(50, 2.0, seed=4))
    with pytest.raises(ValueError, match="n_rotations must be >= 1"):
        rotation_angles_deg(0, seed=0)
    with pytest.raises(ValueError, match="max_deg must be"):
        rotation_angles_deg(5, -1.0, seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        rotation_angles_deg(seed=1.0)


def test_axial_slice_indices_centred_every_second():
    mask = np.zeros((200, 4, 4), dtype=bool)
    mask[40:160, 1:3, 1:3] = True  # brain in planes 40 ... 159 (120 planes)
    idx = axial_slice_indices(mask)
    assert idx.dtype == np.int64 and idx.shape == (55,)
    assert np.all(np.diff(idx) == 2)
    assert idx[0] >= 40 and idx[-1] <= 159
    assert (idx[0] - 40) - (159 - idx[-1]) in (-1, 0, 1)  # centred
    assert np.array_equal(axial_slice_indices(torch.from_numpy(mask)), idx)
    assert np.array_equal(axial_slice_indices(mask, 3, 10), [89, 99, 109])  # centre 99 of 40 ... 159


def test_axial_slice_indices_errors():
    mask = np.zeros((127, 4, 4))
    mask[30:100] = 1.0  # 70 planes, as a brain on the mMR grid
    with pytest.raises(ValueError, match=r"brain spans 70 axial planes .* need 109"):
        axial_slice_indices(mask)
    assert axial_slice_indices(mask, 35, 2).shape == (35,)
    with pytest.raises(ValueError, match="empty mask"):
        axial_slice_indices(np.zeros((10, 2, 2)))
    with pytest.raises(ValueError, match="mask_zyx must be 3D"):
        axial_slice_indices(np.ones((10, 2)))
    with pytest.raises(TypeError, match="mask_zyx must be a numpy array or torch tensor"):
        axial_slice_indices([[[1]]])
    with pytest.raises(ValueError, match="step must be >= 1"):
        axial_slice_indices(mask, 5, 0)


def test_split_by_subject_counts_disjoint_deterministic():
    split = split_by_subject(BRAINWEB_SUBJECTS, seed=0)
    assert list(split) == ["train", "validation", "test"]
    assert [len(v) for v in split.values()] == [17, 1, 2]
    together = [s for v in split.values() for s in v]
    assert sorted(together) == sorted(BRAINWEB_SUBJECTS) and len(set(together)) == 20
    assert split == split_by_subject(list(BRAINWEB_SUBJECTS), (17, 1, 2), seed=0)
    others = [split_by_subject(BRAINWEB_SUBJECTS, seed=s)["test"] for s in range(1, 6)]
    assert any(o != split["test"] for o in others)
    for part in split.values():  # each list keeps the input order
        assert part == sorted(part, key=BRAINWEB_SUBJECTS.index)


def test_split_by_fractions_and_errors():
    split = split_by_subject(list("abcdefghij"), (0.7, 0.15, 0.15), seed=2)
    assert [len(v) for v in split.values()] == [7, 2, 1]  # largest remainder, ties to the earlier split
    with pytest.raises(ValueError, match="sum to the number of subjects 20"):
        split_by_subject(BRAINWEB_SUBJECTS, (16, 1, 2), seed=0)
    with pytest.raises(ValueError, match="fractions must be >= 0 and sum to 1"):
        split_by_subject(BRAINWEB_SUBJECTS, (0.5, 0.2, 0.2), seed=0)
    with pytest.raises(ValueError, match="3 entries"):
        split_by_subject(BRAINWEB_SUBJECTS, (18, 2), seed=0)
    with pytest.raises(ValueError, match="unique"):
        split_by_subject([1, 1, 2], (1, 1, 1), seed=0)
    with pytest.raises(TypeError, match="subjects must be a sequence"):
        split_by_subject("abc", (1, 1, 1), seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        split_by_subject(BRAINWEB_SUBJECTS, seed=None)
