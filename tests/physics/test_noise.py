from __future__ import annotations

import math

import pytest
import torch

from bundle.physics.noise import binomial_thinning, poisson_at_total_counts, poisson_noise

N_BINS = 40_000


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("rate", [0.5, 4.0, 60.0])
def test_poisson_mean_and_variance_equal_the_rate(rate):
    counts = poisson_noise(torch.full((N_BINS,), rate, dtype=torch.float64), generator=_gen(0))
    assert torch.equal(counts, torch.round(counts)) and bool((counts >= 0).all())
    mean, var = float(counts.mean()), float(counts.var())
    # standard errors of the sample mean and of the sample variance of Poisson(λ)
    assert abs(mean - rate) < 5 * math.sqrt(rate / N_BINS)
    assert abs(var - rate) < 5 * math.sqrt((rate + 2 * rate**2) / N_BINS)


def test_poisson_at_total_counts_scales_and_keeps_the_shape():
    expected = torch.rand(N_BINS, generator=_gen(1), dtype=torch.float64) + 0.1
    for total in (2_000.0, 2_000_000.0):
        counts, scale = poisson_at_total_counts(expected, total_counts=total, generator=_gen(2))
        assert scale * float(expected.sum()) == pytest.approx(total, rel=1e-12)
        assert counts.shape == expected.shape and counts.dtype == expected.dtype
        assert abs(float(counts.sum()) - total) < 5 * math.sqrt(total)
        # per-bin: standardised residuals (y − λ)/√λ have mean 0 and variance 1 at every count level
        lam = scale * expected
        z = (counts - lam) / torch.sqrt(lam)
        assert abs(float(z.mean())) < 5 / math.sqrt(N_BINS)
        assert float(z.var()) == pytest.approx(1.0, abs=0.1)


def test_relative_noise_drops_with_count_level():
    expected = torch.ones(N_BINS, dtype=torch.float64)
    rel = []
    for total in (N_BINS * 1.0, N_BINS * 100.0):
        counts, _ = poisson_at_total_counts(expected, total_counts=total, generator=_gen(3))
        rel.append(float(counts.std() / counts.mean()))
    # coefficient of variation 1/√λ: λ = 1 -> 1, λ = 100 -> 0.1
    assert rel[0] == pytest.approx(1.0, rel=0.03)
    assert rel[1] == pytest.approx(0.1, rel=0.03)


