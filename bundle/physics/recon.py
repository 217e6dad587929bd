"""Reference reconstructions: MLEM, OSEM and MAP-EM (one-step-late, Green 1990) on Poisson data models.

Each reconstruction takes one :class:`~bundle.physics.forward_model.PoissonDataModel` per subset
(ȳ_k = K_k x + s_k, K_k >= 0) and the matching measured counts y_k.  With sensitivities S_k = K_kᵀ1
(computed once, before the first iteration) a sub-iteration is

    OSEM / MLEM:  x ← x ⊙ K_kᵀ(y_k / ȳ_k(x)) / S_k
    MAP-EM (OSL): x ← x ⊙ K_kᵀ(y_k / ȳ_k(x)) / (S_k + (β / n_sub) ∇R(x))

and one iteration is one pass over all n_sub subsets in the given order (MLEM = OSEM with one subset).  The
prior's weight is split evenly over the subsets, so one pass applies β ∇R once.

Conventions:

- ``y / ȳ`` is 0 where y = 0; a bin with y > 0 and ȳ <= 0 raises a ``ValueError``.
- Voxels with zero total sensitivity Σ_k S_k (outside the field of view) are set to 0 and stay 0; a voxel that
  only subset k does not see (S_k = 0 < Σ S) is left unchanged in that sub-iteration.
- MAP-EM: if S_k + (β/n_sub) ∇R(x) <= 0 in a voxel whose numerator x ⊙ K_kᵀ(y/ȳ) is > 0, the OSL update is
  undefined (it would turn the image negative or infinite): a ``ValueError`` says β is too large — nothing is
  clipped.  Where the numerator is 0 the voxel becomes 0.
- The default initial image is ones (positive everywhere); a voxel that starts at 0 stays 0.
- ``callback(iteration, image)`` is called after every full iteration (``iteration`` = 1, 2, …) with a copy of
  the current image, e.g. for progress bars or monitoring; nothing is logged or printed here.
- Everything runs under ``torch.no_grad()``; the image lives in the dtype and on the device of ``initial`` if
  given, else of the data (float data) or of the first model's background (integer data).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from bundle.physics.forward_model import PoissonDataModel, _ratio

__all__ = ["SmoothPrior", "map_em", "mlem", "osem"]

Callback = Callable[[int, torch.Tensor], object]


class SmoothPrior(Protocol):
    """Anything with an analytic gradient ``∇R(x)`` of the image's shape, e.g. ``RelativeDifferencePrior``."""

    def gradient(self, x: torch.Tensor) -> torch.Tensor: ...


def _check_num_iterations(num_iterations: object) -> int:
    if isinstance(num_iterations, bool) or not isinstance(num_iterations, numbers.Integral):
        raise TypeError(f"num_iterations must be an int >= 1, got {num_iterations!r}")
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    return int(num_iterations)


