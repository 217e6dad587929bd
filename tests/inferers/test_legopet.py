"""LegoPETInferer: classifier-free guidance formula, λ2 = 0, seeds, crop, chunking, argument checks, and sampling
with an exact Gaussian denoiser against the known posterior (DDPM) and the predicted DDIM contraction."""

from __future__ import annotations

import itertools

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from bundle.inferers import LegoPETInferer
from bundle.inferers.legopet import default_crop
from bundle.networks import LegoPETCondition, LegoPETDenoiser, PnPNet

LAYOUT = {
    "channels": (8, 16, 16, 16),
    "num_res_blocks": 1,
    "attention_levels": (False, False, False, True),
    "norm_num_groups": 8,
    "num_head_channels": 8,
}


@pytest.fixture(scope="module")
def nets() -> tuple[LegoPETDenoiser, PnPNet]:
    torch.manual_seed(0)
    denoiser, pnpnet = LegoPETDenoiser(**LAYOUT).eval(), PnPNet(**LAYOUT).eval()
    g = torch.Generator().manual_seed(1)
    conv = denoiser.unet.out[2].conv
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)
    return denoiser, pnpnet


def _sinogram(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) + 0.5


def _ddim() -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000)


class ToyNetwork:
    """ε = 0.5 x + 2 s + mean(b_m) (a hand-checkable stand-in for the denoiser)."""

    def __call__(self, x, t, s, *, down_residuals=None, mid_residual=None):
        out = 0.5 * x + 2.0 * s
        if mid_residual is not None:
            out = out + mid_residual.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)
        return out


def test_guidance_formula_by_hand(nets):
    _, pnpnet = nets
    s = _sinogram()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    inferer = LegoPETInferer(scheduler=_ddim(), guidance_scale=1.5, pnpnet=pnpnet)
    condition = inferer.condition(s)
    b_m = condition.mid_residual.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)
    eps_c = 0.5 * x + 2.0 * s + b_m
    eps_u = 0.5 * x  # ∅: s = 0, b_m = 0
    expected = 2.5 * eps_c - 1.5 * eps_u
    torch.testing.assert_close(inferer.guided_noise(ToyNetwork(), x, 10, condition), expected)


def test_guidance_with_the_denoiser_and_chunks(nets):
    denoiser, pnpnet = nets
    s = _sinogram(3)
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    t = torch.full((3,), 10, dtype=torch.long)
    inferer = LegoPETInferer(scheduler=_ddim(), guidance_scale=2.0, pnpnet=pnpnet, chunk_size=2)
    condition = inferer.condition(s)
    with torch.no_grad():
        eps_c = denoiser(x, t, s, down_residuals=condition.down_residuals, mid_residual=condition.mid_residual)
        eps_u = denoiser(x, t, torch.zeros_like(s))  # ADD: zero features = no features
    torch.testing.assert_close(inferer.guided_noise(denoiser, x, 10, condition), 3.0 * eps_c - 2.0 * eps_u)


def test_lambda_zero_is_the_conditional_prediction_exactly(nets):
    denoiser, pnpnet = nets
    s = _sinogram()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    inferer = LegoPETInferer(scheduler=_ddim(), guidance_scale=0.0, pnpnet=pnpnet)
    condition = inferer.condition(s)
    with torch.no_grad():
        eps_c = denoiser(
            x, torch.full((2,), 7), s, down_residuals=condition.down_residuals, mid_residual=condition.mid_residual
        )
    assert torch.equal(inferer.guided_noise(denoiser, x, 7, condition), eps_c)
    cdpm = LegoPETInferer(scheduler=_ddim(), guidance_scale=0.0)
    assert cdpm.condition(s).down_residuals is None
    with torch.no_grad():
        assert torch.equal(cdpm.guided_noise(denoiser, x, 7, LegoPETCondition(s)), denoiser(x, torch.full((2,), 7), s))


def test_seeds_and_crop(nets):
    denoiser, pnpnet = nets
    s = _sinogram()
    inferer = LegoPETInferer(scheduler=_ddim(), num_inference_steps=3, pnpnet=pnpnet, eta=1.0)
    first = inferer(s, denoiser, generator=torch.Generator().manual_seed(5))
    again = inferer(s, denoiser, generator=torch.Generator().manual_seed(5))
    other = inferer(s, denoiser, generator=torch.Generator().manual_seed(6))
    assert first.shape == (2, 1, 32, 32) and torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    cropped = LegoPETInferer(scheduler=_ddim(), num_inference_steps=3, pnpnet=pnpnet, eta=1.0, crop=(2, 3, 20, 24))
    out = cropped(s, denoiser, generator=torch.Generator().manual_seed(5))
    assert out.shape == (2, 1, 20, 24)
    assert torch.equal(out, first[..., 2:22, 3:27])


