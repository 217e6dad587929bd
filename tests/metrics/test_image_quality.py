"""PSNR / NRMSE / SSIM against analytic truths and MONAI's PSNRMetric / SSIMMetric; argument checks."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from monai.metrics import PSNRMetric, SSIMMetric

from bundle.metrics import (
    DataRange,
    NRMSENormalisation,
    SSIMKernel,
    SSIMMaskPolicy,
    nrmse,
    psnr,
    ssim,
)


def _exact(message: str) -> str:
    """Regex matching exactly ``message`` (pytest.raises searches)."""
    return f"^{re.escape(message)}$"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pair(shape: tuple[int, ...], seed: int = 0, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """A positive reference in [0.5, 1.5) and a noisy estimate, both float32-representable float64."""
    g = _gen(seed)
    r = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
    x = r + noise * torch.randn(shape, generator=g, dtype=torch.float64)
    return x.float().double(), r.float().double()


def _monai_ssim(x: torch.Tensor, r: torch.Tensor, spatial_dims: int, data_range: float, **kw: object) -> torch.Tensor:
    metric = SSIMMetric(spatial_dims=spatial_dims, data_range=data_range, reduction="none", **kw)
    return metric(x.float(), r.float()).double()


# ------------------------------------------------------------------------------------------------------- PSNR


@pytest.mark.parametrize("error", [0.05, -0.2, 1e-3])
@pytest.mark.parametrize("data_range", [1.0, 2.5])
def test_psnr_of_constant_error_is_analytic(error: float, data_range: float) -> None:
    _, r = _pair((16, 16))
    value = psnr(r + error, r, data_range=data_range)
    assert value.shape == () and value.dtype == torch.float64
    assert float(value) == pytest.approx(20 * math.log10(data_range / abs(error)), abs=1e-9)


def test_psnr_is_batch_aware_over_leading_dims() -> None:
    _, r = _pair((2, 3, 8, 8))
    errors = torch.tensor([[0.1, 0.2, 0.3], [0.01, 0.02, 0.5]], dtype=torch.float64)
    value = psnr(r + errors[..., None, None], r, data_range=1.0, spatial_dims=2)
    assert value.shape == (2, 3)
    torch.testing.assert_close(value, -20 * torch.log10(errors), rtol=0, atol=1e-9)
    # spatial_dims=3: one value per leading index; None: the whole tensor is one image
    assert psnr(r + errors[..., None, None], r, data_range=1.0, spatial_dims=3).shape == (2,)
    assert psnr(r + 0.1, r, data_range=1.0).shape == ()


def test_psnr_data_range_from_reference() -> None:
    r = torch.linspace(2.0, 10.0, 64, dtype=torch.float64).reshape(8, 8)
    e = 0.25
    assert float(psnr(r + e, r, data_range=DataRange.REFERENCE_MAX)) == pytest.approx(20 * math.log10(10.0 / e))
    assert float(psnr(r + e, r, data_range="reference_range")) == pytest.approx(20 * math.log10(8.0 / e))
    # within the mask: max 6 (values 2..6 kept), range 4
    mask = r <= 6.0 + 1e-12
    lo, hi = float(r[mask].min()), float(r[mask].max())
    assert float(psnr(r + e, r, data_range=DataRange.REFERENCE_MAX, mask=mask)) == pytest.approx(
        20 * math.log10(hi / e)
    )
    assert float(psnr(r + e, r, data_range=DataRange.REFERENCE_RANGE, mask=mask)) == pytest.approx(
        20 * math.log10((hi - lo) / e)
    )


def test_psnr_reference_max_is_the_reference_normalised_psnr() -> None:
    x, r = _pair((3, 16, 16))
    peak = r.amax(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(
        psnr(x, r, data_range=DataRange.REFERENCE_MAX, spatial_dims=2),
        psnr(x / peak, r / peak, data_range=1.0, spatial_dims=2),
    )


def test_psnr_identical_images_is_inf() -> None:
    _, r = _pair((8, 8))
    assert math.isinf(float(psnr(r, r, data_range=1.0))) and float(psnr(r, r, data_range=1.0)) > 0


@pytest.mark.parametrize("shape", [(3, 1, 16, 16), (2, 1, 8, 8, 8), (2, 2, 9, 7)])
def test_psnr_matches_monai_psnrmetric(shape: tuple[int, ...]) -> None:
    x, r = _pair(shape, noise=0.2)
    ours = psnr(x, r, data_range=1.7, spatial_dims=len(shape) - 1)  # one value per batch entry, as MONAI
    reference = PSNRMetric(max_val=1.7, reduction="none")(x, r)
    torch.testing.assert_close(ours, reference.reshape(-1), rtol=0, atol=1e-6)


def test_masked_psnr_and_nrmse_ignore_voxels_outside_the_mask() -> None:
    x, r = _pair((2, 12, 12))
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[3:9, 2:7] = True
    x2, r2 = x.clone(), r.clone()
    x2[:, ~mask] = 100.0
    r2[:, ~mask] = -7.0
    for fn, kw in ((psnr, {"data_range": DataRange.REFERENCE_RANGE}), (nrmse, {})):
        a = fn(x, r, mask=mask, spatial_dims=2, **kw)
        torch.testing.assert_close(a, fn(x2, r2, mask=mask, spatial_dims=2, **kw), rtol=0, atol=0)
        # independent truth: the metric of the selected voxels as plain vectors; full-shape mask == spatial mask
        for i in range(2):
            assert float(a[i]) == pytest.approx(float(fn(x[i][mask], r[i][mask], **kw)), abs=1e-12)
        torch.testing.assert_close(a, fn(x, r, mask=mask.expand(2, 12, 12), spatial_dims=2, **kw))
    e = (x - r)[:, mask]
    expected = 20 * torch.log10(r[:, mask].amax(-1) - r[:, mask].amin(-1)) - 10 * torch.log10(e.square().mean(-1))
    torch.testing.assert_close(psnr(x, r, data_range="reference_range", mask=mask, spatial_dims=2), expected)


# ------------------------------------------------------------------------------------------------------ NRMSE


@pytest.mark.parametrize("a", [0.1, -0.1, 0.25, -0.9])
def test_nrmse_of_scaled_image_is_abs_scale(a: float) -> None:
    _, r = _pair((10, 11))
    assert float(nrmse((1 + a) * r, r)) == pytest.approx(abs(a), abs=1e-12)
    assert float(nrmse((1 + a) * r, r, normalisation=NRMSENormalisation.NORM)) == pytest.approx(abs(a), abs=1e-12)


def test_nrmse_range_and_mean_normalisations() -> None:
    r = torch.tensor([[1.0, 2.0], [3.0, 6.0]], dtype=torch.float64)
    e = 0.3  # constant error: RMSE = 0.3
    assert float(nrmse(r + e, r, normalisation="range")) == pytest.approx(e / 5.0)
    assert float(nrmse(r + e, r, normalisation=NRMSENormalisation.MEAN)) == pytest.approx(e / 3.0)
    assert float(nrmse(r + e, r)) == pytest.approx(e * 2 / math.sqrt(1 + 4 + 9 + 36))
    batched = nrmse(torch.stack([1.1 * r, 0.8 * r]), torch.stack([r, r]), spatial_dims=2)
    torch.testing.assert_close(batched, torch.tensor([0.1, 0.2], dtype=torch.float64))


# ------------------------------------------------------------------------------------------------------- SSIM


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kernel", list(SSIMKernel))
def test_ssim_of_identical_images_is_one(spatial_dims: int, kernel: SSIMKernel) -> None:
    _, r = _pair((2, *([14] * spatial_dims)))
    value = ssim(r, r, data_range=1.0, spatial_dims=spatial_dims, kernel=kernel)
    assert value.shape == (2,) and value.dtype == torch.float64
    torch.testing.assert_close(value, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
    mask = torch.zeros((14,) * spatial_dims, dtype=torch.bool)
    mask[(slice(1, 13),) * spatial_dims] = True
    masked = ssim(r, r, data_range=1.0, spatial_dims=spatial_dims, kernel=kernel, mask=mask, mask_policy="window")
    torch.testing.assert_close(masked, torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("spatial_dims", "kernel", "options", "monai_options"),
    [
        (2, SSIMKernel.GAUSSIAN, {}, {}),
        (2, SSIMKernel.UNIFORM, {}, {"kernel_type": "uniform", "win_size": 7}),
        (3, SSIMKernel.GAUSSIAN, {}, {}),
        (3, SSIMKernel.UNIFORM, {}, {"kernel_type": "uniform", "win_size": 7}),
        (
            2,
            SSIMKernel.GAUSSIAN,
            {"kernel_size": 7, "kernel_sigma": 1.0, "k1": 0.02, "k2": 0.05},
            {"win_size": 7, "kernel_sigma": 1.0, "k1": 0.02, "k2": 0.05},
        ),
    ],
)
def test_ssim_matches_monai_ssimmetric(
    spatial_dims: int, kernel: SSIMKernel, options: dict, monai_options: dict
) -> None:
    # zero-mean data keeps MONAI's float32 arithmetic (mu_xx - mu_x**2) well inside the 1e-6 tolerance
    g = _gen(3)
    shape = (3, 1, *([16] * spatial_dims))
    r = torch.randn(shape, generator=g, dtype=torch.float64).float().double()
    x = (r + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)).float().double()
    ours = ssim(x, r, data_range=4.0, spatial_dims=spatial_dims, kernel=kernel, **options)
    reference = _monai_ssim(x, r, spatial_dims, 4.0, **monai_options)
    assert ours.shape == reference.shape == (3, 1)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
    assert float((ours - 1).abs().min()) > 0.1  # a non-trivial comparison


def test_ssim_batch_dims_are_independent_images() -> None:
    x, r = _pair((2, 3, 14, 13), noise=0.2)
    batched = ssim(x, r, data_range=1.0, spatial_dims=2)
    assert batched.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert float(batched[i, j]) == pytest.approx(float(ssim(x[i, j], r[i, j], data_range=1.0, spatial_dims=2)))


def test_ssim_reference_max_is_the_reference_normalised_ssim() -> None:
    x, r = _pair((2, 16, 16), noise=0.2)
    x, r = 7.0 * x, 7.0 * r
    peak = r.amax(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(
        ssim(x, r, data_range=DataRange.REFERENCE_MAX, spatial_dims=2),
        ssim(x / peak, r / peak, data_range=1.0, spatial_dims=2),
    )
    rng = r.amax(dim=(-2, -1)) - r.amin(dim=(-2, -1))
    for i in range(2):
        assert float(ssim(x, r, data_range="reference_range", spatial_dims=2)[i]) == pytest.approx(
            float(ssim(x[i], r[i], data_range=float(rng[i]), spatial_dims=2))
        )


def test_ssim_window_policy_box_mask_equals_monai_on_the_crop() -> None:
    x, r = _pair((2, 1, 24, 24), noise=0.2)
    mask = torch.zeros(24, 24, dtype=torch.bool)
    mask[4:19, 6:22] = True
    ours = ssim(x, r, data_range=1.0, spatial_dims=2, mask=mask, mask_policy=SSIMMaskPolicy.WINDOW)
    torch.testing.assert_close(ours, _monai_ssim(x[..., 4:19, 6:22], r[..., 4:19, 6:22], 2, 1.0), rtol=0, atol=1e-6)


def test_ssim_centre_policy_box_mask_equals_monai_on_the_crop_grown_by_half_a_window() -> None:
    x, r = _pair((2, 1, 24, 24), noise=0.2)
    mask = torch.zeros(24, 24, dtype=torch.bool)
    mask[8:15, 6:18] = True  # centres 8..14 x 6..17 -> windows span 3..19 x 1..22
    ours = ssim(x, r, data_range=1.0, spatial_dims=2, mask=mask)  # CENTRE is the default
    torch.testing.assert_close(ours, _monai_ssim(x[..., 3:20, 1:23], r[..., 3:20, 1:23], 2, 1.0), rtol=0, atol=1e-6)


def test_masked_ssim_ignores_voxels_outside_the_mask() -> None:
    x, r = _pair((3, 24, 20), noise=0.2)
    mask = torch.zeros(24, 20, dtype=torch.bool)
    mask[7:17, 6:14] = True
    far = torch.ones_like(mask)  # more than kernel_size // 2 = 2 voxels away from the mask
    far[5:19, 4:16] = False
    kw = {"data_range": 1.0, "spatial_dims": 2, "mask": mask, "kernel_size": 5}
    window, centre = ssim(x, r, mask_policy="window", **kw), ssim(x, r, **kw)

    x_out, r_out = x.clone(), r.clone()
    x_out[:, ~mask] = 5.0  # arbitrary change anywhere outside the mask
    r_out[:, ~mask] = 0.0
    torch.testing.assert_close(ssim(x_out, r_out, mask_policy="window", **kw), window, rtol=0, atol=1e-12)
    assert not torch.allclose(ssim(x_out, r_out, **kw), centre)  # CENTRE windows see the mask's neighbours

    x_far, r_far = x.clone(), r.clone()
    x_far[:, far] = 5.0
    r_far[:, far] = 0.0
    torch.testing.assert_close(ssim(x_far, r_far, **kw), centre, rtol=0, atol=1e-12)
    torch.testing.assert_close(ssim(x_far, r_far, mask_policy="window", **kw), window, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------------- tables


# ----------------------------------------------------------------------------------------------- argument checks

_T = torch.ones(8, 8, dtype=torch.float64)


@pytest.mark.parametrize("fn", ["psnr", "nrmse", "ssim"])
@pytest.mark.parametrize(
    ("image", "reference", "exc", "message"),
    [
        (
            torch.ones(8, 8),
            torch.ones(8, 9),
            ValueError,
            "image and reference must have the same shape, got image (8, 8) and reference (8, 9)",
        ),
        (np.ones((8, 8)), _T, TypeError, "image must be a torch.Tensor, got ndarray"),
        (_T, [[1.0]], TypeError, "reference must be a torch.Tensor, got list"),
        (_T.bool(), _T, TypeError, "image must be a real tensor, got dtype torch.bool"),
        (
            _T.clone().index_fill_(0, torch.tensor([2]), math.nan),
            _T,
            ValueError,
            "image must be finite (it holds NaN or ±inf)",
        ),
        (
            _T,
            _T.clone().index_fill_(0, torch.tensor([2]), math.inf),
            ValueError,
            "reference must be finite (it holds NaN or ±inf)",
        ),
    ],
)
def test_input_checks(fn: str, image: object, reference: object, exc: type[Exception], message: str) -> None:
    kw = {"nrmse": {}, "psnr": {"data_range": 1.0}, "ssim": {"data_range": 1.0, "spatial_dims": 2, "kernel_size": 3}}
    with pytest.raises(exc, match=_exact(message)):
        {"psnr": psnr, "nrmse": nrmse, "ssim": ssim}[fn](image, reference, **kw[fn])


@pytest.mark.parametrize("fn", [psnr, ssim])
@pytest.mark.parametrize(
    ("data_range", "reference", "exc", "message"),
    [
        (0.0, _T, ValueError, "data_range must be a finite number > 0 or a DataRange, got 0.0"),
        (-1, _T, ValueError, "data_range must be a finite number > 0 or a DataRange, got -1.0"),
        (math.inf, _T, ValueError, "data_range must be a finite number > 0 or a DataRange, got inf"),
        (math.nan, _T, ValueError, "data_range must be a finite number > 0 or a DataRange, got nan"),
        (True, _T, TypeError, "data_range must be a finite number > 0 or a DataRange, got True"),
        (None, _T, TypeError, "data_range must be a finite number > 0 or a DataRange, got None"),
        ("max", _T, ValueError, "data_range must be one of ['reference_max', 'reference_range'], got 'max'"),
        (
            DataRange.REFERENCE_RANGE,
            _T,
            ValueError,
            "data_range 'reference_range' is not > 0 within the mask",
        ),
        (
            DataRange.REFERENCE_MAX,
            -_T,
            ValueError,
            "data_range 'reference_max' is not > 0 within the mask",
        ),
    ],
)
def test_data_range_checks(fn: object, data_range: object, reference: torch.Tensor, exc: type, message: str) -> None:
    kw = {"spatial_dims": 2, "kernel_size": 3} if fn is ssim else {}
    with pytest.raises(exc, match=_exact(message)):
        fn(reference, reference, data_range=data_range, **kw)  # type: ignore[operator]


def test_data_range_is_required() -> None:
    with pytest.raises(TypeError, match="data_range"):
        psnr(_T, _T)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="data_range"):
        ssim(_T, _T, spatial_dims=2)  # type: ignore[call-arg]


def test_reference_derived_data_range_names_the_bad_images() -> None:
    r = torch.ones(2, 3, 4, 4, dtype=torch.float64)
    r[1, 2] += torch.arange(16, dtype=torch.float64).reshape(4, 4)
    message = "data_range 'reference_range' is not > 0 within the mask for the image(s) at batch index "
    with pytest.raises(ValueError, match=_exact(message + "[(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]")):
        psnr(r, r, data_range="reference_range", spatial_dims=2)


@pytest.mark.parametrize("fn", ["psnr", "nrmse", "ssim"])
@pytest.mark.parametrize(
    ("mask", "exc", "message"),
    [
        (torch.ones(4, 4), TypeError, "mask must be a torch.Tensor of dtype torch.bool, got dtype torch.float32"),
        (np.ones((4, 4), dtype=bool), TypeError, "mask must be a torch.Tensor of dtype torch.bool, got ndarray"),
        (
            torch.ones(4, 5, dtype=torch.bool),
            ValueError,
            "mask must have the image's shape (2, 4, 4) or its spatial shape (4, 4), got (4, 5)",
        ),
        (
            torch.zeros(4, 4, dtype=torch.bool),
            ValueError,
            "mask selects no voxel for the image(s) at batch index [0, 1]",
        ),
        (
            torch.tensor([[[True] * 4] * 4, [[False] * 4] * 4]),
            ValueError,
            "mask selects no voxel for the image(s) at batch index [1]",
        ),
    ],
)
def test_mask_checks(fn: str, mask: object, exc: type, message: str) -> None:
    x = torch.rand(2, 4, 4, generator=_gen(), dtype=torch.float64) + 1.0
    kw = {"nrmse": {}, "psnr": {"data_range": 1.0}, "ssim": {"data_range": 1.0, "kernel_size": 3}}[fn]
    with pytest.raises(exc, match=_exact(message)):
        {"psnr": psnr, "nrmse": nrmse, "ssim": ssim}[fn](x, x, mask=mask, spatial_dims=2, **kw)


@pytest.mark.parametrize(
    ("spatial_dims", "exc", "message"),
    [
        (0, ValueError, "spatial_dims must be >= 1, got 0"),
        (3, ValueError, "spatial_dims=3 exceeds the number of image dimensions (2)"),
        (2.0, TypeError, "spatial_dims must be an int >= 1, got 2.0"),
    ],
)
def test_spatial_dims_checks_psnr_nrmse(spatial_dims: object, exc: type, message: str) -> None:
    for fn, kw in ((psnr, {"data_range": 1.0}), (nrmse, {})):
        with pytest.raises(exc, match=_exact(message)):
            fn(_T, _T, spatial_dims=spatial_dims, **kw)


@pytest.mark.parametrize(
    ("options", "exc", "message"),
    [
        ({"spatial_dims": 1}, ValueError, "spatial_dims must be one of [2, 3], got 1"),
        ({"spatial_dims": None}, ValueError, "spatial_dims must be one of [2, 3], got None"),
        ({"spatial_dims": 3}, ValueError, "spatial_dims=3 exceeds the number of image dimensions (2)"),
        ({"kernel_size": 4}, ValueError, "kernel_size must be odd (a window has a centre voxel), got 4"),
        ({"kernel_size": 0}, ValueError, "kernel_size must be >= 1, got 0"),
        ({"kernel_size": 3.0}, TypeError, "kernel_size must be an int >= 1, got 3.0"),
        ({"kernel_size": 9}, ValueError, "kernel_size 9 exceeds the spatial shape (8, 8)"),
        ({}, ValueError, "kernel_size 11 exceeds the spatial shape (8, 8)"),
        ({"kernel_size": 3, "kernel_sigma": 0}, ValueError, "kernel_sigma must be a finite number > 0, got 0.0"),
        ({"kernel_size": 3, "k1": -0.01}, ValueError, "k1 must be a finite number > 0, got -0.01"),
        ({"kernel_size": 3, "k2": "0.03"}, TypeError, "k2 must be a finite number > 0, got '0.03'"),
        ({"kernel": "box"}, ValueError, "kernel must be one of ['gaussian', 'uniform'], got 'box'"),
        ({"mask_policy": "all"}, ValueError, "mask_policy must be one of ['centre', 'window'], got 'all'"),
    ],
)
def test_ssim_option_checks(options: dict, exc: type, message: str) -> None:
    kw = {"data_range": 1.0, "spatial_dims": 2, **options}
    with pytest.raises(exc, match=_exact(message)):
        ssim(_T, _T, **kw)


def test_ssim_mask_without_a_window() -> None:
    x = torch.rand(2, 12, 12, generator=_gen(), dtype=torch.float64)
    border = torch.zeros(12, 12, dtype=torch.bool)
    border[0, :] = True  # no window of 3 taps is centred on row 0
    with pytest.raises(
        ValueError,
        match=_exact(
            "mask selects no SSIM window (mask_policy='centre', kernel_size=3) for the image(s) at batch index [0, 1]"
        ),
    ):
        ssim(x, x, data_range=1.0, spatial_dims=2, kernel_size=3, mask=border)
    thin = torch.zeros(12, 12, dtype=torch.bool)
    thin[5:7, 2:10] = True  # two rows: no 3x3 window fits inside
    with pytest.raises(
        ValueError,
        match=_exact(
            "mask selects no SSIM window (mask_policy='window', kernel_size=3) for the image(s) at batch index [0, 1]"
        ),
    ):
        ssim(x, x, data_range=1.0, spatial_dims=2, kernel_size=3, mask=thin, mask_policy="window")


@pytest.mark.parametrize(
    ("reference", "normalisation", "message"),
    [
        (
            torch.zeros(4, 4),
            "norm",
            "nrmse denominator (norm) of the reference is not > 0 within the mask",
        ),
        (
            torch.ones(4, 4),
            "range",
            "nrmse denominator (range) of the reference is not > 0 within the mask",
        ),
        (
            -torch.ones(4, 4),
            "mean",
            "nrmse denominator (mean) of the reference is not > 0 within the mask",
        ),
    ],
)
def test_nrmse_denominator_checks(reference: torch.Tensor, normalisation: str, message: str) -> None:
    with pytest.raises(ValueError, match=_exact(message)):
        nrmse(reference + 1, reference, normalisation=normalisation)


def test_nrmse_normalisation_check() -> None:
    with pytest.raises(ValueError, match=_exact("normalisation must be one of ['norm', 'range', 'mean'], got 'rms'")):
        nrmse(_T, _T, normalisation="rms")
