"""The DDIM update on a consistent timestep chain (Song et al. 2021, eq. 12), shared by the LegoPET and PET-DDS
samplers.

MONAI 1.6's ``DDIMScheduler.set_timesteps(N)`` lays the N timesteps out as ``linspace(T − 1, 0, N).round()``, but its
``step`` moves the sample to t_prev = t − T // N.  The two disagree (T = 1000, N = 10: the sample is moved from
t = 999 to the noise level of t = 899, and the network is then asked about t = 888), so every step hands the network
a sample whose noise level is not the one it is told, and the chain ends with noise left in x_0.  The samplers of
this package therefore take t_prev from the schedule itself (:attr:`PreviousTimestep.NEXT_IN_SCHEDULE`, the default)
and apply the update below with MONAI's ``alphas_cumprod`` and ``final_alpha_cumprod``.

For one step t → t_prev with ᾱ = ᾱ_t, ᾱ' = ᾱ_{t_prev} (``final_alpha_cumprod`` after the last step)::

    x̂_0     = (x_t − sqrt(1 − ᾱ) ε̂) / sqrt(ᾱ)                         (Tweedie / ε-parameterisation)
    σ       = η sqrt((1 − ᾱ') / (1 − ᾱ)) sqrt(1 − ᾱ / ᾱ')             (η = 0: deterministic DDIM; η = 1: DDPM-like)
    x_prev  = sqrt(ᾱ') x̂_0 + sqrt(1 − ᾱ' − σ²) ε̂ + σ z,   z ~ N(0, I)

Importing runs nothing.
"""

from __future__ import annotations

from enum import StrEnum

import torch

__all__ = ["PreviousTimestep", "ddim_alphas", "ddim_update"]


class PreviousTimestep(StrEnum):
    """How t_prev follows t in a DDIM chain over ``scheduler.timesteps``."""

    NEXT_IN_SCHEDULE = "next_in_schedule"
    """t_prev = the next entry of ``scheduler.timesteps`` (default; consistent with what the network sees next)."""
    DDIM_STEP = "ddim_step"
    """t_prev = t − num_train_timesteps // num_inference_steps, as MONAI's ``DDIMScheduler.step`` (inconsistent with
    its linspace ``timesteps``; kept to reproduce MONAI's loop)."""


def ddim_alphas(
    scheduler: object,
    timesteps: list[int],
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
    alpha_t: torch.Tensor,
    alpha_prev: torch.Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """x_prev = sqrt(ᾱ') x̂_0 + sqrt(1 − ᾱ' − σ²) ε̂ + σ z (module docstring); shapes of ``x0`` and ``eps`` agree.

    ``generator`` (on any device; z is moved to ``x0``'s) is needed only when ``eta > 0``.
    """
    alpha_t = alpha_t.to(dtype=x0.dtype, device=x0.device)
    alpha_prev = alpha_prev.to(dtype=x0.dtype, device=x0.device)
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    sigma = eta * variance.clamp(min=0) ** 0.5
    x_prev = alpha_prev**0.5 * x0 + (1 - alpha_prev - sigma**2).clamp(min=0) ** 0.5 * eps
    if eta > 0:
        if generator is None:
            raise ValueError("ddim_update needs a generator when eta > 0")
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=generator.device)
        x_prev = x_prev + sigma * noise.to(x0.device)
    return x_prev
