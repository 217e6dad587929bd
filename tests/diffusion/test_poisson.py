from __future__ import annotations

import math

import pytest
import torch

from bundle.diffusion import DoseScheduleKind, OSEMReconstruction, PoissonDegradation, PoissonDoseSchedule
from bundle.physics import PETForwardModel, SinogramProjector, preset


@pytest.mark.parametrize("kind", list(DoseScheduleKind))
def test_schedule_end_points_and_monotone(kind):
    schedule = PoissonDoseSchedule(min_dose=0.05, kind=kind)
    assert len(schedule) == 400 and schedule.doses.shape == (400,)
    assert schedule.dose_at(0) == 1.0
    assert schedule.dose_at(399) == 0.05
    assert bool((schedule.doses[1:] < schedule.doses[:-1]).all())
    assert torch.equal(schedule.dose_at(torch.tensor([0, 399])), torch.tensor([1.0, 0.05], dtype=torch.float64))


def test_schedule_kinds_and_defaults():
    geometric = PoissonDoseSchedule(num_steps=5, min_dose=0.01)
    assert geometric.kind is DoseScheduleKind.GEOMETRIC and geometric.min_dose == 0.01
    torch.testing.assert_close(geometric.doses, torch.tensor([1.0, 0.1**0.5, 0.1, 0.1**1.5, 0.01], dtype=torch.float64))
    linear = PoissonDoseSchedule(num_steps=5, min_dose=0.2, kind="linear")
    torch.testing.assert_close(linear.doses, torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2], dtype=torch.float64))


@pytest.mark.parametrize("kind", list(DoseScheduleKind))
def test_step_for_dose_inverts_dose_at(kind):
    schedule = PoissonDoseSchedule(num_steps=400, min_dose=0.01, kind=kind)
    for t in range(400):
        assert schedule.step_for_dose(schedule.dose_at(t)) == t
    assert schedule.step_for_dose(1.0) == 0
    assert schedule.step_for_dose(1e-6) == 399  # below d_min: the closest step is the last one


def test_step_for_dose_closest_in_the_schedule_spacing():
    geometric = PoissonDoseSchedule(num_steps=3, min_dose=0.01)  # 1, 0.1, 0.01
    assert geometric.step_for_dose(0.32) == 0 and geometric.step_for_dose(0.31) == 1  # log midpoint √0.1 ≈ 0.316
    assert geometric.step_for_dose(0.4) == 0  # log distance (a linear distance would pick 0.1)
    assert geometric.step_for_dose(0.03) == 2
    assert geometric.step_for_dose(math.sqrt(0.1)) == 0  # tie -> smaller t
    linear = PoissonDoseSchedule(num_steps=3, min_dose=0.2, kind="linear")  # 1, 0.6, 0.2
    assert linear.step_for_dose(0.45) == 1 and linear.step_for_dose(0.35) == 2


def test_schedule_argument_errors():
    with pytest.raises(ValueError, match=r"num_steps must be >= 2, got 1"):
        PoissonDoseSchedule(num_steps=1)
    with pytest.raises(TypeError, match=r"num_steps must be an int >= 2, got 4.0"):
        PoissonDoseSchedule(num_steps=4.0)
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"min_dose must be a finite number in \(0, 1\)"):
            PoissonDoseSchedule(min_dose=bad)
    with pytest.raises(ValueError, match=r"kind must be one of \['geometric', 'linear'\], got 'cosine'"):
        PoissonDoseSchedule(kind="cosine")
    with pytest.raises(TypeError):
        PoissonDoseSchedule(400)  # keyword-only
    schedule = PoissonDoseSchedule(num_steps=10)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\], got 10"):
        schedule.dose_at(10)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\], got \[0, -1\]"):
        schedule.dose_at(torch.tensor([0, -1]))
    with pytest.raises(TypeError, match=r"t must be an int or an integer tensor, got 1.5"):
        schedule.dose_at(1.5)
    with pytest.raises(TypeError, match=r"got dtype torch.float32"):
        schedule.dose_at(torch.tensor([1.0]))
    for bad in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match=r"dose must be a finite number in \(0, 1\]"):
            schedule.step_for_dose(bad)
    with pytest.raises(TypeError, match=r"dose must be a finite number in \(0, 1\]"):
        schedule.step_for_dose("0.1")


def _image_space(count_scale: float = 50.0) -> PoissonDegradation:
    schedule = PoissonDoseSchedule(num_steps=11, min_dose=0.01)
    return PoissonDegradation(schedule=schedule, count_scale=count_scale, image_space=True)


