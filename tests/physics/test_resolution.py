from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from bundle.physics.operators import LinearOperator
from bundle.physics.resolution import FWHM_PER_SIGMA, GaussianResolution, gaussian_kernel_1d


def _measured_fwhm(profile: np.ndarray) -> float:
    """FWHM in samples of a single-peaked profile, half-maximum crossings by linear interpolation."""
    peak = int(np.argmax(profile))
    half = profile[peak] / 2.0
    left = peak
    while profile[left - 1] > half:
        left -= 1
    right = peak
    while profile[right + 1] > half:
        right += 1
    x_left = left - 1 + (half - profile[left - 1]) / (profile[left] - profile[left - 1])
    x_right = right + (profile[right] - half) / (profile[right] - profile[right + 1])
    return x_right - x_left


def test_is_linear_operator_with_shapes():
    op = GaussianResolution(image_shape=(4, 5, 6), fwhm_mm=3.0, voxel_size_mm=(2.0, 2.0, 2.0))
    assert isinstance(op, LinearOperator)
    assert op.in_shape == op.out_shape == (4, 5, 6)
    assert op.fwhm_mm == (3.0, 3.0, 3.0)


def test_adjointness_float64():
    op = GaussianResolution(image_shape=(5, 7, 6), fwhm_mm=(4.0, 5.0, 6.0), voxel_size_mm=(2.0, 1.5, 2.5))
    assert op.adjointness_test(generator=torch.Generator().manual_seed(0)) < 1e-10