def test_ddpm_full_chain_is_seeded(nets):
    denoiser, _ = nets
    s = _sinogram(1)
    inferer = LegoPETInferer(scheduler=DDPMScheduler(num_train_timesteps=4), guidance_scale=1.0)
    a = inferer(s, denoiser, generator=torch.Generator().manual_seed(0))
    b = inferer(s, denoiser)  # default generator: seed 0
    c = inferer(s, denoiser, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_argument_errors(nets):
    denoiser, _ = nets
    with pytest.raises(ValueError, match=r"guidance_scale \(λ2\) must be a finite number >= 0, got -0.5"):
        LegoPETInferer(scheduler=_ddim(), guidance_scale=-0.5)
    with pytest.raises(TypeError, match=r"crop must be None or \(top, left, height, width\) ints"):
        LegoPETInferer(scheduler=_ddim(), crop=(0, 0, 10))
    with pytest.raises(ValueError, match=r"crop must have top, left >= 0 and height, width >= 1, got \(-1, 0, 4, 4\)"):
        LegoPETInferer(scheduler=_ddim(), crop=(-1, 0, 4, 4))
    with pytest.raises(ValueError, match="a DDPMScheduler samples every step: num_inference_steps must be None or 10"):
        LegoPETInferer(scheduler=DDPMScheduler(num_train_timesteps=10), num_inference_steps=5)
    with pytest.raises(ValueError, match="eta applies to a DDIMScheduler only"):
        LegoPETInferer(scheduler=DDPMScheduler(num_train_timesteps=10), eta=0.5)
    with pytest.raises(TypeError, match="scheduler must be a MONAI DDPMScheduler or DDIMScheduler, got str"):
        LegoPETInferer(scheduler="ddpm")
    with pytest.raises(TypeError, match="pnpnet must be a PnPNet or None, got LegoPETDenoiser"):
        LegoPETInferer(scheduler=_ddim(), pnpnet=denoiser)
    with pytest.raises(ValueError, match=r"previous_timestep must be one of \['next_in_schedule', 'ddim_step'\]"):
        LegoPETInferer(scheduler=_ddim(), previous_timestep="t-1")
    inferer = LegoPETInferer(scheduler=_ddim(), num_inference_steps=2, crop=(0, 0, 40, 10))
    with pytest.raises(ValueError, match=r"inputs \(sinogram\) must have shape \(B, 1, H, W\), got \(2, 32, 32\)"):
        inferer(_sinogram()[:, 0], denoiser)
    with pytest.raises(ValueError, match=r"crop \(top=0, left=0, height=40, width=10\) does not fit the image grid"):
        inferer(_sinogram(), denoiser)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        inferer(_sinogram(), denoiser, generator=3)
    with pytest.raises(ValueError, match="network output must be a tensor of the input's shape"):
        LegoPETInferer(scheduler=_ddim(), num_inference_steps=1)(_sinogram(), lambda x, t, s: x[:, :, :4])


class GaussianPosteriorNetwork:
    """The exact ε-predictor for x_0 ~ N(s, σ²) per pixel, given the condition s (an independent truth).

    With x_t = a x_0 + b ε (a = sqrt(ᾱ_t), b = sqrt(1 − ᾱ_t)), E[ε | x_t, s] = b (x_t − a s) / (a² σ² + b²).
    A correct sampler with this network draws x_0 ~ N(s, σ²).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, sigma: float) -> None:
        self.alphas_cumprod, self.sigma = alphas_cumprod.double(), sigma

    def __call__(self, x, t, s, *, down_residuals=None, mid_residual=None):
        abar = self.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1).to(x.dtype)
        a, b = abar.sqrt(), (1 - abar).sqrt()
        return b * (x - a * s) / (a**2 * self.sigma**2 + b**2)


def _gaussian_condition(sigma: float) -> tuple[torch.Tensor, tuple[float, float]]:
    means = (0.2, 0.5)
    s = torch.tensor(means, dtype=torch.float64).reshape(2, 1, 1, 1).expand(2, 1, 64, 64).contiguous()
    return s, means


def test_ddpm_with_the_exact_denoiser_draws_the_known_posterior():
    """Ancestral DDPM over all T = 1000 steps turns x_T into samples of N(s, σ²) when ε_θ is the analytic posterior
    mean: per-condition mean s and std σ within sampling error (4096 pixels per condition)."""
    scheduler, sigma = DDPMScheduler(num_train_timesteps=1000), 0.1
    s, means = _gaussian_condition(sigma)
    inferer = LegoPETInferer(scheduler=scheduler, guidance_scale=0.0)
    network = GaussianPosteriorNetwork(scheduler.alphas_cumprod, sigma)
    x0 = inferer(s, network, generator=torch.Generator().manual_seed(3))
    for i, mean in enumerate(means):
        sample = x0[i].flatten()
        assert float(sample.mean()) == pytest.approx(mean, abs=4 * sigma / 64)
        assert float(sample.std()) == pytest.approx(sigma, rel=0.05)


@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_ddim_with_the_exact_denoiser_contracts_the_spread_as_predicted(steps):
    """Deterministic DDIM (η = 0) with the exact Gaussian denoiser is a linear map of y = x − a s: one step from
    t to t' multiplies y by (a a' σ² + b b') / (a² σ² + b²) <= sqrt(v'/v) (Cauchy-Schwarz), so k coarse steps draw
    samples with mean s but a spread below σ; the product of the per-step factors predicts it, and it tends to σ as
    k → T.  (The final step to ᾱ = 1 dominates for small σ.)"""
    scheduler, sigma = _ddim(), 0.1
    s, means = _gaussian_condition(sigma)
    inferer = LegoPETInferer(scheduler=scheduler, num_inference_steps=steps, guidance_scale=0.0)
    network = GaussianPosteriorNetwork(scheduler.alphas_cumprod, sigma)
    x0 = inferer(s, network, generator=torch.Generator().manual_seed(3))
    abar = scheduler.alphas_cumprod.double()
    times = [int(t) for t in scheduler.timesteps]
    chain = [abar[t] for t in times] + [torch.tensor(1.0, dtype=torch.float64)]  # set_alpha_to_one: x_0 at ᾱ = 1
    factor = 1.0
    for now, nxt in itertools.pairwise(chain):
        a, b, a2, b2 = now.sqrt(), (1 - now).sqrt(), nxt.sqrt(), (1 - nxt).sqrt()
        factor *= float((a * a2 * sigma**2 + b * b2) / (a**2 * sigma**2 + b**2))
    for i, mean in enumerate(means):
        sample = x0[i].flatten()
        assert float(sample.mean()) == pytest.approx(mean, abs=4 * sigma / 64)
        assert float(sample.std()) == pytest.approx(factor, rel=0.05)  # x_T ~ N(0, 1): std(y_T) = 1
    if steps == 1000:
        assert factor == pytest.approx(sigma, rel=0.03)
    else:
        assert factor < 0.95 * sigma


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_mode_reproduces_monai_scheduler_step_loop(nets, eta):
    """previous_timestep='ddim_step' is MONAI's own DDIMScheduler.step loop (reference implementation), η included."""
    denoiser, pnpnet = nets
    s = _sinogram(2)
    inferer = LegoPETInferer(scheduler=_ddim(), num_inference_steps=7, guidance_scale=1.0, pnpnet=pnpnet, eta=eta,
                             previous_timestep="ddim_step")
    ours = inferer(s, denoiser, generator=torch.Generator().manual_seed(5))
    scheduler, generator = _ddim(), torch.Generator().manual_seed(5)
    condition = inferer.condition(s)
    x = torch.randn(s.shape, generator=generator)
    scheduler.set_timesteps(7)
    for t in scheduler.timesteps.tolist():
        x, _ = scheduler.step(inferer.guided_noise(denoiser, x, int(t), condition), int(t), x, eta=eta,
                              generator=generator)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-6)
    default = LegoPETInferer(scheduler=_ddim(), num_inference_steps=7, guidance_scale=1.0, pnpnet=pnpnet, eta=eta)
    assert not torch.allclose(default(s, denoiser, generator=torch.Generator().manual_seed(5)), ours, atol=1e-4)


