"""The one reverse-process loop of the package; LegoPET, PET-DDS-δ, uPETe and the restart diagnostic sample with it.

Every part that differs between the methods is injected (composition, no type dispatch)::

    x = x_start                                           start sample at the chain's first step (x_T, a noised
    for i, t in enumerate(timesteps):                     reference, uPETe's dose-matched latent, …)
        out        = model(x, t)                          raw network output (guidance wraps the model call)
        x̂_0, ε̂     = split_prediction(out, x, ᾱ_t, prediction_type)     (ᾱ_t = step_rule.alpha(i))
        x̂_0        = x0_transform(x̂_0)                    clip to a range, clamp ≥ 0, or identity
        x̂_0        = consistency(x̂_0, i)                  data consistency (PET-DDS-δ's Poisson steps), or identity
        callbacks(i, t, x, x̂_0)                           progress, intermediate images
        x          = step_rule.step(x̂_0, ε̂, x, i)         DDIM / DDPM / latent re-degradation to the next step
    return x, x̂_0

Notation: x ↔ x_t (the current sample), ``x0`` ↔ x̂_0, ``eps`` ↔ ε̂, ``timesteps`` ↔ the chain t_N > … > t_1 the
network is asked about (its first entry is the start step), i ↔ the position in that chain.  The arithmetic of the
prediction types and step rules lives in :mod:`bundle.diffusion.ddim`.  Importing runs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from bundle.progress import progress_bar

from .ddim import PredictionType, split_prediction

__all__ = ["Callback", "StepRule", "classifier_free_guidance", "sample"]

Callback = Callable[[int, int, torch.Tensor, torch.Tensor], object]
"""``callback(i, t, x_t, x0_hat)`` after data consistency, before the step."""


class StepRule(Protocol):
    """ᾱ of the i-th step (``None`` without a Gaussian schedule) and the move x_t → x_{t_prev}."""

    def alpha(self, index: int) -> torch.Tensor | float | None: ...

    def step(
        self, *, x0: torch.Tensor, eps: torch.Tensor | None, sample: torch.Tensor, index: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor: ...


def classifier_free_guidance(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """(1 + λ) out_C − λ out_∅ (Ho & Salimans 2022, with λ = ``scale`` ≥ 0 as LegoPET's λ2)."""
    return (1 + scale) * conditional - scale * unconditional


def sample(
    x: torch.Tensor,
    timesteps: Sequence[int],
    *,
    model: Callable[[torch.Tensor, int], torch.Tensor],
    step_rule: StepRule,
    prediction_type: PredictionType | str = PredictionType.EPSILON,
    x0_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    consistency: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    callbacks: Sequence[Callback] = (),
    generator: torch.Generator | None = None,
    progress: bool = True,
    desc: str = "sampling",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the chain from ``x`` (the sample at ``timesteps[0]``); returns (x after the last step, the last x̂_0).

    A progress bar ``desc`` over the steps shows while it runs (:func:`bundle.progress.progress_bar`: standard error a
    terminal or ``BUNDLE_PROGRESS=on``; ``progress=False`` or ``BUNDLE_PROGRESS=off`` hide it).
    """
    x0 = x
    for index, t in enumerate(progress_bar(timesteps, desc=desc, unit="step", progress=progress, leave=False)):
        x0, eps = split_prediction(model(x, t), x, step_rule.alpha(index), prediction_type)
        if x0_transform is not None:
            x0 = x0_transform(x0)
        if consistency is not None:
            x0 = consistency(x0, index)
        for callback in callbacks:
            callback(index, t, x, x0)
        x = step_rule.step(x0=x0, eps=eps, sample=x, index=index, generator=generator)
    return x, x0
