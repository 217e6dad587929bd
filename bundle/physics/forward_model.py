"""PET forward model y ~ Poisson(ȳ), ȳ = n ⊙ a ⊙ A(G x) + s, and the Poisson data model used by the reconstructions.

Notation (shapes for sinograms ``(n_planes, n_views, n_radial)``, views on axis −2; images ``(n_z, n_y, n_x)``):

======  =====================  ==========================================================================
symbol  code                   meaning
======  =====================  ==========================================================================
x       ``x``                  activity image, shape ``projector.in_shape``
G       ``resolution``         image-space resolution model (e.g. ``GaussianResolution``)
A       ``projector``          line-integral projector (lengths in mm), image -> sinogram
a       ``attenuation_factors``  a = exp(−A μ) in [0, 1], μ in 1/mm (:func:`attenuation_factors_from_mu_map`)
n       ``normalisation``      detection efficiency per bin (multiplicative, the inverse of the correction factors)
s       ``background``         additive expected randoms + scatter, >= 0
y       ``data``               measured counts, >= 0
======  =====================  ==========================================================================

:class:`PoissonDataModel` holds any non-negative linear operator ``K`` (image -> data) and ``s``; it gives
ȳ = K x + s, the log-likelihood L(x) = Σ_i y_i log ȳ_i − ȳ_i, its gradient Kᵀ(y/ȳ − 1) and the sensitivity Kᵀ1.
:class:`PETForwardModel` builds ``K = diag(n ⊙ a) ∘ A ∘ G`` and splits it into view subsets for OSEM.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bundle.physics.operators import CompositeOperator, ElementwiseMultiplication, LinearOperator

__all__ = [
    "PETForwardModel",
    "PoissonDataModel",
    "attenuation_factors_from_mu_map",
    "select_views",
    "view_subsets",
]

VIEW_AXIS = -2
"""Axis of the views in a sinogram ``(n_planes, n_views, n_radial)``."""


def _check_tensor(
    tensor: object, name: str, *, shape: Sequence[int], non_negative: bool = True, floating: bool = True
) -> torch.Tensor:
    """TypeError/ValueError naming ``name`` unless ``tensor`` is a finite (non-negative) tensor of ``shape``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {tuple(shape)}, got {type(tensor).__name__}")
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}")
    if floating and not torch.is_floating_point(tensor):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite everywhere; found NaN or Inf")
    if non_negative and bool((tensor < 0).any()):
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {float(tensor.min())}")
    return tensor


