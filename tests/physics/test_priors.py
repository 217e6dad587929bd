from __future__ import annotations

import itertools
import math

import pytest
import torch

from bundle.physics.priors import Neighbourhood, RelativeDifferencePrior

SHAPE = (3, 4, 5)
VOXEL_MM = (2.0, 1.5, 1.0)


def _image(seed: int, shape=SHAPE) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.2


def _brute_force_value(x: torch.Tensor, *, full: bool, voxel_mm, gamma: float, eps: float) -> float:
    """R(x) = ½ Σ_j Σ_{n∈N_j} w_jn φ(x_j, x_n), literally, with 'outside neighbour = the voxel itself'."""
    nz, ny, nx = x.shape
    if full:
        offsets = [d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)]
    else:
        offsets = [(-1, 0, 0), (1, 0, 0)]
    total = 0.0
    for j in itertools.product(range(nz), range(ny), range(nx)):
        for d in offsets:
            n = tuple(jj + dd for jj, dd in zip(j, d, strict=True))
            if not all(0 <= nn < s for nn, s in zip(n, x.shape, strict=True)):
                n = j  # reflective end: the neighbour is the voxel itself
            w = voxel_mm[2] / math.sqrt(sum((dd * v) ** 2 for dd, v in zip(d, voxel_mm, strict=True))) if full else 1.0
            a, b = float(x[j]), float(x[n])
            total += 0.5 * w * (a - b) ** 2 / (a + b + gamma * abs(a - b) + eps)
    return total


