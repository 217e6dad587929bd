"""Lesion metrics against hand-computed values on piecewise-constant volumes."""

import math

import pytest
import torch

from bundle.metrics.lesions import erode, lesion_metrics, region_cov, summarise_lesions


def _phantom():
    truth = torch.ones(16, 16, 16)
    labels = torch.zeros(16, 16, 16, dtype=torch.long)
    labels[6:9, 6:9, 6:9] = 1
    truth[labels == 1] = 4.0
    return truth, labels


def test_perfect_image_recovers_everything():
    truth, labels = _phantom()
    (row,) = lesion_metrics(truth, truth, labels)
    assert row["voxels"] == 27
    assert row["true_contrast"] == pytest.approx(4.0)
    assert row["contrast_recovery"] == pytest.approx(1.0)
    assert row["suv_mean_bias"] == pytest.approx(0.0)
    assert row["suv_max_bias"] == pytest.approx(0.0)


def test_half_contrast_and_global_scale():
    truth, labels = _phantom()
    image = torch.where(labels == 1, torch.tensor(2.5), torch.tensor(1.0))
    (row,) = lesion_metrics(image, truth, labels)
    assert row["contrast_recovery"] == pytest.approx((2.5 - 1) / (4 - 1))
    assert row["suv_mean_bias"] == pytest.approx(2.5 / 4 - 1)
    (scaled,) = lesion_metrics(2 * truth[None, None], truth, labels)  # a global scale keeps the contrast
    assert scaled["contrast_recovery"] == pytest.approx(1.0)
    assert scaled["suv_max_bias"] == pytest.approx(1.0)


def test_shell_excludes_other_lesions_and_is_local():
    truth, labels = _phantom()
    labels[6:9, 6:9, 10] = 2  # a second lesion 2 voxels away, much hotter
    truth[labels == 2] = 20.0
    image = truth.clone()
    image[0, 0, 0] = 100.0  # far outside every shell: no effect
    rows = lesion_metrics(image, truth, labels)
    assert [r["label"] for r in rows] == [1.0, 2.0]
    assert all(r["contrast_recovery"] == pytest.approx(1.0) for r in rows)
    assert rows[0]["true_contrast"] == pytest.approx(4.0)  # the shell holds no voxel of lesion 2


def test_single_voxel_shell_size_and_summary():
    truth = torch.ones(9, 9, 9)
    labels = torch.zeros(9, 9, 9)
    labels[4, 4, 4] = 1
    truth[4, 4, 4] = 3.0
    image = truth.clone()
    image[3:6, 3:6, 3:6] += 1.0  # the 26 nearest shell voxels (of 7³ − 1 = 342) raised by 1
    image[4, 4, 4] = 3.0
    (row,) = lesion_metrics(image, truth, labels)
    bkg = (342 + 26) / 342
    assert row["contrast_recovery"] == pytest.approx((3.0 / bkg - 1) / 2)
    summary = summarise_lesions([row, {**row, "contrast_recovery": math.nan}])
    assert summary["contrast_recovery"] == pytest.approx(row["contrast_recovery"])


def test_region_cov_and_erode():
    image = torch.zeros(4, 4, 4)
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    image[0, 0, 0], image[0, 0, 1] = 1.0, 3.0
    mask[0, 0, :2] = True
    assert region_cov(image, mask) == pytest.approx(math.sqrt(2) / 2)
    cube = torch.zeros(9, 9, 9, dtype=torch.bool)
    cube[2:7, 2:7, 2:7] = True
    assert int(erode(cube, 1).sum()) == 27
    assert int(erode(torch.ones(5, 5, 5, dtype=torch.bool), 1).sum()) == 27  # the border counts as outside


def test_bad_inputs_are_named():
    truth, labels = _phantom()
    with pytest.raises(ValueError, match="one shape"):
        lesion_metrics(truth[:8], truth, labels)
    with pytest.raises(ValueError, match="shell_voxels"):
        lesion_metrics(truth, truth, labels, shell_voxels=(2, 2))
    with pytest.raises(ValueError, match="at least 2 voxels"):
        region_cov(truth, labels == 5)
