"""Latent processes: Poisson dose schedule monotone, noise variance following the dose, dose maps, calibration."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.diffusion.ddim import PredictionType, split_prediction
from bundle.diffusion.latent import (
    DoseEstimator,
    GaussianLatentDiffusion,
    LatentStep,
    PoissonLatentDiffusion,
    calibrate_count_scale,
)
from bundle.diffusion.poisson import PoissonDegradation, PoissonDoseSchedule
from bundle.diffusion.sampler import sample


def _poisson(kappa: float = 50.0, reference_dose: float | None = 0.1) -> PoissonLatentDiffusion:
    schedule = PoissonDoseSchedule(num_steps=400, min_dose=0.005)
    return PoissonLatentDiffusion(
        degradation=PoissonDegradation(schedule=schedule, count_scale=kappa, image_space=True),
        reference_dose=reference_dose,
    )


def test_poisson_schedule_dose_is_monotone_and_noise_variance_follows_dose():
    process = _poisson(kappa=40.0)
    doses = process.schedule.doses
    assert bool((doses[1:] < doses[:-1]).all()) and float(doses[0]) == 1.0
    x0 = torch.full((1, 1, 32, 32, 32), 0.5)
    gen = torch.Generator().manual_seed(0)
    for t in (0, 100, 300):
        xt = process.degradation(x0, t, generator=gen)
        expected = 0.5 / (40.0 * float(doses[t]))  # Var[Poisson(κ d x)/(κ d)] = x / (κ d)
        assert float(xt.var()) == pytest.approx(expected, rel=0.1)


def test_poisson_step_for_dose_uses_thinning_map():
    process = _poisson()
    assert process.effective_dose(0.1) == pytest.approx(0.1)
    assert process.effective_dose(0.5) == pytest.approx(0.9)  # (1 − 0.1) · 0.5 / 0.5
    steps = [process.step_for_dose(d) for d in (0.5, 0.2, 0.1, 0.05, 0.01)]
    assert steps == sorted(steps) and steps[0] < steps[-1]
    assert _poisson(reference_dose=None).step_for_dose(0.1) == process.schedule.step_for_dose(0.1)


def test_gaussian_step_for_dose_matches_noise_variance():
    process = GaussianLatentDiffusion(num_train_timesteps=400, latent_noise_variance=0.3, reference_dose=0.1)
    t = process.step_for_dose(0.1)
    a = float(process.alphas_cumprod[t])
    assert (1 - a) / a == pytest.approx(0.3, rel=0.05)
    assert process.step_for_dose(0.02) > t > process.step_for_dose(0.5)


def test_gaussian_ddim_step_is_exact_for_a_perfect_prediction():
    process = GaussianLatentDiffusion(num_train_timesteps=400)
    z0 = torch.randn(1, 3, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(2))
    a_t, a_p = float(process.alphas_cumprod[200]), float(process.alphas_cumprod[100])
    z_t = math.sqrt(a_t) * z0 + math.sqrt(1 - a_t) * eps
    z0_hat, eps_hat = split_prediction(z0, z_t, process.alpha(200), PredictionType.SAMPLE)
    z_p = process.step(z0_hat, eps_hat, 200, prev_timestep=100, encode=None, decode=None, generator=None)
    torch.testing.assert_close(z_p, math.sqrt(a_p) * z0 + math.sqrt(1 - a_p) * eps)


def test_set_timesteps_descends_from_start():
    process = _poisson()
    assert process.set_timesteps(4, start_step=200) == [200, 150, 100, 50]
    assert process.set_timesteps(4, start_step=0) == [0]
    with pytest.raises(ValueError, match=r"start_step must lie in \[0, 399\]"):
        process.set_timesteps(4, start_step=400)


def test_calibrate_count_scale_recovers_kappa():
    gen = torch.Generator().manual_seed(3)
    x = torch.full((64, 64, 16), 2.0)
    kappa, dose = 30.0, 0.1
    low = torch.poisson(x * kappa * dose, generator=gen) / (kappa * dose)
    assert calibrate_count_scale(x, low, dose=dose) == pytest.approx(kappa, rel=0.03)


def test_dose_estimator_recovers_dose_of_white_poisson_noise():
    gen = torch.Generator().manual_seed(4)
    x = torch.full((1, 1, 32, 32, 32), 1.0)
    draw = lambda d: torch.poisson(x * 100 * d, generator=gen) / (100 * d)  # noqa: E731
    est = DoseEstimator().calibrate(draw(1.0), draw(0.1), dose=0.1)
    assert est(draw(0.25)) == pytest.approx(0.25, rel=0.15)
    with pytest.raises(ValueError, match="not calibrated"):
        DoseEstimator()(x)


def test_dose_estimator_recovers_the_dose_of_osem_reconstructions_of_thinned_scans():
    """PET-like noise (OSEM of a structured phantom, correlated, variance ∝ activity): calibrated at 100 % and 10 %
    on one subject, the estimator finds the known thinning fraction of another realisation within 20 %."""
    from bundle.data.simulate import simulate_scan, slicewise_layout
    from bundle.physics import ImageGeometry, binomial_thinning

    image = ImageGeometry(shape=(8, 64, 64), voxel_size_mm=(8.0, 3.0, 3.0))
    z, y, x = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in image.shape), indexing="ij")
    body = ((y - 31.5) ** 2 / 784 + (x - 31.5) ** 2 / 576) <= 1
    hot = ((y - 24) ** 2 + (x - 36) ** 2) <= 36
    activity = body.float() * (1.0 + 0.1 * z) + 3.0 * hot.float()

    def scan(seed):
        return simulate_scan(activity, body.float() * 0.0096, layout=slicewise_layout(image), image=image,
                             total_counts=8e6, generator=torch.Generator().manual_seed(seed), fwhm_mm=6.0)

    def at(s, dose, seed):
        counts = s.counts if dose == 1 else binomial_thinning(s.counts, fraction=dose,
                                                              generator=torch.Generator().manual_seed(seed))
        return s.at_dose(dose).reconstruct_osem(counts=counts, num_subsets=4, num_iterations=3)

    calibration, subject = scan(0), scan(1)
    est = DoseEstimator().calibrate(at(calibration, 1.0, 0), at(calibration, 0.1, 1), dose=0.1)
    for dose in (0.02, 0.05, 0.3):
        assert est(at(subject, dose, 2)) == pytest.approx(dose, rel=0.2)


def _chain(redegradation: str) -> list[torch.Tensor]:
    """The inputs a network sees along a K = 3 Poisson chain whose "network" returns the constant image 2."""
    process = _poisson(kappa=1e4, reference_dose=None)
    steps = process.set_timesteps(3, start_step=300)
    seen = []

    def model(z, t):
        seen.append(z.clone())
        return torch.full_like(z, 2.0)

    rule = LatentStep(process=process, timesteps=steps, encode=lambda x: x, decode=lambda z: z,
                      redegradation=redegradation)
    _, z0 = sample(torch.ones(1, 1, 8, 8, 8), steps, model=model, step_rule=rule,
                   prediction_type=PredictionType.SAMPLE, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(z0, torch.full_like(z0, 2.0)) and len(seen) == 3
    return seen


def test_redegradation_none_feeds_the_prediction_back_and_process_re_degrades_it():
    """"none": the next input is ẑ0 itself; "process": a Poisson thinning of ẑ0 at the next step's dose, unbiased
    (mean 2) with variance ẑ0 / (κ_0 d_t') = 2 / (1e4 d_t')."""
    none = _chain("none")
    assert all(torch.equal(z, torch.full_like(z, 2.0)) for z in none[1:])
    process = _poisson(kappa=1e4, reference_dose=None)
    steps = process.set_timesteps(3, start_step=300)
    degraded = _chain("process")[1]
    assert not torch.equal(degraded, torch.full_like(degraded, 2.0))
    assert float(degraded.mean()) == pytest.approx(2.0, abs=0.02)
    expected = 2.0 / (1e4 * float(process.schedule.dose_at(steps[1])))
    assert float(degraded.var()) == pytest.approx(expected, rel=0.3)
    with pytest.raises(ValueError, match="redegradation"):
        LatentStep(process=process, timesteps=steps, encode=lambda x: x, decode=lambda z: z, redegradation="sinogram")
