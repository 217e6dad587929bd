from __future__ import annotations

import pytest
import torch

from bundle.physics.forward_model import PETForwardModel, PoissonDataModel, select_views, view_subsets
from bundle.physics.operators import MatrixOperator
from bundle.physics.priors import Neighbourhood, RelativeDifferencePrior
from bundle.physics.recon import map_em, mlem, osem

IMAGE_SHAPE = (3, 4, 4)
SINO_SHAPE = (3, 8, 6)  # (planes, views, radial)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class FakeProjector(MatrixOperator):
    """Random non-negative dense matrix image -> sinogram (planes, views, radial) with view_subset."""

    def __init__(self, seed: int) -> None:
        n_out, n_in = torch.Size(SINO_SHAPE).numel(), torch.Size(IMAGE_SHAPE).numel()
        matrix = torch.rand(n_out, n_in, generator=_gen(seed), dtype=torch.float64)
        matrix = matrix * (matrix > 0.6)  # sparse-ish like a projector, still every voxel seen by every view
        super().__init__(matrix, in_shape=IMAGE_SHAPE, out_shape=SINO_SHAPE)

    def view_subset(self, view_indices: torch.Tensor) -> MatrixOperator:
        p, v, r = self.out_shape
        rows = self.matrix.reshape(p, v, r, -1).index_select(1, view_indices.to(self.matrix.device))
        return MatrixOperator(
            rows.reshape(-1, self.matrix.shape[1]), in_shape=self.in_shape, out_shape=(p, view_indices.numel(), r)
        )


def _phantom() -> torch.Tensor:
    x = torch.full(IMAGE_SHAPE, 1.0, dtype=torch.float64)
    x[1, 1:3, 1:3] = 4.0
    return x


def _pet_problem(*, seed: int = 0, count_scale: float = 20.0, background: float = 0.0):
    projector = FakeProjector(seed)
    s = torch.full(SINO_SHAPE, background, dtype=torch.float64)
    model = PETForwardModel(projector=projector, background=s)
    y = torch.poisson(model.expectation(_phantom() * count_scale), generator=_gen(seed + 100))
    return model, y


def _subset_problem(model: PETForwardModel, y: torch.Tensor, n_subsets: int):
    subsets = view_subsets(model.n_views, n_subsets)
    return [model.subset(idx) for idx in subsets], [select_views(y, idx) for idx in subsets], subsets


def _matrix_problem(seed: int = 0, background: float = 0.5):
    matrix = torch.rand(40, 12, generator=_gen(seed), dtype=torch.float64)
    model = PoissonDataModel(
        operator=MatrixOperator(matrix), background=torch.full((40,), background, dtype=torch.float64)
    )
    x_true = torch.rand(12, generator=_gen(seed + 1), dtype=torch.float64) * 3
    y = torch.poisson(model.expectation(x_true), generator=_gen(seed + 2))
    return model, y


def _reference_mlem(matrix, background, y, n_iter):
    """Independent MLEM with dense matrices (all sensitivities positive)."""
    x = torch.ones(matrix.shape[1], dtype=torch.float64)
    sens = matrix.sum(dim=0)
    for _ in range(n_iter):
        x = x / sens * (matrix.T @ (y / (matrix @ x + background)))
    return x


# --------------------------------------------------------------------------- MLEM


def test_mlem_log_likelihood_is_non_decreasing():
    model, y = _matrix_problem()
    values = []
    mlem(model, y, num_iterations=30, callback=lambda it, x: values.append(float(model.log_likelihood(x, y))))
    assert len(values) == 30
    initial = float(model.log_likelihood(torch.ones(12, dtype=torch.float64), y))
    diffs = torch.diff(torch.tensor([initial, *values], dtype=torch.float64))
    assert bool((diffs >= -1e-10 * abs(initial)).all()), diffs
    assert values[-1] > initial


def test_mlem_matches_independent_implementation():
    model, y = _matrix_problem(3)
    x = mlem(model, y, num_iterations=15)
    truth = _reference_mlem(model.operator.matrix, model.background, y, 15)
    torch.testing.assert_close(x, truth, rtol=1e-12, atol=1e-14)