def _safe_expectation(data: torch.Tensor, expectation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(y > 0, ȳ with 1 where y = 0); ValueError where y > 0 but ȳ <= 0 (the likelihood is −∞ there)."""
    positive = data > 0
    if bool((positive & (expectation <= 0)).any()):
        raise ValueError(
            "the expectation ȳ = K x + s must be > 0 wherever data > 0; found ȳ <= 0 in a bin with counts "
            f"(min ȳ over those bins: {float(expectation[positive].min())})"
        )
    return positive, torch.where(positive, expectation, torch.ones_like(expectation))


def _ratio(data: torch.Tensor, expectation: torch.Tensor) -> torch.Tensor:
    """y / ȳ with 0 where y = 0; ValueError where y > 0 but ȳ <= 0."""
    positive, safe = _safe_expectation(data, expectation)
    return torch.where(positive, data / safe, torch.zeros_like(safe))


@dataclass(frozen=True, eq=False)
class PoissonDataModel:
    """Poisson data model ``y ~ Poisson(ȳ)``, ``ȳ = K x + s``.

    Attributes:
        operator: K, a non-negative :class:`LinearOperator` image ``in_shape`` -> data ``out_shape``.
        background: s, additive expected counts of shape ``operator.out_shape``, finite and >= 0; its dtype and
            device are those of :meth:`sensitivity`.
    """

    operator: LinearOperator
    background: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.operator, LinearOperator):
            raise TypeError(f"operator must be a LinearOperator, got {type(self.operator).__name__}")
        _check_tensor(self.background, "background", shape=self.operator.out_shape)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.operator.in_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.operator.out_shape

    def expectation(self, x: torch.Tensor) -> torch.Tensor:
        """ȳ = K x + s, shape ``out_shape`` (background cast to x's dtype and device)."""
        return self.operator(x) + self.background.to(dtype=x.dtype, device=x.device)

    def _check_data(self, data: object) -> torch.Tensor:
        return _check_tensor(data, "data", shape=self.out_shape, floating=False)

    def ratio(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        """y / ȳ(x), 0 where y = 0 (shape ``out_shape``); ValueError where y > 0 but ȳ <= 0."""
        data = self._check_data(data)
        expectation = self.expectation(x)
        return _ratio(data.to(dtype=expectation.dtype), expectation)

    def log_likelihood(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        """L(x) = Σ_i y_i log ȳ_i − ȳ_i without the constant −Σ log y_i! (0-dim tensor of x's dtype).

        Bins with y_i = 0 contribute −ȳ_i (also when ȳ_i = 0); ValueError where y_i > 0 but ȳ_i <= 0.
        """
        data = self._check_data(data)
        expectation = self.expectation(x)
        data = data.to(dtype=expectation.dtype)
        positive, safe = _safe_expectation(data, expectation)
        return torch.sum(torch.where(positive, data * torch.log(safe), torch.zeros_like(safe))) - expectation.sum()

    def gradient(self, x: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        """∇L(x) = Kᵀ(y/ȳ − 1), shape ``in_shape``."""
        return self.operator.adjoint(self.ratio(x, data) - 1.0)

    def sensitivity(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Kᵀ1, shape ``in_shape``; dtype and device default to those of :attr:`background`."""
        ones = torch.ones(
            self.out_shape,
            dtype=self.background.dtype if dtype is None else dtype,
            device=self.background.device if device is None else device,
        )
        return self.operator.adjoint(ones)


def view_subsets(n_views: int, n_subsets: int) -> list[torch.Tensor]:
    """Interleaved view subsets: subset k holds views k, k + n_subsets, k + 2 n_subsets, … (int64 tensors).

    Every view is in exactly one subset; subset sizes differ by at most one.
    """
    for name, value in (("n_views", n_views), ("n_subsets", n_subsets)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    if not 1 <= n_subsets <= n_views:
        raise ValueError(f"n_subsets must be in [1, n_views={n_views}], got {n_subsets}")
    return [torch.arange(k, int(n_views), int(n_subsets), dtype=torch.long) for k in range(int(n_subsets))]


def _check_view_indices(view_indices: object, n_views: int) -> torch.Tensor:
    if not isinstance(view_indices, torch.Tensor) or view_indices.dtype != torch.long:
        got = view_indices.dtype if isinstance(view_indices, torch.Tensor) else type(view_indices).__name__
        raise TypeError(f"view_indices must be a torch.LongTensor (int64), got {got}")
    if view_indices.ndim != 1 or view_indices.numel() == 0:
        raise ValueError(f"view_indices must be a non-empty 1D tensor, got shape {tuple(view_indices.shape)}")
    if bool(((view_indices < 0) | (view_indices >= n_views)).any()):
        raise ValueError(f"view_indices must lie in [0, {n_views - 1}], got {view_indices.tolist()}")
    if torch.unique(view_indices).numel() != view_indices.numel():
        raise ValueError(f"view_indices must not repeat a view, got {view_indices.tolist()}")
    return view_indices


def select_views(sinogram: torch.Tensor, view_indices: torch.Tensor) -> torch.Tensor:
    """The views ``view_indices`` of a sinogram ``(…, n_views, n_radial)`` -> ``(…, len(view_indices), n_radial)``."""
    if not isinstance(sinogram, torch.Tensor) or sinogram.ndim < 2:
        raise TypeError(f"sinogram must be a torch.Tensor with >= 2 dims (…, n_views, n_radial), got {sinogram!r}")
    view_indices = _check_view_indices(view_indices, sinogram.shape[VIEW_AXIS])
    return sinogram.index_select(VIEW_AXIS, view_indices.to(sinogram.device))


def attenuation_factors_from_mu_map(projector: LinearOperator, mu_map_per_mm: torch.Tensor) -> torch.Tensor:
    """a = exp(−A μ): attenuation factors per sinogram bin, shape ``projector.out_shape``.

    Args:
        projector: A, line integrals in mm (image -> sinogram).
        mu_map_per_mm: μ, linear attenuation coefficients in 1/mm at 511 keV (water/tissue ≈ 0.0096, bone ≈ 0.013),
            shape ``projector.in_shape``, finite and >= 0.
    """
    if not isinstance(projector, LinearOperator):
        raise TypeError(f"projector must be a LinearOperator, got {type(projector).__name__}")
    mu = _check_tensor(mu_map_per_mm, "mu_map_per_mm", shape=projector.in_shape)
    return torch.exp(-projector(mu))


class PETForwardModel:
    """ȳ = n ⊙ a ⊙ A(G x) + s as a :class:`PoissonDataModel` factory (full data or view subsets).

    Args:
        projector: A, image ``in_shape`` -> sinogram ``(n_planes, n_views, n_radial)`` (views on axis −2). For
            :meth:`subset` it must also provide ``view_subset(view_indices) -> LinearOperator`` whose output is
            the sinogram restricted to those views.
        attenuation_factors: a = exp(−A μ) in [0, 1], shape ``projector.out_shape``; ``None`` = no attenuation.
        normalisation: n >= 0 (detection efficiencies), shape ``projector.out_shape``; ``None`` = all ones.
        resolution: G, image -> image operator with ``out_shape == in_shape == projector.in_shape``; ``None`` = none.
        background: s >= 0, shape ``projector.out_shape``; ``None`` = zeros (dtype/device of a or n if given,
            else the default dtype on the CPU).

    Attributes:
        operator: K = diag(n ⊙ a) ∘ A ∘ G (a :class:`CompositeOperator`; factors that are absent are left out).
        background: s.
    """

    def __init__(
        self,
        *,
        projector: LinearOperator,
        attenuation_factors: torch.Tensor | None = None,
        normalisation: torch.Tensor | None = None,
        resolution: LinearOperator | None = None,
        background: torch.Tensor | None = None,
    ) -> None:
        if not isinstance(projector, LinearOperator):
            raise TypeError(f"projector must be a LinearOperator, got {type(projector).__name__}")
        out_shape = projector.out_shape
        if attenuation_factors is not None:
            _check_tensor(attenuation_factors, "attenuation_factors", shape=out_shape)
            if bool((attenuation_factors > 1).any()):
                raise ValueError(
                    "attenuation_factors must be in [0, 1] (a = exp(−A μ) with μ >= 0); its maximum is "
                    f"{float(attenuation_factors.max())}"
                )
        if normalisation is not None:
            _check_tensor(normalisation, "normalisation", shape=out_shape)
        if resolution is not None:
            if not isinstance(resolution, LinearOperator):
                raise TypeError(f"resolution must be a LinearOperator or None, got {type(resolution).__name__}")
            if resolution.in_shape != projector.in_shape or resolution.out_shape != projector.in_shape:
                raise ValueError(
                    f"resolution must map projector.in_shape {projector.in_shape} to itself, got "
                    f"{resolution.in_shape} -> {resolution.out_shape}"
                )
        if background is None:
            like = attenuation_factors if attenuation_factors is not None else normalisation
            background = torch.zeros(out_shape) if like is None else torch.zeros_like(like)
        else:
            _check_tensor(background, "background", shape=out_shape)
        self.projector = projector
        self.attenuation_factors = attenuation_factors
        self.normalisation = normalisation
        self.resolution = resolution
        self.background = background
        self.multiplicative_factors = self._multiplicative(attenuation_factors, normalisation)
        """n ⊙ a (or whichever is given; ``None`` when neither is), shape ``projector.out_shape``."""
        self.operator = self._compose(self.multiplicative_factors, projector)

    @staticmethod
    def _multiplicative(a: torch.Tensor | None, n: torch.Tensor | None) -> torch.Tensor | None:
        if a is None:
            return n
        if n is None:
            return a
        return n * a.to(dtype=n.dtype, device=n.device)

    def _compose(self, factors: torch.Tensor | None, projector: LinearOperator) -> CompositeOperator:
        operators: list[LinearOperator] = []
        if factors is not None:
            operators.append(ElementwiseMultiplication(factors))
        operators.append(projector)
        if self.resolution is not None:
            operators.append(self.resolution)
        return CompositeOperator(operators)

    @property
    def n_views(self) -> int:
        return self.projector.out_shape[VIEW_AXIS]

    def expectation(self, x: torch.Tensor) -> torch.Tensor:
        """ȳ = n ⊙ a ⊙ A(G x) + s for x of shape ``projector.in_shape``."""
        return self.operator(x) + self.background.to(dtype=x.dtype, device=x.device)

    def data_model(self) -> PoissonDataModel:
        """The full-data :class:`PoissonDataModel` (K = :attr:`operator`, s = :attr:`background`)."""
        return PoissonDataModel(operator=self.operator, background=self.background)

    def subset(self, view_indices: torch.Tensor) -> PoissonDataModel:
        """The model of the sinogram restricted to ``view_indices`` (int64, 1D, unique, in [0, n_views)).

        n, a and s are sliced along the view axis −2; A is replaced by ``projector.view_subset(view_indices)``.
        """
        if len(self.projector.out_shape) < 2:
            raise ValueError(
                f"view subsets need a sinogram with a view axis, projector.out_shape is {self.projector.out_shape}"
            )
        view_indices = _check_view_indices(view_indices, self.n_views)
        view_subset = getattr(self.projector, "view_subset", None)
        if not callable(view_subset):
            raise TypeError(f"projector {type(self.projector).__name__} has no view_subset(view_indices) method")
        sub_projector = view_subset(view_indices)
        expected_shape = list(self.projector.out_shape)
        expected_shape[VIEW_AXIS] = view_indices.numel()
        if not isinstance(sub_projector, LinearOperator) or sub_projector.out_shape != tuple(expected_shape):
            raise ValueError(
                f"projector.view_subset must return a LinearOperator with out_shape {tuple(expected_shape)}, got "
                f"{getattr(sub_projector, 'out_shape', type(sub_projector).__name__)}"
            )
        factors = self.multiplicative_factors
        if factors is not None:
            factors = select_views(factors, view_indices)
        return PoissonDataModel(
            operator=self._compose(factors, sub_projector), background=select_views(self.background, view_indices)
        )

    def subsets(self, n_subsets: int) -> list[PoissonDataModel]:
        """Models of the interleaved :func:`view_subsets` (``n_subsets = 1`` -> one model over all views)."""
        return [self.subset(idx) for idx in view_subsets(self.n_views, n_subsets)]