class GaussianPosteriorOutput(GaussianPosteriorNetwork):
    """E[x_0 | x_t, s] (``sample``) or E[v | x_t, s] (``v_prediction``) of the same Gaussian, in closed form:
    E[x_0 | x_t, s] = s + a σ² (x_t − a s) / (a² σ² + b²) and v = a ε − b x_0, so E[v | x_t, s] = a E[ε] − b E[x_0]."""

    def __init__(self, alphas_cumprod: torch.Tensor, sigma: float, kind: str) -> None:
        super().__init__(alphas_cumprod, sigma)
        self.kind = kind

    def __call__(self, x, t, s, *, down_residuals=None, mid_residual=None):
        abar = self.alphas_cumprod[t.long()].reshape(-1, 1, 1, 1).to(x.dtype)
        a, b = abar.sqrt(), (1 - abar).sqrt()
        x0 = s + a * self.sigma**2 * (x - a * s) / (a**2 * self.sigma**2 + b**2)
        return x0 if self.kind == "sample" else a * super().__call__(x, t, s) - b * x0


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
@pytest.mark.parametrize(("make", "steps", "eta"), [(DDIMScheduler, 20, 0.0), (DDIMScheduler, 20, 0.5),
                                                    (DDPMScheduler, None, 0.0)])