def test_mlem_noiseless_square_system_converges_to_truth():
    n = 8
    matrix = 2.0 * torch.eye(n, dtype=torch.float64) + 0.2 * torch.rand(n, n, generator=_gen(5), dtype=torch.float64)
    model = PoissonDataModel(operator=MatrixOperator(matrix), background=torch.zeros(n, dtype=torch.float64))
    x_true = 0.5 + torch.rand(n, generator=_gen(6), dtype=torch.float64)
    y = matrix @ x_true
    errors = []
    norm = torch.linalg.vector_norm
    mlem(model, y, num_iterations=200, callback=lambda it, x: errors.append(float(norm(x - x_true) / norm(x_true))))
    assert errors[-1] < 1e-6
    assert errors[-1] < errors[9] < errors[0]


def test_zero_sensitivity_voxels_stay_zero():
    matrix = torch.rand(20, 5, generator=_gen(7), dtype=torch.float64)
    matrix[:, 2] = 0.0
    model = PoissonDataModel(operator=MatrixOperator(matrix), background=torch.zeros(20, dtype=torch.float64))
    y = torch.poisson(matrix @ torch.full((5,), 2.0, dtype=torch.float64), generator=_gen(8))
    x = mlem(model, y, num_iterations=5)
    assert float(x[2]) == 0.0
    assert bool((x[[0, 1, 3, 4]] > 0).all())


def test_em_total_counts_property_mlem_exact():
    model, y = _pet_problem()
    data_model = model.data_model()
    checks = []
    mlem(data_model, y, num_iterations=4, callback=lambda it, x: checks.append(float(data_model.expectation(x).sum())))
    for total in checks:
        assert total == pytest.approx(float(y.sum()), rel=1e-12)


def test_em_total_counts_property_osem():
    model, y = _pet_problem()
    models, data, _ = _subset_problem(model, y, 4)
    full = model.data_model()
    totals = []
    x = osem(models, data, num_iterations=3, callback=lambda it, x: totals.append(float(full.expectation(x).sum())))
    for total in totals:  # approximately after each full pass ...
        assert total == pytest.approx(float(y.sum()), rel=0.05)
    # ... and exactly over the subset updated last
    assert float(models[-1].expectation(x).sum()) == pytest.approx(float(data[-1].sum()), rel=1e-12)


# --------------------------------------------------------------------------- OSEM


def test_osem_with_one_subset_equals_mlem():
    model, y = _pet_problem(background=0.2)
    full = model.data_model()
    x_mlem = mlem(full, y, num_iterations=5)
    x_osem = osem(model.subsets(1), [y], num_iterations=5)
    assert torch.equal(x_osem, x_mlem)
    truth = _reference_mlem(model.projector.matrix, full.background.reshape(-1), y.reshape(-1), 5)
    torch.testing.assert_close(x_mlem.reshape(-1), truth, rtol=1e-12, atol=1e-14)


def test_osem_matches_independent_subset_loop():
    model, y = _pet_problem(background=0.1)
    models, data, subsets = _subset_problem(model, y, 4)
    x = osem(models, data, num_iterations=2)
    a = model.projector.matrix.reshape(*SINO_SHAPE, -1)
    ref = torch.ones(torch.Size(IMAGE_SHAPE).numel(), dtype=torch.float64)
    for _ in range(2):
        for idx in subsets:
            a_k = a.index_select(1, idx).reshape(-1, ref.numel())
            y_k = y.index_select(1, idx).reshape(-1)
            ref = ref / a_k.sum(dim=0) * (a_k.T @ (y_k / (a_k @ ref + 0.1)))
    torch.testing.assert_close(x.reshape(-1), ref, rtol=1e-12, atol=1e-14)


def test_osem_accelerates_over_mlem():
    model, y = _pet_problem()
    full = model.data_model()
    models, data, _ = _subset_problem(model, y, 4)
    ll_mlem = float(full.log_likelihood(mlem(full, y, num_iterations=2), y))
    ll_osem = float(full.log_likelihood(osem(models, data, num_iterations=2), y))
    assert ll_osem > ll_mlem


