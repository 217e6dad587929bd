"""Scheduler steps: the only DDIM / DDPM arithmetic of the package (used by :func:`bundle.diffusion.sampler.sample`).

Notation (code ↔ papers; variance-preserving schedule x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε)::

    alpha_t, alpha_prev   ᾱ_t, ᾱ' = ᾱ_{t_prev}      (MONAI ``alphas_cumprod``; ``final_alpha_cumprod`` after the end)
    x0, eps               x̂_0, ε̂                    the network's estimate as clean image and noise
    sample                x_t
    v                     v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x_0   (Salimans & Ho 2022)

Prediction types (:class:`PredictionType`, MONAI's names) → (x̂_0, ε̂), :func:`split_prediction`::

    epsilon        x̂_0 = (x_t − sqrt(1 − ᾱ) ε̂) / sqrt(ᾱ)                    (Tweedie / ε-parameterisation)
    v_prediction   x̂_0 = sqrt(ᾱ) x_t − sqrt(1 − ᾱ) v,   ε̂ = sqrt(1 − ᾱ) x_t + sqrt(ᾱ) v
    sample         ε̂ = (x_t − sqrt(ᾱ) x̂_0) / sqrt(1 − ᾱ)

DDIM (Song et al. 2021, eq. 12), :func:`ddim_update`::

    σ       = η sqrt((1 − ᾱ') / (1 − ᾱ)) sqrt(1 − ᾱ / ᾱ')             (η = 0: deterministic DDIM; η = 1: DDPM-like)
    x_prev  = sqrt(ᾱ') x̂_0 + sqrt(1 − ᾱ' − σ²) ε̂ + σ z,   z ~ N(0, I)

DDPM ancestral (Ho et al. 2020, eqs. 6-7; MONAI ``DDPMScheduler.step`` with its ``variance_type``), :class:`DDPMStep`::

    x_{t−1} = sqrt(ᾱ_{t−1}) β_t / (1 − ᾱ_t) x̂_0 + sqrt(α_t) (1 − ᾱ_{t−1}) / (1 − ᾱ_t) x_t + sqrt(β̃_t) z
                                                                                       (no z at t = 0)

MONAI 1.6's ``DDIMScheduler.set_timesteps(N)`` lays the N timesteps out as ``linspace(T − 1, 0, N).round()``, but its
``step`` moves the sample to t_prev = t − T // N.  The two disagree (T = 1000, N = 10: the sample is moved from
t = 999 to the noise level of t = 899, and the network is then asked about t = 888), so every step hands the network
a sample whose noise level is not the one it is told, and the chain ends with noise left in x_0.  :class:`DDIMStep`
therefore takes t_prev from the schedule itself (:attr:`PreviousTimestep.NEXT_IN_SCHEDULE`, the default) and applies
the update with MONAI's ``alphas_cumprod`` and ``final_alpha_cumprod``.

Importing runs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import torch

from bundle._checks import check_choice

__all__ = [
    "DDIMStep",
    "DDPMStep",
    "PredictionType",
    "PreviousTimestep",
    "ddim_alphas",
    "ddim_update",
    "split_prediction",
]

Alpha = torch.Tensor | float


class PredictionType(StrEnum):
    """What the network outputs (MONAI's ``prediction_type`` names)."""

    EPSILON = "epsilon"
    V_PREDICTION = "v_prediction"
    SAMPLE = "sample"


class PreviousTimestep(StrEnum):
    """How t_prev follows t in a DDIM chain over ``scheduler.timesteps``."""

    NEXT_IN_SCHEDULE = "next_in_schedule"
    """t_prev = the next entry of ``scheduler.timesteps`` (default; consistent with what the network sees next)."""
    DDIM_STEP = "ddim_step"
    """t_prev = t − num_train_timesteps // num_inference_steps, as MONAI's ``DDIMScheduler.step`` (inconsistent with
    its linspace ``timesteps``; kept to reproduce MONAI's loop)."""


def _like(alpha: Alpha, x: torch.Tensor) -> Alpha:
    return alpha.to(dtype=x.dtype, device=x.device) if isinstance(alpha, torch.Tensor) else alpha


def _clamp0(value: Alpha) -> Alpha:
    return value.clamp(min=0) if isinstance(value, torch.Tensor) else max(value, 0.0)


def split_prediction(
    output: torch.Tensor, sample: torch.Tensor, alpha_t: Alpha | None, prediction_type: PredictionType
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x̂_0, ε̂) of the network ``output`` at x_t = ``sample`` (module docstring); shapes of ``output`` and ``sample``.

    ``alpha_t`` = ᾱ_t (a tensor is cast to ``sample``'s dtype and device); ``None`` for a process without a Gaussian
    schedule, where only ``sample`` prediction is defined and ε̂ is ``None``.
    """
    kind = PredictionType(prediction_type)
    if alpha_t is None:
        if kind is not PredictionType.SAMPLE:
            raise ValueError(f"prediction_type must be 'sample' for a process without ᾱ_t, got {kind.value!r}")
        return output, None
    a = _like(alpha_t, sample)
    if kind is PredictionType.EPSILON:
        return (sample - (1 - a) ** 0.5 * output) / a**0.5, output
    if kind is PredictionType.V_PREDICTION:
        return a**0.5 * sample - (1 - a) ** 0.5 * output, (1 - a) ** 0.5 * sample + a**0.5 * output
    return output, (sample - a**0.5 * output) / (1 - a) ** 0.5


def ddim_alphas(
    scheduler: object,
    timesteps: Sequence[int],
    index: int,
    *,
    previous_timestep: PreviousTimestep = PreviousTimestep.NEXT_IN_SCHEDULE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ᾱ_t, ᾱ_prev) for t = ``timesteps[index]`` of a MONAI ``DDIMScheduler`` after ``set_timesteps``.

    ᾱ_prev is ``scheduler.final_alpha_cumprod`` when t_prev < 0 or t is the last entry.
    """
    t = timesteps[index]
    if PreviousTimestep(previous_timestep) is PreviousTimestep.DDIM_STEP:
        prev = t - scheduler.num_train_timesteps // len(timesteps)  # type: ignore[attr-defined]
    else:
        prev = timesteps[index + 1] if index + 1 < len(timesteps) else -1
    alphas = scheduler.alphas_cumprod  # type: ignore[attr-defined]
    return alphas[t], alphas[prev] if prev >= 0 else scheduler.final_alpha_cumprod  # type: ignore[attr-defined]


def ddim_update(
    x0: torch.Tensor,
    eps: torch.Tensor,
    alpha_t: Alpha,
    alpha_prev: Alpha,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x_prev = sqrt(ᾱ') x̂_0 + sqrt(1 − ᾱ' − σ²) ε̂ + σ z (module docstring); shapes of ``x0`` and ``eps`` agree.

    ᾱ as tensors (cast to ``x0``'s dtype and device) or Python floats.  ``generator`` (on any device; z is moved to
    ``x0``'s) is needed only when ``eta > 0``.
    """
    alpha_t, alpha_prev = _like(alpha_t, x0), _like(alpha_prev, x0)
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    sigma = eta * _clamp0(variance) ** 0.5
    x_prev = alpha_prev**0.5 * x0 + _clamp0(1 - alpha_prev - sigma**2) ** 0.5 * eps
    if eta > 0:
        if generator is None:
            raise ValueError("ddim_update needs a generator when eta > 0")
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=generator.device)
        x_prev = x_prev + sigma * noise.to(x0.device)
    return x_prev


class DDIMStep:
    """DDIM step rule over the chain ``timesteps`` of a MONAI ``DDIMScheduler`` (t_prev per ``previous_timestep``).

    ``alpha(index)`` = ᾱ_t of ``timesteps[index]``; ``step(...)`` = :func:`ddim_update` with stochasticity ``eta``.
    """

    def __init__(
        self,
        *,
        scheduler: object,
        timesteps: Sequence[int],
        eta: float = 0.0,
        previous_timestep: PreviousTimestep | str = PreviousTimestep.NEXT_IN_SCHEDULE,
    ) -> None:
        self.scheduler = scheduler
        self.timesteps = list(timesteps)
        self.eta = eta
        self.previous_timestep = check_choice(previous_timestep, PreviousTimestep, "previous_timestep")

    def alpha(self, index: int) -> torch.Tensor:
        return ddim_alphas(self.scheduler, self.timesteps, index, previous_timestep=self.previous_timestep)[0]

    def step(
        self, *, x0: torch.Tensor, eps: torch.Tensor | None, sample: torch.Tensor, index: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        alpha_t, alpha_prev = ddim_alphas(
            self.scheduler, self.timesteps, index, previous_timestep=self.previous_timestep
        )
        return ddim_update(x0, eps, alpha_t, alpha_prev, eta=self.eta, generator=generator)  # type: ignore[arg-type]


class DDPMStep:
    """DDPM ancestral step t → t − 1 with a MONAI ``DDPMScheduler``'s β, ᾱ and ``variance_type`` (``fixed_small``:
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) β_t clamped at 1e-20; ``fixed_large``: β_t); the same numbers as its ``step``."""

    def __init__(self, *, scheduler: object, timesteps: Sequence[int]) -> None:
        variance_type = getattr(scheduler, "variance_type", "fixed_small")
        if variance_type not in ("fixed_small", "fixed_large"):
            raise ValueError(f"scheduler.variance_type must be 'fixed_small' or 'fixed_large', got {variance_type!r}")
        self.scheduler = scheduler
        self.timesteps = list(timesteps)

    def alpha(self, index: int) -> torch.Tensor:
        return self.scheduler.alphas_cumprod[self.timesteps[index]]  # type: ignore[attr-defined]

    def step(
        self, *, x0: torch.Tensor, eps: torch.Tensor | None, sample: torch.Tensor, index: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        s, t = self.scheduler, self.timesteps[index]
        alpha_t = s.alphas_cumprod[t]  # type: ignore[attr-defined]
        alpha_prev = s.alphas_cumprod[t - 1] if t > 0 else s.one  # type: ignore[attr-defined]
        x0_coeff = (alpha_prev**0.5 * s.betas[t]) / (1 - alpha_t)  # type: ignore[attr-defined]
        x_t_coeff = s.alphas[t] ** 0.5 * (1 - alpha_prev) / (1 - alpha_t)  # type: ignore[attr-defined]
        x_prev = x0_coeff * x0 + x_t_coeff * sample
        if t > 0:
            noise = torch.randn(
                sample.size(), dtype=sample.dtype, layout=sample.layout, generator=generator, device=sample.device
            )
            if s.variance_type == "fixed_large":  # type: ignore[attr-defined]
                variance = s.betas[t]  # type: ignore[attr-defined]
            else:
                variance = torch.clamp((1 - alpha_prev) / (1 - alpha_t) * s.betas[t], min=1e-20)  # type: ignore
            x_prev = x_prev + variance**0.5 * noise
        return x_prev