def test_image_space_is_unbiased_with_poisson_variance_scaling():
    degradation = _image_space(count_scale=50.0)
    levels = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x0 = levels.reshape(1, 3, 1).expand(3, 3, 40_000).contiguous()  # B = 3, 3 activity levels, 40k voxels each
    t = torch.tensor([0, 5, 10])  # doses 1, 0.1, 0.01
    x_t = degradation(x0, t, generator=torch.Generator().manual_seed(0))
    assert x_t.shape == x0.shape and x_t.dtype == x0.dtype
    kappa = degradation.count_scale_at(t)
    torch.testing.assert_close(kappa, torch.tensor([50.0, 5.0, 0.5], dtype=torch.float64))
    n = x0.shape[-1]
    for b in range(3):
        for c, level in enumerate(levels.tolist()):
            sample = x_t[b, c]
            variance = level / float(kappa[b])  # Var = x0 / κ_t
            assert abs(float(sample.mean()) - level) < 5 * math.sqrt(variance / n)  # unbiased
            assert float(sample.var()) == pytest.approx(variance, rel=0.05)
    # variance ∝ 1 / dose at fixed x0
    var = x_t[:, 1].var(dim=-1)
    doses = degradation.schedule.dose_at(t)
    torch.testing.assert_close(var * doses, var[0] * doses[0] * torch.ones(3, dtype=torch.float64), rtol=0.06, atol=0)


def test_image_space_keeps_dtype_and_zero_activity():
    degradation = _image_space()
    x0 = torch.zeros(2, 1, 4, 4, 4)
    x0[:, :, 1:3] = 1.0
    x_t = degradation(x0, 3, generator=torch.Generator().manual_seed(1))
    assert x_t.dtype == torch.float32 and x_t.shape == x0.shape
    assert bool((x_t[x0 == 0] == 0).all())
    assert bool((x_t >= 0).all())


def _tiny_2d_degradation(schedule: PoissonDoseSchedule, count_scale: float) -> tuple[PoissonDegradation, tuple]:
    p = preset("tiny_2d")
    projector = SinogramProjector(layout=p.layout, image=p.image)
    background = torch.full(projector.out_shape, 0.5)
    model = PETForwardModel(projector=projector, background=background)
    degradation = PoissonDegradation(
        schedule=schedule,
        count_scale=count_scale,
        forward_model=model,
        reconstruct=OSEMReconstruction(forward_model=model, num_subsets=4, num_iterations=2),
    )
    return degradation, p.image.shape


def _disc(shape) -> tuple[torch.Tensor, torch.Tensor]:
    _, ny, nx = shape
    y, x = torch.meshgrid(torch.arange(ny) - (ny - 1) / 2, torch.arange(nx) - (nx - 1) / 2, indexing="ij")
    r = torch.sqrt(y**2 + x**2)
    image = (r < 14).to(torch.float32).reshape(shape)
    flat = (r < 7).reshape(shape)  # well inside the disc
    return image, flat


def test_projector_mode_noise_grows_as_dose_falls():
    schedule = PoissonDoseSchedule(num_steps=3, min_dose=0.01)  # 1, 0.1, 0.01
    degradation, shape = _tiny_2d_degradation(schedule, count_scale=2.0)
    image, flat = _disc(shape)
    realisations = 6
    x0 = image.expand(realisations * 3, 1, *shape).contiguous()
    t = torch.arange(3).repeat_interleave(realisations)
    x_t = degradation(x0, t, generator=torch.Generator().manual_seed(0)).reshape(3, realisations, *shape)
    stds = [float(x_t[k][:, flat].std(dim=0).mean()) for k in range(3)]
    means = [float(x_t[k][:, flat].mean()) for k in range(3)]
    assert stds[0] < stds[1] < stds[2]
    assert stds[1] / stds[0] > 2 and stds[2] / stds[1] > 2  # ~ sqrt(10) per factor 10 in dose
    for m in means:  # the reconstruction recovers the activity level (few OSEM iterations: loose)
        assert m == pytest.approx(1.0, rel=0.25)


def test_projector_mode_determinism_and_bare_projector():
    p = preset("tiny_2d")
    projector = SinogramProjector(layout=p.layout, image=p.image)
    degradation = PoissonDegradation(
        schedule=PoissonDoseSchedule(num_steps=4), count_scale=1.0, forward_model=projector
    )
    assert isinstance(degradation.reconstruct, OSEMReconstruction)
    image, _ = _disc(p.image.shape)
    x0 = image.expand(2, *p.image.shape).contiguous()
    a = degradation(x0, 1, generator=torch.Generator().manual_seed(3))
    b = degradation(x0, 1, generator=torch.Generator().manual_seed(3))
    c = degradation(x0, 1, generator=torch.Generator().manual_seed(4))
    assert a.shape == x0.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # batch items are independent realisations


