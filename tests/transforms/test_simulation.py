"""Simulation transforms: determinism by seed, count level, dose-reduction statistics, argument checks."""

from __future__ import annotations

import pytest
import torch

from bundle.data import ellipsoid_head_phantom
from bundle.keys import Keys
from bundle.physics import preset
from bundle.transforms import BinomialThinningd, SimulateScand


def _data():
    geometry = preset("tiny_2d")
    activity, mu = ellipsoid_head_phantom(geometry.image)
    return geometry, {Keys.ACTIVITY: activity[None], Keys.MU_MAP: mu[None]}


def test_simulate_scan_is_seeded_and_hits_the_count_level():
    geometry, data = _data()

    def run(seed):
        t = SimulateScand(layout=geometry.layout, image=geometry.image, total_counts=5e4)
        t.set_random_state(seed)
        return t(data)

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a[Keys.SINOGRAM], b[Keys.SINOGRAM])
    assert not torch.equal(a[Keys.SINOGRAM], c[Keys.SINOGRAM])
    total = float(a[Keys.SINOGRAM].sum())
    assert abs(total - 5e4) < 5 * 5e4**0.5  # Poisson total around the requested expectation
    assert a[Keys.SINOGRAM].shape == geometry.layout.shape
    assert a[Keys.COUNT_SCALE] > 0


def test_binomial_thinning_mean_and_variance():
    counts = torch.full((20000,), 50.0)
    t = BinomialThinningd([Keys.SINOGRAM], fraction=0.1)
    t.set_random_state(0)
    out = t({Keys.SINOGRAM: counts})[Keys.SINOGRAM]
    assert float(out.mean()) == pytest.approx(5.0, abs=0.05)  # n f
    assert float(out.var()) == pytest.approx(4.5, rel=0.05)  # n f (1 - f)


def test_arguments_are_checked():
    geometry, data = _data()
    with pytest.raises(ValueError, match="fraction must be in"):
        BinomialThinningd([Keys.SINOGRAM], fraction=0.0)
    t = SimulateScand(layout=geometry.layout, image=geometry.image, total_counts=5e4)
    with pytest.raises(ValueError, match="data must contain the key 'mu_map'"):
        t({Keys.ACTIVITY: data[Keys.ACTIVITY]})
    bad = dict(data)
    bad[Keys.ACTIVITY] = -data[Keys.ACTIVITY]
    with pytest.raises(ValueError, match="activity must be >= 0"):
        t(bad)
    with pytest.raises(ValueError, match="total_counts must be a positive finite number"):
        SimulateScand(layout=geometry.layout, image=geometry.image, total_counts=float("nan"))(data)


def test_noise_variance_scales_as_one_over_dose():
    """Poisson counts thinned to dose f and rescaled by 1/f have variance λ / f (mean λ kept)."""
    lam = 40.0
    counts = torch.poisson(torch.full((200000,), lam), generator=torch.Generator().manual_seed(0))
    for f in (0.5, 0.1):
        t = BinomialThinningd([Keys.SINOGRAM], fraction=f)
        t.set_random_state(1)
        rescaled = t({Keys.SINOGRAM: counts})[Keys.SINOGRAM] / f
        assert float(rescaled.mean()) == pytest.approx(lam, rel=0.01)
        assert float(rescaled.var()) == pytest.approx(lam / f, rel=0.03)