def test_callback_gets_iteration_numbers_and_copies():
    model, y = _pet_problem()
    seen = []

    def callback(iteration, image):
        seen.append(iteration)
        image.fill_(-1.0)  # must not affect the reconstruction

    x = osem(model.subsets(2), _subset_problem(model, y, 2)[1], num_iterations=3, callback=callback)
    assert seen == [1, 2, 3]
    assert bool((x > 0).all())


def test_initial_image_is_used_not_modified_and_float32_works():
    model, y = _pet_problem()
    initial = _phantom()  # not uniform: without background a uniform start only rescales the first update
    x1 = mlem(model.data_model(), y, num_iterations=1, initial=initial)
    assert torch.equal(initial, _phantom())
    assert not torch.equal(x1, mlem(model.data_model(), y, num_iterations=1))
    x32 = mlem(model.data_model(), y.float(), num_iterations=3)
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), mlem(model.data_model(), y, num_iterations=3), rtol=1e-4, atol=1e-5)


def test_no_autograd_graph():
    model, y = _pet_problem()
    initial = torch.ones(IMAGE_SHAPE, dtype=torch.float64, requires_grad=True)
    assert not mlem(model.data_model(), y, num_iterations=1, initial=initial).requires_grad


# --------------------------------------------------------------------------- MAP-EM


def test_map_em_beta_zero_equals_osem():
    model, y = _pet_problem(background=0.2)
    models, data, _ = _subset_problem(model, y, 2)
    prior = RelativeDifferencePrior()
    assert torch.equal(
        map_em(models, data, prior=prior, beta=0.0, num_iterations=3), osem(models, data, num_iterations=3)
    )


@pytest.mark.parametrize("neighbourhood", list(Neighbourhood))
def test_map_em_positive_beta_is_smoother(neighbourhood):
    model, y = _pet_problem(count_scale=2.0, background=0.2)
    models, data, _ = _subset_problem(model, y, 2)
    prior = RelativeDifferencePrior(neighbourhood=neighbourhood)
    x_osem = osem(models, data, num_iterations=10)
    x_map = map_em(models, data, prior=prior, beta=2.0, num_iterations=10)
    assert float(prior.value(x_map)) < 0.7 * float(prior.value(x_osem))
    assert bool((x_map >= 0).all())


def test_map_em_matches_independent_osl_loop():
    model, y = _pet_problem(count_scale=2.0, background=0.2)
    models, data, _ = _subset_problem(model, y, 2)
    prior = RelativeDifferencePrior(voxel_size_mm=(2.0, 1.0, 1.0))
    beta = 1.5
    x = map_em(models, data, prior=prior, beta=beta, num_iterations=2)
    ref = torch.ones(IMAGE_SHAPE, dtype=torch.float64)
    for _ in range(2):
        for m, y_k in zip(models, data, strict=True):
            ybar = m.operator(ref) + m.background
            ref = (
                ref
                * m.operator.adjoint(y_k / ybar)
                / (m.operator.adjoint(torch.ones_like(y_k)) + beta / 2 * prior.gradient(ref))
            )
    torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-14)


def test_map_em_beta_too_large_raises():
    model, y = _pet_problem(count_scale=2.0, background=0.2)
    models, data, _ = _subset_problem(model, y, 2)
    initial = _phantom()  # strong edges: ∇R < 0 next to the hot spot
    with pytest.raises(ValueError, match=r"beta=.*too large"):
        map_em(models, data, prior=RelativeDifferencePrior(), beta=1e6, num_iterations=1, initial=initial)


# --------------------------------------------------------------------------- argument checks


def _good():
    model, y = _pet_problem()
    models, data, _ = _subset_problem(model, y, 2)
    return models, data


@pytest.mark.parametrize(
    ("num_iterations", "exc"),
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)],
)
def test_rejects_bad_num_iterations(num_iterations, exc):
    models, data = _good()
    with pytest.raises(exc, match="num_iterations"):
        osem(models, data, num_iterations=num_iterations)