def test_matches_scipy_gaussian_filter_zero_padding():
    voxel = (2.0, 1.5, 2.5)
    fwhm = (4.0, 5.0, 6.0)
    op = GaussianResolution(image_shape=(6, 8, 7), fwhm_mm=fwhm, voxel_size_mm=voxel)
    x = torch.rand(6, 8, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = [f / (2 * math.sqrt(2 * math.log(2))) / v for f, v in zip(fwhm, voxel, strict=True)]
    truth = ndimage.gaussian_filter(x.numpy(), sigma, mode="constant", cval=0.0, truncate=4.0)
    np.testing.assert_allclose(op(x).numpy(), truth, rtol=1e-12, atol=1e-14)


def test_total_activity_preserved_away_from_edges():
    op = GaussianResolution(image_shape=(21, 21, 21), fwhm_mm=4.0, voxel_size_mm=(2.0, 2.0, 2.0))
    x = torch.zeros(21, 21, 21, dtype=torch.float64)
    x[8:13, 9:12, 10] = torch.rand(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert float(op(x).sum()) == pytest.approx(float(x.sum()), rel=1e-12)


def test_activity_lost_at_edge_with_zero_padding():
    op = GaussianResolution(image_shape=(1, 9, 9), fwhm_mm=4.0, voxel_size_mm=(2.0, 2.0, 2.0))
    x = torch.zeros(1, 9, 9, dtype=torch.float64)
    x[0, 0, 4] = 1.0
    assert float(op(x).sum()) < 0.99


def test_fwhm_of_blurred_point_matches():
    voxel = (1.0, 0.5, 0.8)
    fwhm = (6.0, 4.0, 5.0)
    shape = (31, 41, 37)
    op = GaussianResolution(image_shape=shape, fwhm_mm=fwhm, voxel_size_mm=voxel)
    x = torch.zeros(shape, dtype=torch.float64)
    c = tuple(s // 2 for s in shape)
    x[c] = 1.0
    y = op(x).numpy()
    profiles = (y[:, c[1], c[2]], y[c[0], :, c[2]], y[c[0], c[1], :])
    for axis, profile in enumerate(profiles):
        measured_mm = _measured_fwhm(profile) * voxel[axis]
        assert measured_mm == pytest.approx(fwhm[axis], rel=0.03), axis
        # second moment of the kernel = σ² (up to truncation)
        k = np.arange(profile.size) - c[axis]
        sigma_mm = math.sqrt(float((profile * k**2).sum() / profile.sum())) * voxel[axis]
        assert sigma_mm == pytest.approx(fwhm[axis] / FWHM_PER_SIGMA, rel=1e-3)


def test_zero_fwhm_is_identity_and_does_not_alias():
    op = GaussianResolution(image_shape=(3, 4, 5), fwhm_mm=0.0, voxel_size_mm=(2.0, 2.0, 2.0))
    x = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(3))
    y = op(x)
    assert torch.equal(y, x)
    y += 1
    assert not torch.equal(y, x)


def test_zero_fwhm_on_one_axis_leaves_that_axis_alone():
    op = GaussianResolution(image_shape=(5, 9, 9), fwhm_mm=(0.0, 4.0, 4.0), voxel_size_mm=(2.0, 2.0, 2.0))
    x = torch.zeros(5, 9, 9, dtype=torch.float64)
    x[2, 4, 4] = 1.0
    y = op(x)
    assert torch.all(y[[0, 1, 3, 4]] == 0)
    assert float(y[2].sum()) == pytest.approx(1.0, rel=1e-12)


def test_single_slice_gets_2d_blur():
    voxel = (2.0, 2.0, 2.0)
    op2d = GaussianResolution(image_shape=(1, 15, 15), fwhm_mm=5.0, voxel_size_mm=voxel)
    x = torch.zeros(1, 15, 15, dtype=torch.float64)
    x[0, 7, 7] = 1.0
    y = op2d(x)
    assert float(y.sum()) == pytest.approx(1.0, rel=1e-12)
    sigma = 5.0 / FWHM_PER_SIGMA / 2.0
    truth = ndimage.gaussian_filter(x[0].numpy(), sigma, mode="constant", truncate=4.0)
    np.testing.assert_allclose(y[0].numpy(), truth, rtol=1e-12, atol=1e-15)
    assert op2d.adjointness_test(generator=torch.Generator().manual_seed(4)) < 1e-10


def test_float32_matches_float64():
    op = GaussianResolution(image_shape=(4, 6, 5), fwhm_mm=3.0, voxel_size_mm=(1.0, 1.0, 1.0))
    x = torch.rand(4, 6, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y32 = op(x.float())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), op(x), rtol=1e-5, atol=1e-6)


def test_kernel_longer_than_image_is_exact():
    op = GaussianResolution(image_shape=(3, 3, 3), fwhm_mm=20.0, voxel_size_mm=(1.0, 1.0, 1.0))
    x = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    sigma = 20.0 / FWHM_PER_SIGMA
    truth = ndimage.gaussian_filter(x.numpy(), sigma, mode="constant", truncate=4.0)
    np.testing.assert_allclose(op(x).numpy(), truth, rtol=1e-12)


def test_gradient_through_blur_is_adjoint():
    op = GaussianResolution(image_shape=(3, 4, 5), fwhm_mm=3.0, voxel_size_mm=(1.0, 1.0, 1.0))
    x = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64).requires_grad_()
    w = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (op(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, op.adjoint(w))


def test_kernel_sums_to_one_and_identity_for_zero_sigma():
    assert float(gaussian_kernel_1d(1.7).sum()) == pytest.approx(1.0, rel=1e-15)
    assert torch.equal(gaussian_kernel_1d(0.0), torch.ones(1, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    op = GaussianResolution(image_shape=(4, 6, 5), fwhm_mm=3.0, voxel_size_mm=(1.0, 1.0, 1.0))
    x = torch.rand(4, 6, 5, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(op(x.cuda()).cpu(), op(x))


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"image_shape": (4, 5), "fwhm_mm": 1.0, "voxel_size_mm": (1.0, 1.0, 1.0)}, ValueError),
        ({"image_shape": (4, 0, 5), "fwhm_mm": 1.0, "voxel_size_mm": (1.0, 1.0, 1.0)}, ValueError),
        ({"image_shape": (4, 5.0, 5), "fwhm_mm": 1.0, "voxel_size_mm": (1.0, 1.0, 1.0)}, ValueError),
        ({"image_shape": (4, 5, 5), "fwhm_mm": -1.0, "voxel_size_mm": (1.0, 1.0, 1.0)}, ValueError),
        ({"image_shape": (4, 5, 5), "fwhm_mm": float("nan"), "voxel_size_mm": (1.0, 1.0, 1.0)}, ValueError),
        ({"image_shape": (4, 5, 5), "fwhm_mm": (1.0, 2.0), "voxel_size_mm": (1.0, 1.0, 1.0)}, TypeError),
        ({"image_shape": (4, 5, 5), "fwhm_mm": "2", "voxel_size_mm": (1.0, 1.0, 1.0)}, TypeError),
        ({"image_shape": (4, 5, 5), "fwhm_mm": 1.0, "voxel_size_mm": (1.0, 0.0, 1.0)}, ValueError),
        ({"image_shape": (4, 5, 5), "fwhm_mm": 1.0, "voxel_size_mm": 1.0}, TypeError),
        (
            {"image_shape": (4, 5, 5), "fwhm_mm": 1.0, "voxel_size_mm": (1.0, 1.0, 1.0), "truncate_sigmas": 0.0},
            ValueError,
        ),
        (
            {"image_shape": (4, 5, 5), "fwhm_mm": 1.0, "voxel_size_mm": (1.0, 1.0, 1.0), "truncate_sigmas": "4"},
            TypeError,
        ),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        GaussianResolution(**kwargs)


def test_rejects_positional_arguments():
    with pytest.raises(TypeError):
        GaussianResolution((4, 5, 5), 1.0, (1.0, 1.0, 1.0))  # type: ignore[misc]


def test_apply_rejects_wrong_shape_and_integer_input():
    op = GaussianResolution(image_shape=(2, 3, 4), fwhm_mm=1.0, voxel_size_mm=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        op(torch.zeros(2, 3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        op(torch.zeros(2, 3, 4, dtype=torch.int64))


def test_gaussian_kernel_rejects_bad_arguments():
    with pytest.raises(ValueError, match="sigma_voxels"):
        gaussian_kernel_1d(-1.0)
    with pytest.raises(ValueError, match="truncate_sigmas"):
        gaussian_kernel_1d(1.0, truncate_sigmas=-2.0)
