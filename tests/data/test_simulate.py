"""save_scan / load_scan round trip and SimulatedScan.at_dose (bundle/data/simulate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.data.simulate import load_scan, save_scan, simulate_scan, slicewise_layout
from bundle.physics import ImageGeometry, binomial_thinning

IMAGE = ImageGeometry(shape=(3, 12, 12), voxel_size_mm=(8.0, 6.0, 6.0))


def _scan(total_counts: float = 1e5, seed: int = 0):
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in IMAGE.shape), indexing="ij")
    body = ((y - 5.5) ** 2 + (x - 5.5) ** 2) <= 20
    activity = body.float() * (1.0 + 0.5 * z)
    mu = body.float() * 0.0096
    return simulate_scan(activity, mu, layout=slicewise_layout(IMAGE), image=IMAGE, total_counts=total_counts,
                         generator=torch.Generator().manual_seed(seed), fwhm_mm=8.0)


def test_round_trip_rebuilds_the_same_forward_model_and_reconstruction(tmp_path):
    scan = _scan()
    save_scan(tmp_path / "scan.npz", scan, image=IMAGE, fwhm_mm=8.0)
    loaded, image = load_scan(tmp_path / "scan.npz")
    assert image == IMAGE and loaded.expected is None and loaded.count_scale == scan.count_scale
    torch.testing.assert_close(loaded.counts, scan.counts.float())
    x = torch.rand(IMAGE.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded.model.expectation(x), scan.model.expectation(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.reconstruct_osem(num_subsets=4, num_iterations=2),
                               scan.reconstruct_osem(num_subsets=4, num_iterations=2), rtol=1e-5, atol=1e-6)


def test_at_dose_matches_a_scan_simulated_at_that_dose():
    """Thinned counts + at_dose(f) reconstruct like a scan simulated with f × the counts (same expectation)."""
    full, f = _scan(total_counts=4e5), 0.25
    low = full.at_dose(f)
    assert low.count_scale == pytest.approx(f * full.count_scale)
    torch.testing.assert_close(low.background, f * full.background)
    torch.testing.assert_close(low.expected, f * full.expected)
    direct = _scan(total_counts=4e5 * f, seed=3)  # the independent truth: a scan simulated at the lower count level
    torch.testing.assert_close(low.expected, direct.expected, rtol=1e-4, atol=1e-6)
    thinned = binomial_thinning(full.counts, fraction=f, generator=torch.Generator().manual_seed(2))
    a = low.reconstruct_osem(counts=thinned, num_subsets=4, num_iterations=2)
    b = direct.reconstruct_osem(num_subsets=4, num_iterations=2)
    assert float(a.mean()) == pytest.approx(float(b.mean()), rel=0.05)
    with pytest.raises(ValueError, match=r"fraction must be a dose fraction in \(0, 1\]"):
        full.at_dose(0.0)


def test_load_scan_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="scan file"):
        load_scan(tmp_path / "missing.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read scan file"):
        load_scan(tmp_path / "corrupt.npz")
    np.savez(tmp_path / "other.npz", counts=np.zeros(3))
    with pytest.raises(ValueError, match="is not a scan file"):
        load_scan(tmp_path / "other.npz")
    scan = _scan()
    with pytest.raises(ValueError, match="slicewise_layout"):
        save_scan(tmp_path / "x.npz", scan, image=ImageGeometry(shape=(4, 12, 12), voxel_size_mm=(8.0, 6.0, 6.0)),
                  fwhm_mm=8.0)