def test_rejects_bad_models_and_data():
    models, data = _good()
    with pytest.raises(TypeError, match="models"):
        osem(models[0], data, num_iterations=1)
    with pytest.raises(ValueError, match="models"):
        osem([], [], num_iterations=1)
    with pytest.raises(TypeError, match=r"models\[1\]"):
        osem([models[0], "model"], data, num_iterations=1)
    with pytest.raises(ValueError, match="data_subsets"):
        osem(models, data[:1], num_iterations=1)
    with pytest.raises(TypeError, match="data_subsets"):
        osem(models, data[0], num_iterations=1)
    with pytest.raises(TypeError, match=r"data_subsets\[1\]"):
        osem(models, [data[0], [1.0]], num_iterations=1)
    with pytest.raises(ValueError, match=r"data_subsets\[0\] must have shape"):
        osem(models, [data[1][:, :2], data[1]], num_iterations=1)
    with pytest.raises(ValueError, match=r"data_subsets\[0\] must be >= 0"):
        osem(models, [-data[0] - 1, data[1]], num_iterations=1)
    with pytest.raises(ValueError, match=r"data_subsets\[1\] must be finite"):
        osem(models, [data[0], data[1] * float("nan")], num_iterations=1)
    other = PoissonDataModel(
        operator=MatrixOperator(torch.ones(48, 5, dtype=torch.float64), out_shape=(3, 4, 4)),
        background=torch.zeros(3, 4, 4),
    )
    with pytest.raises(ValueError, match=r"models\[1\].in_shape"):
        osem([models[0], other], [data[0], data[0]], num_iterations=1)
    with pytest.raises(TypeError, match="model must be a PoissonDataModel"):
        mlem(models, data[0], num_iterations=1)


def test_rejects_negative_system_matrix():
    model = PoissonDataModel(
        operator=MatrixOperator(-torch.ones(4, 2, dtype=torch.float64)), background=torch.ones(4, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match="non-negative system matrix"):
        mlem(model, torch.ones(4, dtype=torch.float64), num_iterations=1)


@pytest.mark.parametrize(
    ("initial", "exc"),
    [
        ([1.0], TypeError),
        (torch.ones(3, 4, 5, dtype=torch.float64), ValueError),
        (torch.ones(IMAGE_SHAPE, dtype=torch.int64), TypeError),
        (-torch.ones(IMAGE_SHAPE, dtype=torch.float64), ValueError),
        (torch.full(IMAGE_SHAPE, float("inf"), dtype=torch.float64), ValueError),
    ],
)
def test_rejects_bad_initial(initial, exc):
    models, data = _good()
    with pytest.raises(exc, match="initial"):
        osem(models, data, num_iterations=1, initial=initial)


def test_rejects_bad_callback():
    models, data = _good()
    with pytest.raises(TypeError, match="callback"):
        osem(models, data, num_iterations=1, callback="print")


@pytest.mark.parametrize(
    ("beta", "exc"),
    [(-1.0, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError), (None, TypeError)],
)
def test_map_em_rejects_bad_beta(beta, exc):
    models, data = _good()
    with pytest.raises(exc, match="beta"):
        map_em(models, data, prior=RelativeDifferencePrior(), beta=beta, num_iterations=1)


def test_map_em_rejects_prior_without_gradient():
    models, data = _good()
    with pytest.raises(TypeError, match="prior"):
        map_em(models, data, prior=object(), beta=1.0, num_iterations=1)


def test_functions_are_keyword_only():
    models, data = _good()
    with pytest.raises(TypeError):
        osem(models, data, 1)  # type: ignore[misc]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    model, y = _pet_problem(count_scale=2.0, background=0.2)
    models, data, subsets = _subset_problem(model, y, 2)
    prior = RelativeDifferencePrior()
    x_cpu = map_em(models, data, prior=prior, beta=1.0, num_iterations=3)
    cuda_projector = FakeProjector(0)
    cuda_projector.matrix = cuda_projector.matrix.cuda()
    cuda_model = PETForwardModel(projector=cuda_projector, background=model.background.cuda())
    cuda_models = [cuda_model.subset(idx) for idx in subsets]
    x_cuda = map_em(cuda_models, [d.cuda() for d in data], prior=prior, beta=1.0, num_iterations=3)
    assert x_cuda.is_cuda
    torch.testing.assert_close(x_cuda.cpu(), x_cpu, rtol=1e-10, atol=1e-12)