def test_prediction_types_sample_as_epsilon_with_the_exact_denoiser(kind, make, steps, eta):
    """The exact Gaussian denoiser written as ε-, v- or x_0-predictor is one denoiser: same x_T, same noise, same
    samples (DDIM with and without η, DDPM ancestral)."""
    sigma, total = 0.1, 200
    s, _ = _gaussian_condition(sigma)
    samples = {}
    for prediction in ("epsilon", kind):
        scheduler = make(num_train_timesteps=total, prediction_type=prediction)
        inferer = LegoPETInferer(scheduler=scheduler, num_inference_steps=steps, guidance_scale=0.0, eta=eta)
        network = (GaussianPosteriorNetwork(scheduler.alphas_cumprod, sigma) if prediction == "epsilon"
                   else GaussianPosteriorOutput(scheduler.alphas_cumprod, sigma, kind))
        samples[prediction] = inferer(s, network, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(samples[kind], samples["epsilon"], rtol=1e-9, atol=1e-9)


def test_default_crop():
    assert default_crop((172, 172), 256) == (42, 42, 172, 172)  # (256 − 172) / 2 on each side


def test_standardised_model_draws_the_known_posterior_in_network_units():
    """x ~ N(s, σ²) in network units; the model works on z = (x − m) / k, where the data are N((s − m)/k, (σ/k)²),
    with the exact ε-predictor of those z.  DDPM with ``standardisation`` must return x samples of mean s and std σ
    (the inverse applied once, at the end).  x̂_0 is not clipped: MONAI's default clip to [−1, 1] cuts these z (means
    −0.4 and 0.8, std 0.4) and shrinks the spread by 8 %, the bias the configs avoid with clip_sample false."""
    from bundle.transforms.scaling import Standardisation

    scheduler, sigma, m, k = DDPMScheduler(num_train_timesteps=1000, clip_sample=False), 0.1, 0.3, 0.25
    s, means = _gaussian_condition(sigma)
    inferer = LegoPETInferer(scheduler=scheduler, guidance_scale=0.0, standardisation=Standardisation(mean=m, std=k))
    exact_z = GaussianPosteriorNetwork(scheduler.alphas_cumprod, sigma / k)
    x0 = inferer(s, lambda x, t, cond, **kw: exact_z(x, t, (cond - m) / k), generator=torch.Generator().manual_seed(3))
    for i, mean in enumerate(means):
        sample = x0[i].flatten()
        assert float(sample.mean()) == pytest.approx(mean, abs=4 * sigma / 64)
        assert float(sample.std()) == pytest.approx(sigma, rel=0.05)


def test_sample_many_starts_with_the_single_sample_and_draws_independent_samples(nets):
    denoiser, pnpnet = nets
    s = _sinogram(2)
    inferer = LegoPETInferer(scheduler=_ddim(), num_inference_steps=3, pnpnet=pnpnet, eta=0.0)
    many = inferer.sample_many(s, denoiser, num_samples=3, generator=torch.Generator().manual_seed(4))
    assert many.shape == (3, 2, 1, 32, 32)
    torch.testing.assert_close(many[0], inferer(s, denoiser, generator=torch.Generator().manual_seed(4)))
    assert not torch.allclose(many[0], many[1])
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        inferer.sample_many(s, denoiser, num_samples=0)


def test_image_condition_stacks_the_pnpnet_image_and_needs_a_pnpnet(nets):
    """pnpnet_image: the condition stack is [s, (PnPNet(s) − m)/k]; without features for the cDPM variant."""
    from bundle.transforms.scaling import Standardisation

    _, pnpnet = nets
    s = _sinogram(2)
    scaling = Standardisation(mean=0.1, std=0.2)
    both = LegoPETInferer(scheduler=_ddim(), pnpnet=pnpnet, pnpnet_image=True, standardisation=scaling).condition(s)
    assert both.sinogram.shape == (2, 2, 32, 32) and both.down_residuals is not None
    torch.testing.assert_close(both.sinogram[:, 1:], (pnpnet(s) - 0.1) / 0.2)
    image_only = LegoPETInferer(scheduler=_ddim(), pnpnet=pnpnet, pnpnet_image=True, pnpnet_features=False)
    condition = image_only.condition(s)
    assert condition.down_residuals is None and condition.sinogram.shape == (2, 2, 32, 32)
    denoiser = LegoPETDenoiser(**LAYOUT, condition_channels=2).eval()
    assert image_only(s, denoiser, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="pnpnet must be given for pnpnet_image=True"):
        LegoPETInferer(scheduler=_ddim(), pnpnet_image=True)
