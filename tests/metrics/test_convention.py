"""image_metrics: analytic PSNR / NRMSE, SSIM = 1, masks, squeezing, and each named convention against the earlier
private scoring functions recomputed here from first principles (numpy formulas, MONAI's SSIM as the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric
from monai.metrics.regression import compute_ssim_and_cs

from bundle.metrics import MetricConvention, image_metrics, ssim_kernel_size, units


def _pair(shape: tuple[int, ...], seed: int = 0, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = 0.2 + torch.rand(shape, generator=g, dtype=torch.float64)
    return r + noise * torch.randn(shape, generator=g, dtype=torch.float64), r


def _monai_ssim(x: torch.Tensor, r: torch.Tensor, data_range: float, win_size: int) -> float:
    """MONAI's SSIMMetric (Gaussian σ 1.5, valid windows, mean over the image) of one unbatched 2D/3D image."""
    metric = SSIMMetric(spatial_dims=x.ndim, data_range=data_range, win_size=win_size, reduction="none")
    return float(metric(x[None, None], r[None, None]))


def _monai_masked_ssim(x: torch.Tensor, r: torch.Tensor, mask: torch.Tensor, data_range: float, size: int) -> float:
    """MONAI's SSIM map (valid windows) averaged over the windows whose centre voxel is in ``mask``."""
    ssim_map, _ = compute_ssim_and_cs(x[None, None], r[None, None], spatial_dims=x.ndim, kernel_size=[size] * x.ndim,
                                      kernel_sigma=[1.5] * x.ndim, data_range=data_range)
    pad = size // 2
    centres = mask[tuple(slice(pad, n - pad) for n in mask.shape)]
    return float(ssim_map[0, 0][centres].mean())


def test_keys_units_and_kernel_rule() -> None:
    x, r = _pair((16, 16))
    assert tuple(image_metrics(x, r)) == ("PSNR", "SSIM", "NRMSE")
    assert units() == {"PSNR": "dB", "SSIM": "fraction", "NRMSE": "fraction"}
    assert units("petdds") == {"PSNR": "dB", "SSIM": "%", "NRMSE": "%"}
    assert [ssim_kernel_size(s) for s in [(64, 64), (8, 32, 32), (11, 40), (10, 40), (3, 5)]] == [11, 7, 11, 9, 3]


@pytest.mark.parametrize("error", [0.05, -0.2])
def test_constant_error_gives_analytic_psnr_and_nrmse(error: float) -> None:
    _, r = _pair((12, 16))
    m = image_metrics(r + error, r)
    assert m["PSNR"] == pytest.approx(10 * math.log10(float(r.max()) ** 2 / error**2), rel=1e-12)
    assert m["NRMSE"] == pytest.approx(abs(error) * math.sqrt(r.numel()) / float(r.norm()), rel=1e-12)


@pytest.mark.parametrize("shape", [(16, 16), (9, 12, 12)])
def test_identical_images(shape: tuple[int, ...]) -> None:
    _, r = _pair(shape)
    m = image_metrics(r, r)
    assert m["SSIM"] == pytest.approx(1.0, abs=1e-12) and m["NRMSE"] == 0.0 and m["PSNR"] == math.inf


def test_voxels_outside_the_mask_do_not_count_for_psnr_nrmse_and_the_data_range() -> None:
    x, r = _pair((20, 20), seed=1)
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[4:16, 5:15] = True
    x2, r2 = x.clone(), r.clone()
    x2[~mask], r2[~mask] = 50.0, 80.0  # a brighter reference outside the mask would change L if it counted
    a, b = image_metrics(x, r, mask=mask), image_metrics(x2, r2, mask=mask)
    assert (a["PSNR"], a["NRMSE"]) == pytest.approx((b["PSNR"], b["NRMSE"]), rel=1e-12)
    d, rm = (x - r)[mask].numpy(), r[mask].numpy()
    assert a["PSNR"] == pytest.approx(10 * np.log10(rm.max() ** 2 / np.mean(d**2)), rel=1e-12)
    assert a["NRMSE"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(rm), rel=1e-12)


def test_axes_of_size_one_are_dropped() -> None:
    x, r = _pair((1, 16, 16))
    assert image_metrics(x, r) == image_metrics(x[0], r[0])
    x5, r5 = _pair((1, 1, 12, 12, 12))
    assert image_metrics(x5, r5) == image_metrics(x5[0, 0], r5[0, 0])