def test_same_seed_same_counts_different_seed_different():
    expected = torch.full((1000,), 3.0)
    a = poisson_noise(expected, generator=_gen(7))
    b = poisson_noise(expected, generator=_gen(7))
    c = poisson_noise(expected, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    ta, sa = poisson_at_total_counts(expected, total_counts=500.0, generator=_gen(7))
    tb, sb = poisson_at_total_counts(expected, total_counts=500.0, generator=_gen(7))
    assert torch.equal(ta, tb) and sa == sb
    counts = torch.full((1000,), 20.0)
    assert torch.equal(
        binomial_thinning(counts, fraction=0.3, generator=_gen(1)),
        binomial_thinning(counts, fraction=0.3, generator=_gen(1)),
    )
    assert not torch.equal(
        binomial_thinning(counts, fraction=0.3, generator=_gen(1)),
        binomial_thinning(counts, fraction=0.3, generator=_gen(2)),
    )


def test_zero_expectation_gives_zero_counts():
    expected = torch.zeros(10)
    expected[3] = 5.0
    counts = poisson_noise(expected, generator=_gen(0))
    assert bool((counts[expected == 0] == 0).all())


@pytest.mark.parametrize(("n", "f"), [(100, 0.3), (7, 0.9)])
def test_binomial_thinning_mean_and_variance(n, f):
    counts = torch.full((N_BINS,), float(n), dtype=torch.float64)
    thinned = binomial_thinning(counts, fraction=f, generator=_gen(4))
    assert bool((thinned <= counts).all()) and torch.equal(thinned, torch.round(thinned))
    mean, var = float(thinned.mean()), float(thinned.var())
    true_mean, true_var = n * f, n * f * (1 - f)
    assert abs(mean - true_mean) < 5 * math.sqrt(true_var / N_BINS)
    assert var == pytest.approx(true_var, rel=0.05)


def test_binomial_thinning_of_poisson_is_poisson():
    rate, f = 20.0, 0.25
    counts = poisson_noise(torch.full((N_BINS,), rate, dtype=torch.float64), generator=_gen(5))
    thinned = binomial_thinning(counts, fraction=f, generator=_gen(6))
    assert abs(float(thinned.mean()) - f * rate) < 5 * math.sqrt(f * rate / N_BINS)
    assert float(thinned.var()) == pytest.approx(f * rate, rel=0.05)


def test_binomial_thinning_keeps_integer_dtype_and_fraction_one_is_copy():
    counts = torch.tensor([0, 3, 10, 200], dtype=torch.int64)
    thinned = binomial_thinning(counts, fraction=0.5, generator=_gen(0))
    assert thinned.dtype == torch.int64 and bool((thinned <= counts).all())
    same = binomial_thinning(counts, fraction=1.0, generator=_gen(0))
    assert torch.equal(same, counts) and same.data_ptr() != counts.data_ptr()


@pytest.mark.parametrize(
    ("expected", "exc"),
    [
        ([1.0, 2.0], TypeError),
        (torch.tensor([1, 2]), TypeError),
        (torch.tensor([1.0, -0.5]), ValueError),
        (torch.tensor([1.0, float("nan")]), ValueError),
        (torch.tensor([1.0, float("inf")]), ValueError),
    ],
)
def test_poisson_rejects_bad_expectation(expected, exc):
    with pytest.raises(exc, match="expected"):
        poisson_noise(expected, generator=_gen(0))
    with pytest.raises(exc, match="expected"):
        poisson_at_total_counts(expected, total_counts=10.0, generator=_gen(0))


def test_poisson_rejects_bad_generator():
    with pytest.raises(TypeError, match="generator"):
        poisson_noise(torch.ones(3), generator=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        poisson_at_total_counts(torch.ones(3), total_counts=3.0, generator=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        binomial_thinning(torch.ones(3), fraction=0.5, generator="seed")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("total", "exc"),
    [(0.0, ValueError), (-5.0, ValueError), (math.inf, ValueError), ("10", TypeError), (True, TypeError)],
)
def test_poisson_at_total_counts_rejects_bad_total(total, exc):
    with pytest.raises(exc, match="total_counts"):
        poisson_at_total_counts(torch.ones(3), total_counts=total, generator=_gen(0))


def test_poisson_at_total_counts_rejects_all_zero_expectation():
    with pytest.raises(ValueError, match="positive sum"):
        poisson_at_total_counts(torch.zeros(3), total_counts=10.0, generator=_gen(0))


@pytest.mark.parametrize(
    ("counts", "exc", "match"),
    [
        ([1.0, 2.0], TypeError, "counts"),
        (torch.tensor([True, False]), TypeError, "counts"),
        (torch.tensor([1.0, -1.0]), ValueError, ">= 0"),
        (torch.tensor([1.0, 2.5]), ValueError, "integer-valued"),
        (torch.tensor([1.0, float("nan")]), ValueError, "finite"),
        (torch.tensor([-3, 2]), ValueError, ">= 0"),
    ],
)
def test_binomial_thinning_rejects_bad_counts(counts, exc, match):
    with pytest.raises(exc, match=match):
        binomial_thinning(counts, fraction=0.5, generator=_gen(0))


@pytest.mark.parametrize(
    ("fraction", "exc"),
    [(0.0, ValueError), (1.5, ValueError), (-0.1, ValueError), (float("nan"), ValueError), ("0.5", TypeError)],
)
def test_binomial_thinning_rejects_bad_fraction(fraction, exc):
    with pytest.raises(exc, match="fraction"):
        binomial_thinning(torch.ones(3), fraction=fraction, generator=_gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_generator_reproducible_and_device_checked():
    expected = torch.full((N_BINS,), 9.0, device="cuda")

    def cuda_gen(seed: int) -> torch.Generator:
        return torch.Generator(device="cuda").manual_seed(seed)

    a = poisson_noise(expected, generator=cuda_gen(1))
    assert a.is_cuda and torch.equal(a, poisson_noise(expected, generator=cuda_gen(1)))
    assert abs(float(a.mean()) - 9.0) < 5 * math.sqrt(9.0 / N_BINS)
    counts, _ = poisson_at_total_counts(expected, total_counts=1e5, generator=cuda_gen(2))
    assert counts.is_cuda
    thinned = binomial_thinning(a, fraction=0.5, generator=cuda_gen(3))
    assert thinned.is_cuda and bool((thinned <= a).all())
    with pytest.raises(ValueError, match="generator"):
        poisson_noise(expected, generator=_gen(0))
