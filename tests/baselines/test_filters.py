"""Baselines: Gaussian filter (against scipy), non-local means on a known step, grid search, residual U-Net."""

from __future__ import annotations

import pytest
import torch

from bundle.baselines import ResidualUNet, gaussian_filter, non_local_means, tune_parameter


def _noisy_step(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    truth = torch.zeros(1, 1, 12, 16, 16)
    truth[..., 3:9, 4:12, 4:12] = 1.0
    return truth, truth + 0.3 * torch.randn(truth.shape, generator=gen)


def test_filters_reduce_error_and_nlm_keeps_edges_better_than_gaussian():
    truth, noisy = _noisy_step()
    mse = lambda x: float(((x - truth) ** 2).mean())  # noqa: E731
    assert mse(gaussian_filter(noisy, sigma_voxels=1.0)) < mse(noisy)
    assert mse(non_local_means(noisy, h_factor=1.0)) < mse(gaussian_filter(noisy, sigma_voxels=1.0))
    torch.testing.assert_close(gaussian_filter(noisy, sigma_voxels=0.0), noisy)


def test_gaussian_filter_equals_scipy_with_nearest_padding():
    import scipy.ndimage as ndi

    x = torch.rand(1, 1, 10, 12, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ours = gaussian_filter(x, sigma_voxels=(1.0, 0.5, 2.0))[0, 0].numpy()
    ref = ndi.gaussian_filter(x[0, 0].numpy(), (1.0, 0.5, 2.0), mode="nearest", truncate=3.0)
    assert abs(ours - ref).max() < 1e-12


def test_tune_parameter_picks_the_best_value():
    truth, noisy = _noisy_step(1)
    score = lambda x, r: -float(((x - r) ** 2).mean())  # noqa: E731
    best, scores = tune_parameter(lambda x, s: gaussian_filter(x, sigma_voxels=s), "s", [0.0, 0.8, 5.0],
                                  [(noisy, truth)], score)
    assert best == 0.8 and set(scores) == {0.0, 0.8, 5.0}
    with pytest.raises(ValueError, match="grid and pairs must be non-empty"):
        tune_parameter(gaussian_filter, "s", [], [(noisy, truth)], score)


def test_residual_unet_starts_as_the_identity_and_rejects_bad_strides():
    net = ResidualUNet(channels=(4, 8), strides=(2,))
    x = torch.rand(1, 1, 8, 8, 4)
    torch.testing.assert_close(net(x), x)
    with pytest.raises(ValueError, match="strides must have len"):
        ResidualUNet(channels=(4, 8, 16), strides=(2,))


def test_noise_estimate_ignores_the_air_around_the_body():
    """A body filling an eighth of the grid, white noise σ = 0.1 on it, (near-)zeros outside: the estimate is σ (the
    air used to drive it to 0 and make NLM the identity)."""
    from bundle.baselines.filters import estimate_noise_std

    g = torch.Generator().manual_seed(0)
    volume = torch.zeros(1, 1, 32, 32, 32)
    volume[..., :16, :16, :16] = 1.0 + 0.1 * torch.randn(1, 1, 16, 16, 16, generator=g)
    assert estimate_noise_std(volume) == pytest.approx(0.1, rel=0.15)
    faint = volume + 1e-4 * torch.rand(volume.shape, generator=g)  # an OSEM's air is small, not exactly zero
    assert estimate_noise_std(faint) == pytest.approx(0.1, rel=0.15)
    smoothed = non_local_means(volume, h_factor=1.0)
    body = (slice(None), slice(None), slice(2, 14), slice(2, 14), slice(2, 14))
    assert float(smoothed[body].std()) < 0.7 * float(volume[body].std())  # it does denoise
