"""The LinearOperator contract, checked for every operator of bundle.physics from one registry.

Each registry entry is a zero-argument factory.  Every operator must: pass the adjointness test in float64
(relative mismatch < 1e-6), have a power-iteration norm that matches the largest singular value of its dense matrix
(small operators) or lies between rigorous lower and upper bounds (large ones), return the documented shapes, be
linear, not alias or modify its input, and give autograd gradients equal to its adjoint.  CUDA variants run only
where CUDA is available.  A coverage test fails when bundle.physics exports a LinearOperator that has no entry.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pytest
import torch

import bundle.physics as physics
from bundle.physics.forward_model import PETForwardModel, attenuation_factors_from_mu_map
from bundle.physics.geometry import ImageGeometry, RegularPolygonScanner, SinogramLayout, preset
from bundle.physics.operators import (
    AdjointOperator,
    CompositeOperator,
    ElementwiseMultiplication,
    IdentityOperator,
    LinearOperator,
    MatrixOperator,
)
from bundle.physics.resolution import GaussianResolution
from bundle.physics.sinogram import SinogramProjector, SpanCompression

ADJOINTNESS_TOLERANCE = 1e-6  # relative, float64: the requirement of the issue
DENSE_LIMIT = 2000  # build the dense matrix only when input and output have at most this many elements
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA is not available")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rand(shape, seed: int, *, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=_gen(seed), dtype=torch.float64)


def _micro_geometry() -> tuple[SinogramLayout, ImageGeometry]:
    """2 rings × 32 detectors, 4 planes × 16 views × 16 radial = 1024 bins; 2 × 10 × 10 image (dense-sized)."""
    scanner = RegularPolygonScanner(
        radius_mm=30.0, num_sides=8, crystals_per_side=4, crystal_pitch_mm=5.0, num_rings=2, ring_spacing_mm=4.0
    )
    layout = SinogramLayout(scanner=scanner, num_radial=16)
    return layout, ImageGeometry(shape=(2, 10, 10), voxel_size_mm=(2.0, 3.0, 3.0))


def _tiny_projector(name: str) -> SinogramProjector:
    p = preset(name)
    return SinogramProjector(layout=p.layout, image=p.image)


def _micro_projector() -> SinogramProjector:
    layout, image = _micro_geometry()
    return SinogramProjector(layout=layout, image=image)


def _pet_model(projector: SinogramProjector, seed: int) -> PETForwardModel:
    """n ⊙ a ⊙ A(G x) with a water-disc attenuation, random efficiencies (gaps -> 0) and a 4.5 mm Gaussian."""
    image = projector.image
    _, oy, ox = image.origin_mm
    _, vy, vx = image.voxel_size_mm
    yy = oy + vy * torch.arange(image.shape[1], dtype=torch.float64)
    xx = ox + vx * torch.arange(image.shape[2], dtype=torch.float64)
    radius = 0.4 * image.shape[1] * vy
    disc = (yy[:, None] ** 2 + xx[None, :] ** 2 <= radius**2).to(torch.float64)
    mu = 0.0096 * disc.expand(image.shape).contiguous()
    attenuation = attenuation_factors_from_mu_map(projector, mu)
    normalisation = _rand(projector.out_shape, seed, low=0.5, high=1.5)
    normalisation[:, :, :2] = 0.0  # dead bins
    resolution = GaussianResolution(image_shape=image.shape, fwhm_mm=4.5, voxel_size_mm=image.voxel_size_mm)
    return PETForwardModel(
        projector=projector, attenuation_factors=attenuation, normalisation=normalisation, resolution=resolution
    )


def _composite() -> CompositeOperator:
    blur = GaussianResolution(image_shape=(2, 3, 4), fwhm_mm=(3.0, 4.0, 5.0), voxel_size_mm=(2.0, 2.0, 2.0))
    weights = ElementwiseMultiplication(_rand((2, 3, 4), 21, low=-1.0, high=2.0))
    matrix = MatrixOperator(_rand((10, 24), 22, low=-1.0, high=1.0), in_shape=(2, 3, 4), out_shape=(5, 2))
    return CompositeOperator([matrix, weights, blur])


REGISTRY: dict[str, Callable[[], LinearOperator]] = {
    "sinogram_projector_tiny_2d": lambda: _tiny_projector("tiny_2d"),
    "sinogram_projector_tiny_3d": lambda: _tiny_projector("tiny_3d"),
    "sinogram_projector_view_subset": lambda: _tiny_projector("tiny_3d").view_subset([0, 7, 31, 50]),
    "sinogram_projector_micro": _micro_projector,
    "span_compression_tiny_3d": lambda: SpanCompression(layout=preset("tiny_3d").layout, span=3),
    "span_compression_micro": lambda: SpanCompression(layout=_micro_geometry()[0], span=3),
    "elementwise_multiplication": lambda: ElementwiseMultiplication(_rand((3, 4, 5), 11, low=-2.0, high=3.0)),
    "composite": _composite,
    "identity": lambda: IdentityOperator((2, 3, 4)),
    "matrix": lambda: MatrixOperator(_rand((7, 12), 12, low=-1.0, high=1.0), in_shape=(3, 4), out_shape=(7,)),
    "matrix_default_shapes": lambda: MatrixOperator(_rand((5, 6), 13, low=-1.0, high=1.0)),
    "adjoint_of_projector": lambda: AdjointOperator(_tiny_projector("tiny_2d")),
    "adjoint_of_micro_projector": lambda: _micro_projector().H,
    "normal_operator_via_matmul": lambda: _micro_projector().H @ _micro_projector(),
    "gaussian_resolution_3d": lambda: GaussianResolution(
        image_shape=(6, 7, 8), fwhm_mm=(4.0, 5.0, 6.0), voxel_size_mm=(2.0, 2.0, 2.0)
    ),
    "gaussian_resolution_slice": lambda: GaussianResolution(
        image_shape=(1, 16, 16), fwhm_mm=6.0, voxel_size_mm=(2.0, 2.5, 2.5)
    ),
    "pet_forward_model_tiny_2d": lambda: _pet_model(_tiny_projector("tiny_2d"), 31).operator,
    "pet_forward_model_micro": lambda: _pet_model(_micro_projector(), 32).operator,
    "pet_forward_model_view_subset": lambda: _pet_model(_tiny_projector("tiny_2d"), 33)
    .subset(torch.tensor([1, 17, 40]))
    .operator,
}

# Operators whose matrix is entrywise >= 0 by construction (line lengths, sums, blurs, efficiencies in [0, ∞)).
# For those, ‖A‖₂ <= ‖A‖_F <= ‖A 1‖₂ and ‖A‖₂ <= sqrt(‖A‖₁ ‖A‖_∞) give cheap rigorous upper bounds.
NONNEGATIVE = {
    "sinogram_projector_tiny_2d", "sinogram_projector_tiny_3d", "sinogram_projector_view_subset",
    "sinogram_projector_micro", "span_compression_tiny_3d", "span_compression_micro", "identity",
    "adjoint_of_projector", "adjoint_of_micro_projector", "normal_operator_via_matmul", "gaussian_resolution_3d",
    "gaussian_resolution_slice", "pet_forward_model_tiny_2d", "pet_forward_model_micro",
    "pet_forward_model_view_subset",
}

NAMES = sorted(REGISTRY)


def _is_dense_sized(op: LinearOperator) -> bool:
    return math.prod(op.in_shape) <= DENSE_LIMIT and math.prod(op.out_shape) <= DENSE_LIMIT


# Listed by hand (checked against the real sizes below) so that collecting this file builds no operator.
DENSE_NAMES = [
    "adjoint_of_micro_projector", "composite", "elementwise_multiplication", "gaussian_resolution_3d",
    "gaussian_resolution_slice", "identity", "matrix", "matrix_default_shapes", "normal_operator_via_matmul",
    "pet_forward_model_micro", "pet_forward_model_view_subset", "sinogram_projector_micro", "span_compression_micro",
]
LARGE_NAMES = [n for n in NAMES if n not in DENSE_NAMES]


def _dense(op: LinearOperator, *, via_adjoint: bool = False) -> torch.Tensor:
    """The matrix (prod(out_shape), prod(in_shape)) of ``op``, column by column from unit vectors.

    With ``via_adjoint`` the rows come from ``op.adjoint`` applied to unit vectors of the output space instead.
    """
    n_in, n_out = math.prod(op.in_shape), math.prod(op.out_shape)
    if via_adjoint:
        eye = torch.eye(n_out, dtype=torch.float64)
        return torch.stack([op.adjoint(e.reshape(op.out_shape)).reshape(-1) for e in eye], dim=0)
    eye = torch.eye(n_in, dtype=torch.float64)
    return torch.stack([op.apply(e.reshape(op.in_shape)).reshape(-1) for e in eye], dim=1)


# --------------------------------------------------------------------------------------------------------------
# Registry coverage
# --------------------------------------------------------------------------------------------------------------


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _all_subclasses(sub)
    return found


def test_registry_covers_every_exported_linear_operator():
    exported = {
        obj
        for name in physics.__all__
        if isinstance(obj := getattr(physics, name), type) and issubclass(obj, LinearOperator)
        and not inspect.isabstract(obj)
    }
    assert exported, "bundle.physics exports no LinearOperator?"
    covered = {type(factory()) for factory in REGISTRY.values()}
    missing = sorted(cls.__name__ for cls in exported - covered)
    assert not missing, f"LinearOperator classes without a contract-test registry entry: {missing}"


def test_every_concrete_operator_in_bundle_physics_is_exported():
    """A new operator class defined in bundle.physics must be exported (and hence covered by the registry)."""
    defined = {
        cls
        for cls in _all_subclasses(LinearOperator)
        if cls.__module__.startswith("bundle.physics") and not inspect.isabstract(cls)
        and not cls.__name__.startswith("_")
    }
    exported = {getattr(physics, name) for name in physics.__all__}
    assert sorted(c.__name__ for c in defined - exported) == []


def test_registry_operators_are_linear_operators_and_split_into_dense_and_large():
    for name in NAMES:
        op = REGISTRY[name]()
        assert isinstance(op, LinearOperator), name
        assert _is_dense_sized(op) == (name in DENSE_NAMES), name
    assert set(DENSE_NAMES) | set(LARGE_NAMES) == set(NAMES)
    assert len(DENSE_NAMES) >= 10 and len(LARGE_NAMES) >= 5  # both norm checks are exercised
    assert set(LARGE_NAMES) <= NONNEGATIVE  # the large-operator upper bounds need entrywise >= 0


# --------------------------------------------------------------------------------------------------------------
# Adjointness, norm, shapes
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_adjointness_float64(name):
    op = REGISTRY[name]()
    for seed in (0, 1, 2):
        mismatch = op.adjointness_test(generator=torch.Generator().manual_seed(seed))
        assert mismatch < ADJOINTNESS_TOLERANCE, f"{name}: seed {seed}: relative mismatch {mismatch:.3g}"


@pytest.mark.parametrize("name", DENSE_NAMES)
def test_dense_matrix_from_apply_equals_transpose_from_adjoint(name):
    """An adjointness check without random vectors: every entry <e_i, A e_j> = <A^T e_i, e_j>."""
    op = REGISTRY[name]()
    forward = _dense(op)
    backward = _dense(op, via_adjoint=True)
    assert forward.shape == (math.prod(op.out_shape), math.prod(op.in_shape))
    assert float((forward - backward).abs().max()) <= 1e-12 * max(float(forward.abs().max()), 1e-300)
    if name in NONNEGATIVE:
        assert float(forward.min()) >= 0.0


@pytest.mark.parametrize("name", DENSE_NAMES)
def test_norm_equals_largest_singular_value(name):
    op = REGISTRY[name]()
    sigma_max = float(torch.linalg.svdvals(_dense(op))[0])
    estimate = op.norm(generator=_gen(3), num_iter=500)
    # power iteration on A^T A from a unit vector never overshoots: sqrt(|A^T A x|) <= sigma_max
    assert estimate <= sigma_max * (1 + 1e-9)
    assert estimate == pytest.approx(sigma_max, rel=1e-3)
    # the default number of iterations is already within 2 %
    assert op.norm(generator=_gen(4)) == pytest.approx(sigma_max, rel=2e-2)


@pytest.mark.parametrize("name", LARGE_NAMES)
def test_norm_lies_between_rigorous_bounds(name):
    op = REGISTRY[name]()
    estimate = op.norm(generator=_gen(5))
    ones_in = torch.ones(op.in_shape, dtype=torch.float64)
    ones_out = torch.ones(op.out_shape, dtype=torch.float64)
    row_sums, col_sums = op.apply(ones_in), op.adjoint(ones_out)
    assert float(row_sums.min()) >= 0 and float(col_sums.min()) >= 0
    frobenius_bound = min(float(torch.linalg.vector_norm(row_sums)), float(torch.linalg.vector_norm(col_sums)))
    schur_bound = math.sqrt(float(row_sums.max()) * float(col_sums.max()))
    assert estimate <= min(frobenius_bound, schur_bound) * (1 + 1e-9)
    for seed in (6, 7):
        x = _rand(op.in_shape, seed, low=-1.0, high=1.0)
        assert estimate >= float(torch.linalg.vector_norm(op.apply(x)) / torch.linalg.vector_norm(x))
    assert estimate >= float(torch.linalg.vector_norm(row_sums) / torch.linalg.vector_norm(ones_in))


def test_span_compression_norm_is_sqrt_of_largest_group():
    """S S^T is diagonal with the group sizes, so ‖S‖ = sqrt(max group size) exactly."""
    op = REGISTRY["span_compression_tiny_3d"]()
    largest = int(torch.bincount(op.group).max())
    assert op.norm(generator=_gen(8)) == pytest.approx(math.sqrt(largest), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_apply_and_adjoint_shapes_and_dtype(name):
    op = REGISTRY[name]()
    y = op.apply(_rand(op.in_shape, 9))
    assert tuple(y.shape) == op.out_shape and y.dtype == torch.float64
    assert tuple(op(_rand(op.in_shape, 9)).shape) == op.out_shape  # __call__ == apply
    x = op.adjoint(_rand(op.out_shape, 10))
    assert tuple(x.shape) == op.in_shape and x.dtype == torch.float64
    h = op.H
    assert isinstance(h, AdjointOperator)
    assert (h.in_shape, h.out_shape) == (op.out_shape, op.in_shape)


@pytest.mark.parametrize("name", NAMES)
def test_linearity(name):
    op = REGISTRY[name]()
    x, z = _rand(op.in_shape, 11, low=-1.0), _rand(op.in_shape, 12, low=-1.0)
    lhs = op.apply(2.5 * x - 0.75 * z)
    rhs = 2.5 * op.apply(x) - 0.75 * op.apply(z)
    assert float((lhs - rhs).abs().max()) <= 1e-12 * max(float(rhs.abs().max()), 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_apply_and_adjoint_neither_modify_nor_alias_their_input(name):
    op = REGISTRY[name]()
    x = _rand(op.in_shape, 13)
    x_copy = x.clone()
    y = op.apply(x)
    y.add_(1.0)
    assert torch.equal(x, x_copy)
    w = _rand(op.out_shape, 14)
    w_copy = w.clone()
    b = op.adjoint(w)
    b.add_(1.0)
    assert torch.equal(w, w_copy)


@pytest.mark.parametrize("name", NAMES)
def test_apply_and_adjoint_reject_wrong_shapes(name):
    op = REGISTRY[name]()
    cls = type(op).__name__
    wrong_in = (*op.in_shape, 1)
    with pytest.raises(ValueError, match=rf"{cls}.apply input must have shape \({op.in_shape[0]}"):
        op.apply(torch.zeros(wrong_in, dtype=torch.float64))
    with pytest.raises(ValueError, match=rf"{cls}.adjoint input must have shape \({op.out_shape[0]}"):
        op.adjoint(torch.zeros((*op.out_shape, 1), dtype=torch.float64))
    with pytest.raises(TypeError, match=rf"{cls}.apply input must be a torch.Tensor"):
        op.apply(0.0)


# --------------------------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_autograd_through_apply_is_the_adjoint(name):
    op = REGISTRY[name]()
    x = _rand(op.in_shape, 15).requires_grad_(True)
    w = _rand(op.out_shape, 16, low=-1.0)
    y = op.apply(x)
    assert y.requires_grad
    torch.sum(w * y).backward()
    expected = op.adjoint(w)
    assert float((x.grad - expected).abs().max()) <= 1e-12 * max(float(expected.abs().max()), 1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_autograd_through_adjoint_is_the_forward(name):
    op = REGISTRY[name]()
    y = _rand(op.out_shape, 17).requires_grad_(True)
    v = _rand(op.in_shape, 18, low=-1.0)
    torch.sum(v * op.adjoint(y)).backward()
    expected = op.apply(v)
    assert float((y.grad - expected).abs().max()) <= 1e-12 * max(float(expected.abs().max()), 1e-300)


@pytest.mark.parametrize("name", DENSE_NAMES)
def test_autograd_gradient_equals_dense_transpose(name):
    """Against the matrix built from forward applications only: grad of <w, A x> is M^T w."""
    op = REGISTRY[name]()
    matrix = _dense(op)
    x = _rand(op.in_shape, 19).requires_grad_(True)
    w = _rand(op.out_shape, 20, low=-1.0)
    torch.sum(w * op(x)).backward()
    expected = (matrix.T @ w.reshape(-1)).reshape(op.in_shape)
    torch.testing.assert_close(x.grad, expected, rtol=1e-10, atol=1e-12 * float(matrix.abs().max()))


def test_no_graph_when_grad_is_disabled():
    op = REGISTRY["sinogram_projector_micro"]()
    x = _rand(op.in_shape, 21).requires_grad_(True)
    with torch.no_grad():
        assert not op.apply(x).requires_grad


# --------------------------------------------------------------------------------------------------------------
# Argument checks of the generic operators
# --------------------------------------------------------------------------------------------------------------


def test_norm_rejects_non_positive_iterations():
    with pytest.raises(ValueError, match="num_iter must be >= 1, got 0"):
        IdentityOperator((3,)).norm(generator=_gen(0), num_iter=0)


def test_composite_rejects_empty_sequence():
    with pytest.raises(ValueError, match="operators must hold at least one LinearOperator, got an empty sequence"):
        CompositeOperator([])


def test_composite_rejects_non_operators():
    with pytest.raises(TypeError, match=r"operators\[1\] must be a LinearOperator, got str"):
        CompositeOperator([IdentityOperator((3,)), "blur"])


def test_composite_rejects_mismatched_shapes():
    first = MatrixOperator(torch.ones(2, 3))
    second = MatrixOperator(torch.ones(4, 5))
    with pytest.raises(ValueError, match=r"operators\[0\].in_shape \(3,\) must equal operators\[1\].out_shape \(4,\)"):
        CompositeOperator([first, second])
    with pytest.raises(ValueError, match=r"operators\[0\].in_shape \(3,\) must equal"):
        first @ second


def test_elementwise_multiplication_rejects_non_tensor_weights():
    with pytest.raises(TypeError, match=r"weights must be a torch\.Tensor, got list"):
        ElementwiseMultiplication([1.0, 2.0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_elementwise_multiplication_rejects_non_finite_weights(bad):
    with pytest.raises(ValueError, match="weights must be finite everywhere; found NaN or Inf"):
        ElementwiseMultiplication(torch.tensor([1.0, bad]))


@pytest.mark.parametrize("matrix", [torch.ones(3), torch.ones(2, 2, 2), [[1.0, 2.0]]])
def test_matrix_operator_rejects_non_matrices(matrix):
    with pytest.raises(ValueError, match=r"matrix must be a 2D torch\.Tensor"):
        MatrixOperator(matrix)


def test_matrix_operator_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"matrix shape \(3, 4\) does not match out_shape \(3,\) x in_shape \(5,\)"):
        MatrixOperator(torch.ones(3, 4), in_shape=(5,))
    with pytest.raises(ValueError, match=r"matrix shape \(3, 4\) does not match out_shape \(2, 2\) x in_shape \(4,\)"):
        MatrixOperator(torch.ones(3, 4), out_shape=(2, 2))


# --------------------------------------------------------------------------------------------------------------
# CUDA variants (skipped without a GPU)
# --------------------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_adjointness_and_agreement_with_cpu(name):
    op = REGISTRY[name]()
    mismatch = op.adjointness_test(generator=torch.Generator().manual_seed(0), device="cuda")
    assert mismatch < ADJOINTNESS_TOLERANCE
    x = _rand(op.in_shape, 22)
    y_cpu = op.apply(x)
    y_gpu = op.apply(x.cuda())
    assert y_gpu.device.type == "cuda" and y_gpu.dtype == torch.float64
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-9, atol=1e-9 * float(y_cpu.abs().max()))
    w = _rand(op.out_shape, 23)
    b_cpu = op.adjoint(w)
    b_gpu = op.adjoint(w.cuda())
    assert b_gpu.device.type == "cuda"
    torch.testing.assert_close(b_gpu.cpu(), b_cpu, rtol=1e-9, atol=1e-9 * float(b_cpu.abs().max()))


@needs_cuda
@pytest.mark.parametrize("name", NAMES)
def test_cuda_autograd_and_norm(name):
    op = REGISTRY[name]()
    x = _rand(op.in_shape, 24).cuda().requires_grad_(True)
    w = _rand(op.out_shape, 25, low=-1.0).cuda()
    torch.sum(w * op.apply(x)).backward()
    expected = op.adjoint(w)
    assert x.grad.device.type == "cuda"
    assert float((x.grad - expected).abs().max()) <= 1e-12 * max(float(expected.abs().max()), 1e-300)
    cpu_norm = op.norm(generator=_gen(26))
    assert op.norm(generator=_gen(26), device="cuda") == pytest.approx(cpu_norm, rel=1e-9)


@needs_cuda
def test_cuda_float32_projector():
    op = _tiny_projector("tiny_3d")
    xstart, xend = op.layout.endpoints_mm(dtype=torch.float64)
    d = (xend - xstart).abs()
    ties = (d[..., 1] - d[..., 2]).abs() <= 1e-6 * d[..., 1:].amax(dim=-1)  # 45° LORs, see test_sinogram
    x = _rand(op.in_shape, 27)
    y = op.apply(x.float().cuda())
    assert y.dtype == torch.float32 and y.device.type == "cuda"
    y64 = op.apply(x)
    assert float((y.double().cpu() - y64)[~ties].abs().max()) < 1e-4 * float(y64.abs().max())