def test_data_range_override() -> None:
    x, r = _pair((16, 16), seed=2)
    m = image_metrics(x, r, data_range=1.0)
    assert m["PSNR"] == pytest.approx(-10 * math.log10(float(((x - r) ** 2).mean())), rel=1e-12)
    assert m["SSIM"] == pytest.approx(_monai_ssim(x, r, 1.0, 11), abs=1e-6)


def test_default_reproduces_the_legopet_scores() -> None:
    """LegoPET's ``_scores``: 2D slice, no mask, PSNR and SSIM (Gaussian, 11 taps) with L = max r."""
    x, r = _pair((40, 48), seed=3)
    m = image_metrics(x, r)
    high = float(r.max())
    assert m["PSNR"] == pytest.approx(10 * math.log10(high**2 / float(((x - r) ** 2).mean())), rel=1e-12)
    assert m["SSIM"] == pytest.approx(_monai_ssim(x, r, high, 11), abs=1e-6)


def test_default_reproduces_the_demo_metrics() -> None:
    """The demo's hand-rolled NRMSE = ‖d‖/‖r‖ and PSNR = 20 log10(max r / RMSE), both inside the mask."""
    x, r = _pair((6, 14, 14), seed=4)
    mask = torch.zeros_like(r, dtype=torch.bool)
    mask[1:5, 3:11, 2:12] = True
    m = image_metrics(x, r, mask=mask)
    d = (x - r)[mask]
    assert m["NRMSE"] == pytest.approx(float(d.norm() / r[mask].norm()), rel=1e-12)
    assert m["PSNR"] == pytest.approx(20 * math.log10(float(r[mask].max()) / float(d.pow(2).mean().sqrt())), rel=1e-12)


def test_petdds_convention_reproduces_the_petdds_image_metrics() -> None:
    """PET-DDS's ``image_metrics``: mask, L = max_M r, NRMSE and masked 3D SSIM in %, window min(11, odd ≤ min)."""
    x, r = _pair((8, 16, 16), seed=5)
    mask = torch.zeros_like(r, dtype=torch.bool)
    mask[2:7, 3:13, 4:14] = True
    m = image_metrics(x, r, mask=mask, convention=MetricConvention.PETDDS)
    high = float(r[mask].max())
    d = (x - r)[mask]
    assert m["NRMSE"] == pytest.approx(100 * float(d.norm() / r[mask].norm()), rel=1e-12)
    assert m["PSNR"] == pytest.approx(10 * math.log10(high**2 / float(d.pow(2).mean())), rel=1e-12)
    assert m["SSIM"] == pytest.approx(100 * _monai_masked_ssim(x, r, mask, high, 7), abs=1e-4)  # MONAI: float32
    default = image_metrics(x, r, mask=mask)
    assert (m["SSIM"], m["NRMSE"]) == pytest.approx((100 * default["SSIM"], 100 * default["NRMSE"]), rel=1e-12)


def test_upete_convention_reproduces_the_upete_metrics() -> None:
    """uPETe's ``_metrics``: MONAI layout (1, 1, X, Y, Z), L = max r − min r, SSIM Gaussian with 7 taps, no mask."""
    x, r = _pair((1, 1, 12, 14, 16), seed=6)
    m = image_metrics(x, r, convention="upete")
    span = float(r.max() - r.min())
    assert m["PSNR"] == pytest.approx(10 * math.log10(span**2 / float(((x - r) ** 2).mean())), rel=1e-12)
    assert m["SSIM"] == pytest.approx(_monai_ssim(x[0, 0], r[0, 0], span, 7), abs=1e-6)
    assert m["SSIM"] != pytest.approx(image_metrics(x, r)["SSIM"], abs=1e-6)  # the default differs (L, 11 taps)


@pytest.mark.parametrize(
    ("image", "reference", "kwargs", "exc", "message"),
    [
        (torch.ones(8, 8), torch.ones(8, 8), {"convention": "paper"}, ValueError,
         "convention must be one of ['default', 'petdds', 'upete'], got 'paper'"),
        (np.ones((8, 8)), torch.ones(8, 8), {}, TypeError, "image and reference must be torch.Tensors"),
        (torch.ones(8, 8), torch.ones(8, 9), {}, ValueError, "image and reference must have the same shape"),
        (torch.ones(8), torch.ones(8), {}, ValueError, "image must have 2 or 3 axes of size > 1"),
        (torch.ones(8, 8), torch.ones(8, 8), {"mask": torch.ones(8, dtype=torch.bool)}, ValueError,
         "mask must be a torch.bool tensor of the image's shape (8, 8), got (8,)"),
    ],
)
def test_checks(image: object, reference: object, kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        image_metrics(image, reference, **kwargs)  # type: ignore[arg-type]