def test_image_space_determinism_by_seed():
    degradation = _image_space()
    x0 = torch.rand(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0))
    a = degradation(x0, torch.tensor([2, 7]), generator=torch.Generator().manual_seed(5))
    b = degradation(x0, torch.tensor([2, 7]), generator=torch.Generator().manual_seed(5))
    c = degradation(x0, torch.tensor([2, 7]), generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_custom_reconstruction_is_called_with_the_count_scale():
    p = preset("tiny_2d")
    projector = SinogramProjector(layout=p.layout, image=p.image)
    calls = []

    def recon(counts, *, count_scale):
        calls.append((tuple(counts.shape), count_scale))
        return torch.zeros(p.image.shape)

    schedule = PoissonDoseSchedule(num_steps=3, min_dose=0.25)
    degradation = PoissonDegradation(schedule=schedule, count_scale=8.0, forward_model=projector, reconstruct=recon)
    out = degradation(torch.ones(2, *p.image.shape), torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, torch.zeros(2, *p.image.shape))
    assert calls == [(projector.out_shape, 8.0), (projector.out_shape, 2.0)]


def test_degradation_argument_errors():
    schedule = PoissonDoseSchedule(num_steps=10)
    p = preset("tiny_2d")
    projector = SinogramProjector(layout=p.layout, image=p.image)
    with pytest.raises(TypeError, match=r"schedule must be a PoissonDoseSchedule, got int"):
        PoissonDegradation(schedule=10, count_scale=1.0, image_space=True)
    with pytest.raises(ValueError, match=r"count_scale must be a finite number > 0, got 0.0"):
        PoissonDegradation(schedule=schedule, count_scale=0.0, image_space=True)
    with pytest.raises(ValueError, match=r"forward_model is required unless image_space=True, got None"):
        PoissonDegradation(schedule=schedule, count_scale=1.0)
    with pytest.raises(ValueError, match=r"forward_model and reconstruct must be None"):
        PoissonDegradation(schedule=schedule, count_scale=1.0, forward_model=projector, image_space=True)
    with pytest.raises(TypeError, match=r"forward_model must be a PETForwardModel or a LinearOperator, got str"):
        PoissonDegradation(schedule=schedule, count_scale=1.0, forward_model="mmr")
    with pytest.raises(TypeError, match=r"reconstruct must be callable"):
        PoissonDegradation(schedule=schedule, count_scale=1.0, forward_model=projector, reconstruct=3)
    with pytest.raises(TypeError):
        PoissonDegradation(schedule, 1.0)  # keyword-only

    image_mode = PoissonDegradation(schedule=schedule, count_scale=1.0, image_space=True)
    g = torch.Generator().manual_seed(0)
    x0 = torch.ones(2, 1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"x0 must be >= 0 everywhere \(activity\); its minimum is -1.0"):
        image_mode(-x0, 0, generator=g)
    with pytest.raises(ValueError, match=r"x0 must be finite"):
        image_mode(x0 * float("nan"), 0, generator=g)
    with pytest.raises(TypeError, match=r"x0 must be floating-point, got dtype torch.int64"):
        image_mode(x0.long(), 0, generator=g)
    with pytest.raises(ValueError, match=r"t must be an int or have shape \(B,\) = \(2,\), got \(3,\)"):
        image_mode(x0, torch.tensor([0, 1, 2]), generator=g)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\], got 10"):
        image_mode(x0, 10, generator=g)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator, got int"):
        image_mode(x0, 0, generator=0)
    with pytest.raises(TypeError, match=r"missing 1 required keyword-only argument: 'generator'"):
        image_mode(x0, 0)

    projector_mode = PoissonDegradation(schedule=schedule, count_scale=1.0, forward_model=projector)
    with pytest.raises(ValueError, match=r"x0 must have shape \(B, \.\.\., 1, 40, 40\).*got \(1, 40, 40\)"):
        projector_mode(torch.ones(1, 40, 40), 0, generator=g)
    with pytest.raises(ValueError, match=r"got \(2, 1, 32, 32\)"):
        projector_mode(torch.ones(2, 1, 32, 32), 0, generator=g)
    with pytest.raises(TypeError, match=r"forward_model must be a PETForwardModel, got SinogramProjector"):
        OSEMReconstruction(forward_model=projector)
    with pytest.raises(ValueError, match=r"num_subsets must be >= 1, got 0"):
        OSEMReconstruction(forward_model=projector_mode.forward_model, num_subsets=0)
