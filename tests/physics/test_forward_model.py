from __future__ import annotations

import math

import pytest
import torch

from bundle.physics.forward_model import (
    PETForwardModel,
    PoissonDataModel,
    attenuation_factors_from_mu_map,
    select_views,
    view_subsets,
)
from bundle.physics.operators import LinearOperator, MatrixOperator

IMAGE_SHAPE = (2, 3, 3)
SINO_SHAPE = (2, 6, 4)  # (planes, views, radial)


class FakeProjector(MatrixOperator):
    """Dense non-negative matrix image -> sinogram (planes, views, radial) with a view_subset method."""

    def __init__(self, matrix: torch.Tensor, *, image_shape=IMAGE_SHAPE, sino_shape=SINO_SHAPE) -> None:
        super().__init__(matrix, in_shape=image_shape, out_shape=sino_shape)

    @classmethod
    def random(cls, seed: int, *, image_shape=IMAGE_SHAPE, sino_shape=SINO_SHAPE) -> FakeProjector:
        g = torch.Generator().manual_seed(seed)
        n_out, n_in = torch.Size(sino_shape).numel(), torch.Size(image_shape).numel()
        return cls(
            torch.rand(n_out, n_in, generator=g, dtype=torch.float64), image_shape=image_shape, sino_shape=sino_shape
        )

    def view_subset(self, view_indices: torch.Tensor) -> MatrixOperator:
        p, v, r = self.out_shape
        rows = self.matrix.reshape(p, v, r, -1).index_select(1, view_indices.to(self.matrix.device))
        return MatrixOperator(
            rows.reshape(-1, self.matrix.shape[1]), in_shape=self.in_shape, out_shape=(p, view_indices.numel(), r)
        )


