"""bundle.diffusion.ddim: the consistent timestep chain, the DDIM update and the DDPM step against MONAI's DDPM."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from bundle.diffusion.ddim import DDPMStep, PredictionType, PreviousTimestep, ddim_alphas, ddim_update, split_prediction


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


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step_with_split_prediction_is_monais_ddpm_step(prediction, clip):
    """MONAI's DDPMScheduler.step (its own x̂_0 formula per prediction type, clip, posterior mean, variance) is the
    reference: split_prediction + clip + DDPMStep give the same x_{t−1} from the same generator state."""
    scheduler = DDPMScheduler(num_train_timesteps=50, prediction_type=prediction, clip_sample=clip)
    scheduler.set_timesteps(50)
    timesteps = [int(t) for t in scheduler.timesteps]
    rule = DDPMStep(scheduler=scheduler, timesteps=timesteps)
    gen = torch.Generator().manual_seed(0)
    x, out = torch.randn(2, 1, 4, 4, generator=gen) * 2, torch.randn(2, 1, 4, 4, generator=gen) * 2
    for index in (0, 25, len(timesteps) - 1):
        x0, eps = split_prediction(out, x, rule.alpha(index), PredictionType(prediction))
        if clip:
            x0 = x0.clamp(*scheduler.clip_sample_values)
        ours = rule.step(x0=x0, eps=eps, sample=x, index=index, generator=torch.Generator().manual_seed(index))
        reference, _ = scheduler.step(out, timesteps[index], x, generator=torch.Generator().manual_seed(index))
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