def _central_differences(prior: RelativeDifferencePrior, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    grad = torch.zeros_like(x)
    flat, g = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += h
        minus[i] -= h
        g[i] = (prior.value(plus.reshape(x.shape)) - prior.value(minus.reshape(x.shape))) / (2 * h)
    return grad


@pytest.mark.parametrize("neighbourhood", [Neighbourhood.FULL, Neighbourhood.AXIAL])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_value_matches_literal_double_sum(neighbourhood, gamma):
    prior = RelativeDifferencePrior(neighbourhood=neighbourhood, gamma=gamma, epsilon=1e-3, voxel_size_mm=VOXEL_MM)
    x = _image(0)
    truth = _brute_force_value(x, full=neighbourhood is Neighbourhood.FULL, voxel_mm=VOXEL_MM, gamma=gamma, eps=1e-3)
    assert float(prior.value(x)) == pytest.approx(truth, rel=1e-12)


@pytest.mark.parametrize("neighbourhood", ["full", "axial"])
def test_gradient_matches_central_differences(neighbourhood):
    prior = RelativeDifferencePrior(neighbourhood=neighbourhood, voxel_size_mm=VOXEL_MM)
    x = _image(1)
    torch.testing.assert_close(prior.gradient(x), _central_differences(prior, x), rtol=1e-6, atol=1e-8)


def test_gradient_near_zero_activity_matches_central_differences():
    prior = RelativeDifferencePrior(epsilon=1e-2)
    x = _image(2, (2, 3, 3)) - 0.2  # values in [0, 1), some close to 0
    x = x + 1e-3
    torch.testing.assert_close(prior.gradient(x), _central_differences(prior, x, h=1e-7), rtol=1e-5, atol=1e-6)


def test_gradient_at_all_zero_image_is_zero():
    prior = RelativeDifferencePrior()
    x = torch.zeros(SHAPE, dtype=torch.float64)
    assert float(prior.value(x)) == 0.0
    assert torch.equal(prior.gradient(x), torch.zeros_like(x))


@pytest.mark.parametrize("neighbourhood", list(Neighbourhood))
def test_constant_image_has_zero_value_and_gradient(neighbourhood):
    prior = RelativeDifferencePrior(neighbourhood=neighbourhood)
    x = torch.full(SHAPE, 3.7, dtype=torch.float64)
    assert float(prior.value(x)) == 0.0
    assert torch.equal(prior.gradient(x), torch.zeros_like(x))


def test_axial_prior_ignores_transaxial_variation():
    axial = RelativeDifferencePrior(neighbourhood=Neighbourhood.AXIAL)
    full = RelativeDifferencePrior(neighbourhood=Neighbourhood.FULL)
    x = _image(3, (1, 4, 5)).expand(3, 4, 5).contiguous()  # varies in (y, x), constant along z
    assert float(axial.value(x)) == 0.0
    assert torch.equal(axial.gradient(x), torch.zeros_like(x))
    assert float(full.value(x)) > 0.0
    # and it only sees the axial differences: a single slice has nothing to compare
    assert float(axial.value(_image(4, (1, 4, 5)))) == 0.0


def test_single_slice_full_prior_is_2d_eight_neighbourhood():
    prior = RelativeDifferencePrior(voxel_size_mm=(2.0, 1.0, 1.0))
    x = _image(5, (1, 4, 5))
    truth = _brute_force_value(x, full=True, voxel_mm=(2.0, 1.0, 1.0), gamma=2.0, eps=1e-9)
    assert float(prior.value(x)) == pytest.approx(truth, rel=1e-12)
    assert len(prior.offsets) == 13


def test_value_is_non_negative_and_invariant_to_flip():
    prior = RelativeDifferencePrior(voxel_size_mm=VOXEL_MM)
    x = _image(6)
    value = float(prior.value(x))
    assert value > 0.0
    assert float(prior.value(torch.flip(x, dims=(0, 1, 2)))) == pytest.approx(value, rel=1e-12)


def test_weights_full_and_axial():
    full = RelativeDifferencePrior(neighbourhood="full", voxel_size_mm=(2.0, 1.0, 1.0))
    weights = dict(zip(full.offsets, full.weights, strict=True))
    assert weights[(0, 0, 1)] == 1.0
    assert weights[(0, 1, 1)] == pytest.approx(1 / math.sqrt(2))
    assert weights[(1, 0, 0)] == pytest.approx(0.5)
    axial = RelativeDifferencePrior(neighbourhood=Neighbourhood.AXIAL)
    assert axial.offsets == ((1, 0, 0),) and axial.weights == (1.0,)


def test_float32_and_call_alias():
    prior = RelativeDifferencePrior()
    x = _image(7)
    assert prior(x.float()).dtype == torch.float32
    assert float(prior(x.float())) == pytest.approx(float(prior.value(x)), rel=1e-5)
    assert prior.gradient(x.float()).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"neighbourhood": "six"}, ValueError),
        ({"gamma": -1.0}, ValueError),
        ({"gamma": float("inf")}, ValueError),
        ({"gamma": "2"}, TypeError),
        ({"epsilon": 0.0}, ValueError),
        ({"epsilon": -1e-9}, ValueError),
        ({"epsilon": None}, TypeError),
        ({"voxel_size_mm": (1.0, 1.0)}, TypeError),
        ({"voxel_size_mm": (1.0, 0.0, 1.0)}, ValueError),
        ({"voxel_size_mm": (1.0, float("nan"), 1.0)}, ValueError),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, exc):
    name = next(iter(kwargs))
    with pytest.raises(exc, match=name):
        RelativeDifferencePrior(**kwargs)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        RelativeDifferencePrior("full")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("x", "exc"),
    [
        ([[[1.0]]], TypeError),
        (torch.ones(4, 5), ValueError),
        (torch.ones(2, 3, 4, dtype=torch.int64), TypeError),
        (torch.tensor([[[1.0, float("nan")]]]), ValueError),
        (torch.tensor([[[1.0, -0.1]]]), ValueError),
    ],
)
def test_value_and_gradient_reject_bad_images(x, exc):
    prior = RelativeDifferencePrior()
    with pytest.raises(exc, match="x must"):
        prior.value(x)
    with pytest.raises(exc, match="x must"):
        prior.gradient(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
@pytest.mark.parametrize("neighbourhood", list(Neighbourhood))
def test_cuda_matches_cpu(neighbourhood):
    prior = RelativeDifferencePrior(neighbourhood=neighbourhood, voxel_size_mm=VOXEL_MM)
    x = _image(8)
    torch.testing.assert_close(prior.value(x.cuda()).cpu(), prior.value(x))
    torch.testing.assert_close(prior.gradient(x.cuda()).cpu(), prior.gradient(x))