def _rand(shape, seed, low=0.0, high=1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _full_model(seed: int = 0) -> tuple[PETForwardModel, dict[str, torch.Tensor]]:
    projector = FakeProjector.random(seed)
    blur = MatrixOperator(_rand((18, 18), seed + 1), in_shape=IMAGE_SHAPE, out_shape=IMAGE_SHAPE)
    parts = {
        "A": projector.matrix,
        "G": blur.matrix,
        "a": _rand(SINO_SHAPE, seed + 2, 0.2, 1.0),
        "n": _rand(SINO_SHAPE, seed + 3, 0.5, 1.5),
        "s": _rand(SINO_SHAPE, seed + 4, 0.1, 0.3),
    }
    model = PETForwardModel(
        projector=projector,
        attenuation_factors=parts["a"],
        normalisation=parts["n"],
        resolution=blur,
        background=parts["s"],
    )
    return model, parts


def _dense_expectation(parts, x):
    """Independent truth: n ⊙ a ⊙ (A (G x)) + s with plain matrix products."""
    ax = (parts["A"] @ (parts["G"] @ x.reshape(-1))).reshape(SINO_SHAPE)
    return parts["n"] * parts["a"] * ax + parts["s"]


# --------------------------------------------------------------------------- PETForwardModel


def test_expectation_matches_dense_formula():
    model, parts = _full_model()
    x = _rand(IMAGE_SHAPE, 10)
    torch.testing.assert_close(model.expectation(x), _dense_expectation(parts, x), rtol=1e-12, atol=0)
    data_model = model.data_model()
    torch.testing.assert_close(data_model.expectation(x), _dense_expectation(parts, x), rtol=1e-12, atol=0)


def test_composite_operator_is_adjoint():
    model, _ = _full_model()
    assert isinstance(model.operator, LinearOperator)
    assert model.operator.in_shape == IMAGE_SHAPE and model.operator.out_shape == SINO_SHAPE
    assert model.operator.adjointness_test(generator=torch.Generator().manual_seed(0)) < 1e-12


def test_optional_factors_default_to_identity_and_zero_background():
    projector = FakeProjector.random(1)
    model = PETForwardModel(projector=projector)
    x = _rand(IMAGE_SHAPE, 11)
    torch.testing.assert_close(model.expectation(x), projector(x))
    assert torch.equal(model.background, torch.zeros(SINO_SHAPE, dtype=model.background.dtype))
    a = _rand(SINO_SHAPE, 12, 0.1, 1.0)
    model_a = PETForwardModel(projector=projector, attenuation_factors=a)
    torch.testing.assert_close(model_a.expectation(x), a * projector(x))
    assert model_a.background.dtype == torch.float64


def test_attenuation_factors_from_mu_map_uniform_water():
    # one LOR row holding the intersection lengths (mm) with 4 voxels: total path 200 mm through water
    lengths = torch.tensor([[50.0, 50.0, 50.0, 50.0], [0.0, 0.0, 10.0, 0.0]], dtype=torch.float64)
    projector = MatrixOperator(lengths, in_shape=(1, 2, 2), out_shape=(1, 1, 2))
    mu = torch.full((1, 2, 2), 0.0096, dtype=torch.float64)
    a = attenuation_factors_from_mu_map(projector, mu)
    torch.testing.assert_close(a.reshape(-1), torch.exp(-0.0096 * torch.tensor([200.0, 10.0], dtype=torch.float64)))
    assert float(a.reshape(-1)[0]) == pytest.approx(0.1466, abs=1e-4)


def test_subset_models_match_sliced_full_model():
    model, parts = _full_model()
    x = _rand(IMAGE_SHAPE, 13)
    full = _dense_expectation(parts, x)
    sens = torch.zeros(IMAGE_SHAPE, dtype=torch.float64)
    for idx in view_subsets(6, 4):
        sub = model.subset(idx)
        assert isinstance(sub, PoissonDataModel)
        torch.testing.assert_close(sub.expectation(x), full[:, idx, :], rtol=1e-12, atol=0)
        torch.testing.assert_close(sub.background, parts["s"][:, idx, :])
        sens += sub.sensitivity()
    torch.testing.assert_close(sens, model.data_model().sensitivity(), rtol=1e-12, atol=0)
    assert len(model.subsets(3)) == 3


def test_view_subsets_interleave_and_partition():
    subsets = view_subsets(7, 3)
    assert [s.tolist() for s in subsets] == [[0, 3, 6], [1, 4], [2, 5]]
    assert all(s.dtype == torch.long for s in subsets)
    assert sorted(torch.cat(view_subsets(252, 21)).tolist()) == list(range(252))
    assert [s.tolist() for s in view_subsets(4, 1)] == [[0, 1, 2, 3]]


def test_select_views():
    sino = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(select_views(sino, torch.tensor([2, 0])), sino[:, [2, 0], :])


@pytest.mark.parametrize(
    ("n_views", "n_subsets", "exc"),
    [(6, 0, ValueError), (6, 7, ValueError), (0, 1, ValueError), (6.0, 2, TypeError), (6, True, TypeError)],
)
def test_view_subsets_rejects_bad_arguments(n_views, n_subsets, exc):
    with pytest.raises(exc, match=r"n_views|n_subsets"):
        view_subsets(n_views, n_subsets)


@pytest.mark.parametrize(
    ("indices", "exc"),
    [
        ([0, 1], TypeError),
        (torch.tensor([0, 1], dtype=torch.int32), TypeError),
        (torch.tensor([0.0, 1.0]), TypeError),
        (torch.tensor([], dtype=torch.long), ValueError),
        (torch.tensor([[0, 1]]), ValueError),
        (torch.tensor([0, 6]), ValueError),
        (torch.tensor([-1]), ValueError),
        (torch.tensor([1, 1]), ValueError),
    ],
)
def test_subset_rejects_bad_view_indices(indices, exc):
    model, _ = _full_model()
    with pytest.raises(exc, match="view_indices"):
        model.subset(indices)


def test_subset_needs_view_subset_method():
    plain = MatrixOperator(_rand((48, 18), 0), in_shape=IMAGE_SHAPE, out_shape=SINO_SHAPE)
    model = PETForwardModel(projector=plain)
    with pytest.raises(TypeError, match="view_subset"):
        model.subset(torch.tensor([0, 1]))


def test_subset_checks_view_subset_output_shape():
    class Broken(FakeProjector):
        def view_subset(self, view_indices):
            return FakeProjector(self.matrix)

    model = PETForwardModel(projector=Broken(FakeProjector.random(0).matrix))
    with pytest.raises(ValueError, match="view_subset"):
        model.subset(torch.tensor([0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"projector": torch.ones(3)}, TypeError, "projector"),
        ({"attenuation_factors": torch.ones(2, 6, 5)}, ValueError, "attenuation_factors"),
        ({"attenuation_factors": torch.full(SINO_SHAPE, 1.5)}, ValueError, "attenuation_factors"),
        ({"attenuation_factors": torch.full(SINO_SHAPE, -0.5)}, ValueError, "attenuation_factors"),
        ({"attenuation_factors": [1.0]}, TypeError, "attenuation_factors"),
        ({"normalisation": torch.full(SINO_SHAPE, float("nan"))}, ValueError, "normalisation"),
        ({"normalisation": torch.full(SINO_SHAPE, -1.0)}, ValueError, "normalisation"),
        ({"background": torch.full(SINO_SHAPE, -0.1)}, ValueError, "background"),
        ({"background": torch.ones(SINO_SHAPE, dtype=torch.int64)}, TypeError, "background"),
        ({"background": torch.ones(2, 6)}, ValueError, "background"),
        ({"resolution": "gauss"}, TypeError, "resolution"),
        (
            {"resolution": MatrixOperator(torch.ones(18, 9), in_shape=(1, 3, 3), out_shape=IMAGE_SHAPE)},
            ValueError,
            "resolution",
        ),
    ],
)
def test_pet_forward_model_rejects_bad_arguments(kwargs, exc, match):
    kwargs = {"projector": FakeProjector.random(0), **kwargs}
    with pytest.raises(exc, match=match):
        PETForwardModel(**kwargs)


def test_pet_forward_model_is_keyword_only():
    with pytest.raises(TypeError):
        PETForwardModel(FakeProjector.random(0))  # type: ignore[misc]