def _check_problem(models: object, data_subsets: object) -> tuple[list[PoissonDataModel], list[torch.Tensor]]:
    if isinstance(models, PoissonDataModel) or not isinstance(models, Sequence):
        raise TypeError(f"models must be a sequence of PoissonDataModel (one per subset), got {type(models).__name__}")
    if isinstance(data_subsets, torch.Tensor) or not isinstance(data_subsets, Sequence):
        raise TypeError(
            f"data_subsets must be a sequence of tensors (one per subset), got {type(data_subsets).__name__}"
        )
    models, data_subsets = list(models), list(data_subsets)
    if len(models) < 1:
        raise ValueError("models must hold at least one PoissonDataModel, got an empty sequence")
    if len(data_subsets) != len(models):
        raise ValueError(f"data_subsets must hold one tensor per model ({len(models)}), got {len(data_subsets)}")
    for k, model in enumerate(models):
        if not isinstance(model, PoissonDataModel):
            raise TypeError(f"models[{k}] must be a PoissonDataModel, got {type(model).__name__}")
        if model.in_shape != models[0].in_shape:
            raise ValueError(
                f"models[{k}].in_shape {model.in_shape} must equal models[0].in_shape {models[0].in_shape}"
            )
    for k, (model, data) in enumerate(zip(models, data_subsets, strict=True)):
        name = f"data_subsets[{k}]"
        if not isinstance(data, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape {model.out_shape}, got {type(data).__name__}")
        if tuple(data.shape) != model.out_shape:
            raise ValueError(
                f"{name} must have shape {model.out_shape} (models[{k}].out_shape), got {tuple(data.shape)}"
            )
        if data.dtype == torch.bool or data.is_complex():
            raise TypeError(f"{name} must be a real tensor of counts, got dtype {data.dtype}")
        if not bool(torch.isfinite(data).all()):
            raise ValueError(f"{name} must be finite everywhere; found NaN or Inf")
        if bool((data < 0).any()):
            raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {float(data.min())}")
    return models, data_subsets


def _initial_image(
    initial: torch.Tensor | None, models: list[PoissonDataModel], data_subsets: list[torch.Tensor]
) -> torch.Tensor:
    shape = models[0].in_shape
    if initial is None:
        data = data_subsets[0]
        dtype = data.dtype if torch.is_floating_point(data) else models[0].background.dtype
        return torch.ones(shape, dtype=dtype, device=data.device)
    if not isinstance(initial, torch.Tensor):
        raise TypeError(f"initial must be a torch.Tensor of shape {shape} or None, got {type(initial).__name__}")
    if tuple(initial.shape) != shape:
        raise ValueError(f"initial must have shape {shape} (models' in_shape), got {tuple(initial.shape)}")
    if not torch.is_floating_point(initial):
        raise TypeError(f"initial must be a floating-point tensor, got dtype {initial.dtype}")
    if not bool(torch.isfinite(initial).all()):
        raise ValueError("initial must be finite everywhere; found NaN or Inf")
    if bool((initial < 0).any()):
        raise ValueError(f"initial must be >= 0 everywhere; its minimum is {float(initial.min())}")
    return initial.detach().clone()


def _check_callback(callback: object) -> None:
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable(iteration, image) or None, got {type(callback).__name__}")


def _em(
    models: object,
    data_subsets: object,
    *,
    num_iterations: object,
    initial: torch.Tensor | None,
    callback: Callback | None,
    prior: SmoothPrior | None,
    beta: float,
) -> torch.Tensor:
    num_iterations = _check_num_iterations(num_iterations)
    checked_models, checked_data = _check_problem(models, data_subsets)
    _check_callback(callback)
    x = _initial_image(initial, checked_models, checked_data)
    dtype, device = x.dtype, x.device
    data = [y.to(dtype=dtype, device=device) for y in checked_data]
    sensitivities = []
    for k, model in enumerate(checked_models):
        s_k = model.sensitivity(dtype=dtype, device=device)
        if not bool(torch.isfinite(s_k).all()) or bool((s_k < 0).any()):
            raise ValueError(
                f"models[{k}] has a sensitivity K_kᵀ1 with negative or non-finite values; EM needs a non-negative "
                "system matrix"
            )
        sensitivities.append(s_k)
    in_fov = torch.stack(sensitivities).sum(dim=0) > 0
    x = torch.where(in_fov, x, torch.zeros_like(x))
    n_sub = len(checked_models)
    use_prior = prior is not None and beta > 0.0
    for iteration in range(1, num_iterations + 1):
        for k, (model, y, s_k) in enumerate(zip(checked_models, data, sensitivities, strict=True)):
            numerator = x * model.operator.adjoint(_ratio(y, model.expectation(x)))
            denominator = s_k
            if use_prior:
                denominator = s_k + (beta / n_sub) * prior.gradient(x)
            seen = s_k > 0
            if use_prior:
                bad = seen & (denominator <= 0) & (numerator > 0)
                if bool(bad.any()):
                    raise ValueError(
                        f"beta={beta} is too large: the one-step-late denominator S_k + (beta/n_sub)·∇R(x) is <= 0 in "
                        f"{int(bad.sum())} voxel(s) with a positive numerator (iteration {iteration}, subset {k}); "
                        "lower beta"
                    )
            update = seen & (denominator > 0)
            safe = torch.where(update, denominator, torch.ones_like(denominator))
            x = torch.where(update, numerator / safe, torch.where(seen, torch.zeros_like(x), x))
        if callback is not None:
            callback(iteration, x.clone())
    return x


@torch.no_grad()
def mlem(
    model: PoissonDataModel,
    data: torch.Tensor,
    *,
    num_iterations: int,
    initial: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """MLEM: x ← x ⊙ Kᵀ(y / (K x + s)) / Kᵀ1, ``num_iterations`` times.

    Args:
        model: ȳ = K x + s.
        data: y, shape ``model.out_shape``, finite and >= 0.
        num_iterations: >= 1.
        initial: starting image (shape ``model.in_shape``, >= 0); default ones.
        callback: ``callback(iteration, image)`` after every iteration.

    Returns:
        The image after ``num_iterations`` iterations, shape ``model.in_shape``.
    """
    if not isinstance(model, PoissonDataModel):
        raise TypeError(f"model must be a PoissonDataModel, got {type(model).__name__}")
    return _em([model], [data], num_iterations=num_iterations, initial=initial, callback=callback, prior=None, beta=0.0)


@torch.no_grad()
def osem(
    models: Sequence[PoissonDataModel],
    data_subsets: Sequence[torch.Tensor],
    *,
    num_iterations: int,
    initial: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """OSEM: for k = 0 … n_sub−1: x ← x ⊙ K_kᵀ(y_k / ȳ_k) / K_kᵀ1; one iteration = one pass over all subsets.

    Args:
        models: one :class:`PoissonDataModel` per subset (e.g. ``PETForwardModel.subsets(n)``), same ``in_shape``.
        data_subsets: y_k matching ``models[k].out_shape`` (e.g. ``select_views(y, view_subsets(...)[k])``).
        num_iterations: >= 1 full passes.
        initial: starting image (>= 0); default ones.
        callback: ``callback(iteration, image)`` after every full pass.

    Returns:
        The image after ``num_iterations`` passes, shape ``models[0].in_shape``.
    """
    return _em(
        models, data_subsets, num_iterations=num_iterations, initial=initial, callback=callback, prior=None, beta=0.0
    )


@torch.no_grad()
def map_em(
    models: Sequence[PoissonDataModel],
    data_subsets: Sequence[torch.Tensor],
    *,
    prior: SmoothPrior,
    beta: float,
    num_iterations: int,
    initial: torch.Tensor | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """MAP-EM with Green's one-step-late update for max_x Σ_k L_k(x) − β R(x):

        x ← x ⊙ K_kᵀ(y_k / ȳ_k(x)) / (K_kᵀ1 + (β / n_sub) ∇R(x)),   k = 0 … n_sub − 1 per iteration.

    β = 0 is exactly OSEM.  Raises a ``ValueError`` when β is too large for the OSL update (see module docstring).

    Args:
        models, data_subsets, num_iterations, initial, callback: as :func:`osem`.
        prior: an object with ``gradient(x) -> ∇R(x)`` (e.g. ``RelativeDifferencePrior``).
        beta: β >= 0, finite.
    """
    if not callable(getattr(prior, "gradient", None)):
        raise TypeError(
            f"prior must have a gradient(x) method (e.g. RelativeDifferencePrior), got {type(prior).__name__}"
        )
    if isinstance(beta, bool) or not isinstance(beta, numbers.Real):
        raise TypeError(f"beta must be a number >= 0, got {beta!r}")
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be finite and >= 0, got {beta!r}")
    return _em(
        models,
        data_subsets,
        num_iterations=num_iterations,
        initial=initial,
        callback=callback,
        prior=prior,
        beta=float(beta),
    )
