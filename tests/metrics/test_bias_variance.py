"""Bias-variance over noise realisations and the voxel-wise coefficient of variation: exact small cases,
synthetic realisations r + N(b, s²) with statistical tolerances, masks, argument checks."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from bundle.metrics import ZeroMeanPolicy, bias_variance, coefficient_of_variation, nrmse


def _exact(message: str) -> str:
    """Regex matching exactly ``message`` (pytest.raises searches)."""
    return f"^{re.escape(message)}$"


# ------------------------------------------------------------------------------------------------- bias_variance


def test_bias_variance_exact_small_case() -> None:
    realisations = torch.tensor([[1.0, 3.0], [3.0, 5.0]], dtype=torch.float64)  # R = 2 of a 2-voxel image
    reference = torch.tensor([1.0, 4.0], dtype=torch.float64)
    out = bias_variance(realisations, reference)
    assert set(out) == {"mean", "bias", "variance", "std", "normalised_bias", "normalised_std"}
    torch.testing.assert_close(out["mean"], torch.tensor([2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(out["bias"], torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out["variance"], torch.tensor([2.0, 2.0], dtype=torch.float64))  # sample: /(R-1)
    torch.testing.assert_close(out["std"], torch.full((2,), math.sqrt(2.0), dtype=torch.float64))
    assert out["normalised_bias"] == pytest.approx(1 / math.sqrt(17))  # ‖(1, 0)‖ / ‖(1, 4)‖
    assert out["normalised_std"] == pytest.approx(math.sqrt(2.0) / 2.5)  # sqrt(mean var) / mean ref
    population = bias_variance(realisations, reference, correction=0)
    torch.testing.assert_close(population["variance"], torch.ones(2, dtype=torch.float64))
    assert population["normalised_std"] == pytest.approx(1 / 2.5)
    assert isinstance(out["normalised_bias"], float) and isinstance(out["normalised_std"], float)


def test_bias_variance_of_synthetic_realisations() -> None:
    g = torch.Generator().manual_seed(1234)
    shape, R, b, s = (48, 48), 20, 0.1, 0.2  # 20 noise realisations, as PET-DDS-δ
    reference = 1.0 + torch.rand(shape, generator=g, dtype=torch.float64)
    realisations = reference + b + s * torch.randn((R, *shape), generator=g, dtype=torch.float64)
    out = bias_variance(realisations, reference)
    n = reference.numel()
    # E‖x̄ − r‖² = n (b² + s²/R): the mean of R realisations keeps s²/R of noise
    expected_bias = math.sqrt(n * (b**2 + s**2 / R)) / float(reference.norm())
    assert out["normalised_bias"] == pytest.approx(expected_bias, rel=0.02)
    assert out["normalised_std"] == pytest.approx(s / float(reference.mean()), rel=0.02)
    assert float(out["bias"].mean()) == pytest.approx(b, abs=4 * s / math.sqrt(R * n))  # 4 standard errors
    assert float(out["variance"].mean()) == pytest.approx(s**2, rel=0.02)
    assert float(out["std"].mean()) == pytest.approx(s, rel=0.03)
    # the normalised bias is the NRMSE (‖x − r‖/‖r‖) of the mean image
    assert out["normalised_bias"] == pytest.approx(float(nrmse(out["mean"], reference)), rel=1e-12)


def test_bias_variance_mask_restricts_the_summaries_only() -> None:
    g = torch.Generator().manual_seed(7)
    reference = 1.0 + torch.rand(10, 10, generator=g, dtype=torch.float64)
    realisations = reference + 0.3 * torch.randn(5, 10, 10, generator=g, dtype=torch.float64)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:7, 3:9] = True
    out = bias_variance(realisations, reference, mask=mask)
    changed_x, changed_r = realisations.clone(), reference.clone()
    changed_x[:, ~mask] = 50.0 * torch.rand(5, int((~mask).sum()), generator=g, dtype=torch.float64)
    changed_r[~mask] = 0.0
    changed = bias_variance(changed_x, changed_r, mask=mask)
    assert changed["normalised_bias"] == out["normalised_bias"]
    assert changed["normalised_std"] == out["normalised_std"]
    # independent truth: the summaries of the masked voxels as plain vectors
    flat = bias_variance(realisations[:, mask], reference[mask])
    assert out["normalised_bias"] == pytest.approx(flat["normalised_bias"], rel=1e-12)
    assert out["normalised_std"] == pytest.approx(flat["normalised_std"], rel=1e-12)
    assert out["mean"].shape == (10, 10)  # images are not masked


def test_bias_variance_accepts_a_sequence_of_realisations() -> None:
    realisations = [torch.tensor([1.0, 3.0]), torch.tensor([3.0, 5.0]), torch.tensor([2.0, 7.0])]
    a = bias_variance(realisations, torch.tensor([2.0, 5.0]))
    b = bias_variance(torch.stack(realisations), torch.tensor([2.0, 5.0]))
    for key in ("mean", "bias", "variance", "std"):
        torch.testing.assert_close(a[key], b[key])
    assert a["normalised_bias"] == b["normalised_bias"] and a["normalised_std"] == b["normalised_std"]


_X = torch.ones(3, 4, 4, dtype=torch.float64)
_R = torch.ones(4, 4, dtype=torch.float64)


@pytest.mark.parametrize(
    ("realisations", "reference", "kwargs", "exc", "message"),
    [
        (
            _X,
            torch.ones(4, 5),
            {},
            ValueError,
            "each realisation must have the reference's shape, got realisations (3, 4, 4) "
            "(one realisation (4, 4)) and reference (4, 5)",
        ),
        (
            np.ones((3, 4, 4)),
            _R,
            {},
            TypeError,
            "realisations must be a tensor or a non-empty sequence of tensors, got ndarray",
        ),
        ([], _R, {}, TypeError, "realisations must be a tensor or a non-empty sequence of tensors, got list"),
        (
            [torch.ones(4, 4), torch.ones(4, 5)],
            _R,
            {},
            ValueError,
            "realisations must all have the same shape, got shapes [(4, 4), (4, 5)]",
        ),
        (torch.tensor(1.0), _R, {}, ValueError, "realisations must hold the samples on axis 0, got a 0-d tensor"),
        (_X[:1], _R, {}, ValueError, "bias_variance needs more than correction=1 samples on axis 0, got 1"),
        (_X, _R, {"correction": -1}, ValueError, "correction must be >= 0, got -1"),
        (_X, _R, {"correction": 1.0}, TypeError, "correction must be an int >= 0, got 1.0"),
        (_X.clone().fill_(math.nan), _R, {}, ValueError, "realisations must be finite (it holds NaN or ±inf)"),
        (_X, _R * math.inf, {}, ValueError, "reference must be finite (it holds NaN or ±inf)"),
        (_X, [1.0], {}, TypeError, "reference must be a torch.Tensor, got list"),
        (
            _X,
            _R,
            {"mask": torch.ones(4, 4)},
            TypeError,
            "mask must be a torch.Tensor of dtype torch.bool, got dtype torch.float32",
        ),
        (_X, _R, {"mask": [[True]]}, TypeError, "mask must be a torch.Tensor of dtype torch.bool, got list"),
        (
            _X,
            _R,
            {"mask": torch.ones(3, 4, 4, dtype=torch.bool)},
            ValueError,
            "mask must have the reference's shape (4, 4), got (3, 4, 4)",
        ),
        (_X, _R, {"mask": torch.zeros(4, 4, dtype=torch.bool)}, ValueError, "mask selects no voxel"),
        (_X, 0 * _R, {}, ValueError, "the reference's norm within the mask must be > 0 (normalised bias undefined)"),
        (
            _X,
            -_R,
            {},
            ValueError,
            "the reference's mean within the mask must be > 0 (normalised std undefined), got -1.0",
        ),
    ],
)
def test_bias_variance_checks(realisations: object, reference: object, kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=_exact(message)):
        bias_variance(realisations, reference, **kwargs)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------- coefficient_of_variation


def test_cv_of_one_and_three_population_and_sample() -> None:
    samples = torch.tensor([[1.0], [3.0]])  # K = 2 samples of a 1-voxel image: mean 2, std 1 or sqrt(2)
    torch.testing.assert_close(
        coefficient_of_variation(samples, correction=0), torch.tensor([0.5], dtype=torch.float64)
    )
    torch.testing.assert_close(
        coefficient_of_variation(samples), torch.tensor([math.sqrt(2) / 2], dtype=torch.float64)
    )  # default correction=1 (sample std): 0.7071
    assert float(coefficient_of_variation(samples)[0]) == pytest.approx(0.7071, abs=1e-4)


def test_cv_matches_numpy_voxelwise() -> None:
    g = np.random.default_rng(3)
    samples = g.gamma(4.0, 1.0, size=(25, 6, 7))  # 25 seeds, as PET-DDS-δ's uncertainty image
    for correction in (0, 1):
        expected = samples.std(axis=0, ddof=correction) / samples.mean(axis=0)
        np.testing.assert_allclose(
            coefficient_of_variation(torch.from_numpy(samples), correction=correction).numpy(), expected, rtol=1e-12
        )


def test_cv_zero_mean_policy_and_eps() -> None:
    samples = torch.tensor([[0.0, -1.0, 1e-9, -2.0], [0.0, 1.0, 1e-9, -4.0]], dtype=torch.float64)
    cv = coefficient_of_variation(samples)  # means 0, 0, 1e-9, -3
    torch.testing.assert_close(cv, torch.tensor([0.0, 0.0, 0.0, math.sqrt(2) / 3], dtype=torch.float64))
    assert cv[3] > 0  # |mean| keeps the CV non-negative
    nan = coefficient_of_variation(samples, eps_policy=ZeroMeanPolicy.NAN)
    assert torch.isnan(nan[:2]).all() and nan[2] == 0.0 and not torch.isnan(nan[3])
    with_eps = coefficient_of_variation(samples, eps_policy="nan", eps=1e-6)
    assert torch.isnan(with_eps[:3]).all() and float(with_eps[3]) == pytest.approx(math.sqrt(2) / 3)


def test_cv_accepts_a_sequence_of_samples() -> None:
    seq = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])]
    torch.testing.assert_close(coefficient_of_variation(seq), coefficient_of_variation(torch.stack(seq)))
    torch.testing.assert_close(
        coefficient_of_variation(seq), torch.tensor([math.sqrt(2) / 2, 0.0], dtype=torch.float64)
    )


@pytest.mark.parametrize(
    ("samples", "kwargs", "exc", "message"),
    [
        (
            torch.ones(1, 3),
            {},
            ValueError,
            "coefficient_of_variation needs more than correction=1 samples on axis 0, got 1",
        ),
        (
            torch.ones(0, 3),
            {"correction": 0},
            ValueError,
            "coefficient_of_variation needs more than correction=0 samples on axis 0, got 0",
        ),
        ((1.0, 2.0), {}, TypeError, "samples must be a tensor or a non-empty sequence of tensors, got tuple"),
        (torch.ones(2, 3), {"eps_policy": "one"}, ValueError, "eps_policy must be one of ['zero', 'nan'], got 'one'"),
        (torch.ones(2, 3), {"eps": -1.0}, ValueError, "eps must be a finite number >= 0, got -1.0"),
        (torch.ones(2, 3), {"eps": math.nan}, ValueError, "eps must be a finite number >= 0, got nan"),
        (torch.ones(2, 3), {"eps": None}, TypeError, "eps must be a finite number >= 0, got None"),
        (torch.ones(2, 3), {"correction": True}, TypeError, "correction must be an int >= 0, got True"),
        (torch.tensor([[1.0, math.inf]] * 2), {}, ValueError, "samples must be finite (it holds NaN or ±inf)"),
        (torch.ones(2, 3, dtype=torch.bool), {}, TypeError, "samples must be a real tensor, got dtype torch.bool"),
    ],
)
def test_cv_checks(samples: object, kwargs: dict, exc: type, message: str) -> None:
    with pytest.raises(exc, match=_exact(message)):
        coefficient_of_variation(samples, **kwargs)  # type: ignore[arg-type]