def test_attenuation_from_mu_map_rejects_bad_arguments():
    projector = FakeProjector.random(0)
    with pytest.raises(TypeError, match="projector"):
        attenuation_factors_from_mu_map(torch.ones(3), torch.ones(IMAGE_SHAPE))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mu_map_per_mm"):
        attenuation_factors_from_mu_map(projector, torch.ones(3, 3, 3))
    with pytest.raises(ValueError, match="mu_map_per_mm"):
        attenuation_factors_from_mu_map(projector, torch.full(IMAGE_SHAPE, -0.01))


# --------------------------------------------------------------------------- PoissonDataModel


def _data_model(seed: int = 0, background: float = 0.5) -> PoissonDataModel:
    projector = FakeProjector.random(seed)
    return PoissonDataModel(operator=projector, background=torch.full(SINO_SHAPE, background, dtype=torch.float64))


def test_log_likelihood_matches_poisson_log_pmf():
    model = _data_model(background=0.3)
    x = _rand(IMAGE_SHAPE, 20, 0.01, 0.2)  # low counts: ȳ about 1, so y = 0 occurs
    ybar = model.expectation(x)
    y = torch.poisson(ybar, generator=torch.Generator().manual_seed(0))
    assert bool((y == 0).any())  # zero-count bins are part of the check
    truth = torch.distributions.Poisson(ybar).log_prob(y).sum() + torch.lgamma(y + 1).sum()
    assert float(model.log_likelihood(x, y)) == pytest.approx(float(truth), rel=1e-12)


def test_log_likelihood_handles_zero_counts_and_zero_expectation():
    matrix = torch.zeros(4, 2, dtype=torch.float64)
    matrix[0, 0] = matrix[1, 1] = 1.0  # bins 2 and 3 see nothing
    model = PoissonDataModel(operator=MatrixOperator(matrix), background=torch.zeros(4, dtype=torch.float64))
    x = torch.tensor([2.0, 3.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    # bin 0: 1·log 2 − 2; bin 1: −3; bins 2, 3: ȳ = 0 and y = 0 -> 0
    assert float(model.log_likelihood(x, y)) == pytest.approx(math.log(2.0) - 5.0, rel=1e-14)
    torch.testing.assert_close(model.ratio(x, y), torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="ȳ"):
        model.log_likelihood(x, torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="ȳ"):
        model.gradient(x, torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64))


def test_gradient_matches_central_differences():
    model = _data_model(1)
    x = _rand(IMAGE_SHAPE, 21, 0.5, 1.5)
    y = torch.poisson(model.expectation(x) * 3.0, generator=torch.Generator().manual_seed(1))
    grad = model.gradient(x, y)
    h = 1e-6
    fd = torch.zeros_like(x).reshape(-1)
    for i in range(x.numel()):
        e = torch.zeros_like(x).reshape(-1)
        e[i] = h
        e = e.reshape(IMAGE_SHAPE)
        fd[i] = (model.log_likelihood(x + e, y) - model.log_likelihood(x - e, y)) / (2 * h)
    torch.testing.assert_close(grad, fd.reshape(IMAGE_SHAPE), rtol=1e-6, atol=1e-7)


def test_sensitivity_is_column_sums():
    model = _data_model(2)
    torch.testing.assert_close(model.sensitivity(), model.operator.matrix.sum(dim=0).reshape(IMAGE_SHAPE))
    assert model.sensitivity(dtype=torch.float32).dtype == torch.float32


def test_integer_data_accepted():
    model = _data_model(3)
    x = _rand(IMAGE_SHAPE, 22, 0.5, 1.5)
    y = torch.poisson(model.expectation(x), generator=torch.Generator().manual_seed(2))
    assert float(model.log_likelihood(x, y.long())) == pytest.approx(float(model.log_likelihood(x, y)), rel=1e-14)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"operator": torch.ones(3, 3)}, TypeError, "operator"),
        ({"background": torch.zeros(2, 6, 3, dtype=torch.float64)}, ValueError, "background"),
        ({"background": torch.full(SINO_SHAPE, -1.0)}, ValueError, "background"),
        ({"background": torch.full(SINO_SHAPE, float("inf"))}, ValueError, "background"),
        ({"background": None}, TypeError, "background"),
    ],
)
def test_poisson_data_model_rejects_bad_arguments(kwargs, exc, match):
    kwargs = {"operator": FakeProjector.random(0), "background": torch.zeros(SINO_SHAPE), **kwargs}
    with pytest.raises(exc, match=match):
        PoissonDataModel(**kwargs)


@pytest.mark.parametrize(
    ("data", "exc"),
    [
        ([1.0], TypeError),
        (torch.ones(2, 6, 3), ValueError),
        (torch.full(SINO_SHAPE, -1.0), ValueError),
        (torch.full(SINO_SHAPE, float("nan")), ValueError),
    ],
)
def test_poisson_data_model_rejects_bad_data(data, exc):
    model = _data_model()
    x = torch.ones(IMAGE_SHAPE, dtype=torch.float64)
    for method in (model.log_likelihood, model.gradient, model.ratio):
        with pytest.raises(exc, match="data"):
            method(x, data)
