"""LatentEnhancementInferer: sliding window = single pass on a one-window volume, seeds, argument errors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from bundle.diffusion.latent import DoseEstimator, PoissonLatentDiffusion
from bundle.diffusion.poisson import PoissonDegradation, PoissonDoseSchedule
from bundle.inferers.upete import LatentEnhancementInferer, make_process
from bundle.networks.ct_attention import CTGuidedLatentDenoiser
from bundle.networks.upete import CTEncoder, UPETe, pet_autoencoder

SHAPE = (1, 1, 16, 16, 8)


def _model(use_ct: bool = True) -> UPETe:
    torch.manual_seed(0)
    denoiser = CTGuidedLatentDenoiser(latent_channels=3, use_ct=use_ct, channels=(8, 16), num_res_blocks=1,
                                      attention_levels=(False, True), norm_num_groups=4, num_head_channels=8,
                                      ct_head_channels=8, ct_window=2)
    for m in denoiser.modules():  # MONAI zero-initialises the U-Net output (and we the CT projection): make f_θ act
        if isinstance(m, torch.nn.Conv3d) and not bool(m.weight.any()):
            torch.nn.init.normal_(m.weight, std=0.1)
    ct_encoder = CTEncoder(channels=(4, 8, 8), latent_channels=3, norm_num_groups=4) if use_ct else None
    ae = pet_autoencoder(channels=(4, 8, 8), norm_num_groups=4)
    last = [m for m in ae.decoder.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    torch.nn.init.constant_(last.bias, 1.0)  # positive decoded activity, so the Poisson re-degradation draws counts
    return UPETe(autoencoder=ae, denoiser=denoiser, ct_encoder=ct_encoder).eval()


def _process() -> PoissonLatentDiffusion:
    schedule = PoissonDoseSchedule(num_steps=40, min_dose=0.01)
    return PoissonLatentDiffusion(degradation=PoissonDegradation(schedule=schedule, count_scale=50.0,
                                                                 image_space=True))


def _inputs():
    gen = torch.Generator().manual_seed(1)
    return torch.rand(SHAPE, generator=gen), torch.rand(SHAPE, generator=gen)


def test_sliding_window_equals_single_pass_on_a_volume_that_fits_one_window():
    model, (x, ct) = _model(), _inputs()
    single = LatentEnhancementInferer(process=_process(), num_reverse_steps=3, roi_size=None)
    sliding = LatentEnhancementInferer(process=_process(), num_reverse_steps=3, roi_size=SHAPE[2:], overlap=0.5)
    a = single(x, model, ct=ct, dose=0.1, generator=torch.Generator().manual_seed(5))
    b = sliding(x, model, ct=ct, dose=0.1, generator=torch.Generator().manual_seed(5))
    assert a.shape == x.shape
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_sliding_window_over_a_larger_volume_keeps_the_grid():
    model = _model(use_ct=False)
    x = torch.rand(1, 1, 24, 16, 8, generator=torch.Generator().manual_seed(2))
    out = LatentEnhancementInferer(process=_process(), num_reverse_steps=2, roi_size=(16, 16, 8))(x, model, dose=0.2)
    assert out.shape == x.shape and bool(torch.isfinite(out).all())


def test_same_seed_same_output_different_seed_different_output():
    model, (x, ct) = _model(), _inputs()
    inferer = LatentEnhancementInferer(process=_process(), num_reverse_steps=3)
    a = inferer(x, model, ct=ct, dose=0.1, generator=torch.Generator().manual_seed(7))
    b = inferer(x, model, ct=ct, dose=0.1, generator=torch.Generator().manual_seed(7))
    c = inferer(x, model, ct=ct, dose=0.1, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_missing_or_misplaced_ct_and_missing_dose_raise():
    model, (x, ct) = _model(), _inputs()
    inferer = LatentEnhancementInferer(process=_process())
    with pytest.raises(ValueError, match="ct is required"):
        inferer(x, model, dose=0.1)
    with pytest.raises(ValueError, match="ct must be on the PET's grid"):
        inferer(x, model, ct=ct[..., :4], dose=0.1)
    with pytest.raises(ValueError, match="dose is required"):
        inferer(x, model, ct=ct)
    with pytest.raises(ValueError, match=r"dose must be a finite number in \(0, 1\], got 1.5"):
        inferer(x, model, ct=ct, dose=1.5)


def test_estimated_dose_is_used_when_none_is_given():
    est = DoseEstimator()
    est.a, est.b = 1.0, 0.0
    inferer = LatentEnhancementInferer(process=_process(), dose_estimator=est)
    x = torch.rand(SHAPE, generator=torch.Generator().manual_seed(3))
    assert 0 < inferer.resolve_dose(x, None) <= 1
    assert inferer.resolve_dose(x, 0.3) == 0.3


def test_poisson_domain_sets_the_start_dose():
    """Sinogram-domain x_t is an exact dose-d_t scan: an LPET of dose d starts at the step of dose d.  Image-domain
    x_t adds noise to the noisy SPET: it starts at d_eff(d) = (1 − d_ref) d / (1 − d)."""
    cal = SimpleNamespace(count_scale=50.0, latent_noise_variance=0.3, reference_dose=0.1)
    sino = make_process("LDM-P", calibration=cal, poisson_domain="sinogram")
    image = make_process("LDM-P", calibration=cal, poisson_domain="image")
    assert sino.step_for_dose(0.05) == sino.schedule.step_for_dose(0.05)
    assert image.step_for_dose(0.05) == image.schedule.step_for_dose(0.9 * 0.05 / 0.95)
    assert sino.step_for_dose(0.05) < image.step_for_dose(0.05)
    with pytest.raises(ValueError, match="poisson_domain must be one of"):
        make_process("LDM-P", calibration=cal, poisson_domain="projector")
