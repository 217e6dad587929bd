"""bundle.diffusion.ddim: the consistent timestep chain and the DDIM update against MONAI's DDPM posterior."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from bundle.diffusion.ddim import PreviousTimestep, ddim_alphas, ddim_update


def test_previous_timestep_follows_the_schedule_or_monai_stride():
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    timesteps = [int(t) for t in scheduler.timesteps]
    assert timesteps[:2] == [999, 888]  # MONAI 1.6: linspace(T - 1, 0, N).round()
    a_t, a_prev = ddim_alphas(scheduler, timesteps, 0)
    assert a_t == scheduler.alphas_cumprod[999] and a_prev == scheduler.alphas_cumprod[888]
    _, a_monai = ddim_alphas(scheduler, timesteps, 0, previous_timestep=PreviousTimestep.DDIM_STEP)
    assert a_monai == scheduler.alphas_cumprod[899]  # t - T // N, what DDIMScheduler.step uses
    assert ddim_alphas(scheduler, timesteps, 9)[1] == scheduler.final_alpha_cumprod == 1.0


def test_eta_one_between_neighbours_has_the_ddpm_posterior_variance():
    """η = 1 from t to t − 1: σ² = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) β_t, MONAI DDPMScheduler's 'fixed_small' variance."""
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    t = 500
    a_t, a_prev = ddpm.alphas_cumprod[t], ddpm.alphas_cumprod[t - 1]
    zeros = torch.zeros(20000, dtype=torch.float64)
    x_prev = ddim_update(zeros, zeros, a_t, a_prev, eta=1.0, generator=torch.Generator().manual_seed(0))
    assert float(x_prev.var()) == pytest.approx(float(ddpm._get_variance(t)), rel=0.03)


def test_eta_zero_is_deterministic_and_eta_needs_a_generator():
    x0, eps = torch.ones(3), torch.full((3,), 2.0)
    a_t, a_prev = torch.tensor(0.25), torch.tensor(0.64)
    torch.testing.assert_close(ddim_update(x0, eps, a_t, a_prev), 0.8 * x0 + 0.6 * eps)
    with pytest.raises(ValueError, match="needs a generator when eta > 0"):
        ddim_update(x0, eps, a_t, a_prev, eta=0.5)
