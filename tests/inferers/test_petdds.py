from __future__ import annotations

import warnings

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler

from bundle.inferers import (
    PETDDSInferer,
    Preconditioner,
    reconstruct_many,
    uncertainty_from_samples,
)
from bundle.physics.forward_model import PETForwardModel, PoissonDataModel, select_views, view_subsets
from bundle.physics.operators import IdentityOperator, MatrixOperator
from bundle.physics.recon import osem

IMAGE_SHAPE = (3, 4, 4)
SINO_SHAPE = (3, 8, 6)  # (planes, views, radial)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scheduler() -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, clip_sample=False)


class FakeProjector(MatrixOperator):
    """Random non-negative dense matrix image -> sinogram with view_subset (independent of the joseph projector),
    times ``scale`` (a change of count or activity units)."""

    def __init__(self, seed: int = 0, scale: float = 1.0) -> None:
        n_out, n_in = torch.Size(SINO_SHAPE).numel(), torch.Size(IMAGE_SHAPE).numel()
        matrix = torch.rand(n_out, n_in, generator=_gen(seed), dtype=torch.float64)
        matrix = matrix * (matrix > 0.6) * scale
        super().__init__(matrix, in_shape=IMAGE_SHAPE, out_shape=SINO_SHAPE)

    def view_subset(self, view_indices: torch.Tensor) -> MatrixOperator:
        p, v, r = self.out_shape
        rows = self.matrix.reshape(p, v, r, -1).index_select(1, view_indices)
        return MatrixOperator(
            rows.reshape(-1, self.matrix.shape[1]), in_shape=self.in_shape, out_shape=(p, view_indices.numel(), r)
        )


def _pet_problem(seed: int = 0) -> tuple[PETForwardModel, torch.Tensor]:
    model = PETForwardModel(projector=FakeProjector(seed), background=torch.full(SINO_SHAPE, 0.5, dtype=torch.float64))
    x_true = torch.full(IMAGE_SHAPE, 1.0, dtype=torch.float64)
    x_true[1, 1:3, 1:3] = 4.0
    return model, torch.poisson(model.expectation(20 * x_true), generator=_gen(seed + 100))


class GaussianEps(torch.nn.Module):
    """Exact ε-predictor for x0 ~ N(m, s² I): ε̂ = (x_t − γ_t m) ν_t / (γ_t² s² + ν_t²)."""

    def __init__(self, scheduler: DDIMScheduler, mean: float, std: float) -> None:
        super().__init__()
        self.alphas_cumprod, self.mean, self.std = scheduler.alphas_cumprod, mean, std
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == 1 and t.dtype == torch.long and t.shape == (x.shape[0],)
        self.batch_sizes.append(x.shape[0])
        a = self.alphas_cumprod[t].to(x.dtype).reshape(-1, 1, 1, 1)
        gamma, nu = a.sqrt(), (1 - a).sqrt()
        return (x - gamma * self.mean) * nu / (gamma**2 * self.std**2 + nu**2)


def _identity_problem(shape=(2, 4, 4), dtype=torch.float32, counts: torch.Tensor | None = None):
    model = PoissonDataModel(operator=IdentityOperator(shape), background=torch.zeros(shape, dtype=dtype))
    return [model], [torch.zeros(shape, dtype=dtype) if counts is None else counts]


def _osem_inferer(**overrides) -> PETDDSInferer:
    kwargs = dict(
        scheduler=_scheduler(),
        num_inference_steps=4,
        num_subsets=4,
        steps_per_diffusion_step=2,
        delta=1.0,
        lambda_rdp=0.0,
        lambda_dds=0.0,
        preconditioner=Preconditioner.EM_SUBSET,
        gradient_scale=1.0,
        prior_enabled=False,
    )
    kwargs.update(overrides)
    return PETDDSInferer(**kwargs)


# ---------------------------------------------------------------- data consistency vs OSEM (independent truth)
def test_dc_sweeps_reproduce_osem_with_pet_forward_model_and_persistent_subset_cycle():
    model, y = _pet_problem()
    seen = []
    inferer = _osem_inferer(callback=lambda step, x: seen.append((step, x)))
    out = inferer(y, None, models=model, initial_osem=torch.ones(IMAGE_SHAPE, dtype=torch.float64))
    idx = view_subsets(model.n_views, 4)
    models, data = [model.subset(i) for i in idx], [select_views(y, i) for i in idx]
    # 4 diffusion steps x p=2 = 8 sub-iterations = 2 OSEM passes; after 2 diffusion steps: 1 pass (p < n_sub)
    torch.testing.assert_close(out, osem(models, data, num_iterations=2), rtol=1e-10, atol=1e-12)
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    torch.testing.assert_close(seen[1][1], osem(models, data, num_iterations=1), rtol=1e-10, atol=1e-12)


def test_dc_sweeps_reproduce_osem_with_subset_model_list_and_custom_start():
    model, y = _pet_problem(seed=3)
    idx = view_subsets(model.n_views, 2)
    models, data = [model.subset(i) for i in idx], [select_views(y, i) for i in idx]
    start = torch.rand(IMAGE_SHAPE, generator=_gen(5), dtype=torch.float64) + 0.5
    out = _osem_inferer(num_subsets=2, num_inference_steps=3)(data, None, models=models, initial_osem=start)
    torch.testing.assert_close(out, osem(models, data, num_iterations=3, initial=start), rtol=1e-10, atol=1e-12)


def test_default_em_preconditioner_is_osem_when_subset_sensitivities_are_equal():
    # every subset sees the same matrix, so A_kᵀ1 = Aᵀ1 / n_sub and the METHODS.md default equals OSEM
    matrix = torch.rand(10, 8, generator=_gen(1), dtype=torch.float64)
    background = torch.full((10,), 0.2, dtype=torch.float64)
    models = [PoissonDataModel(operator=MatrixOperator(matrix, in_shape=(2, 2, 2)), background=background)] * 3
    data = [torch.poisson(torch.full((10,), 30.0, dtype=torch.float64), generator=_gen(k)) for k in range(3)]
    inferer = _osem_inferer(num_subsets=3, num_inference_steps=2, steps_per_diffusion_step=3,
                            preconditioner="em", gradient_scale=None)
    torch.testing.assert_close(inferer(data, None, models=models), osem(models, data, num_iterations=2), rtol=1e-10,
                               atol=1e-12)


# ---------------------------------------------------------------- p = 0 reduces to MONAI's DDIM loop
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_without_data_consistency_the_sampler_is_monai_ddim(eta):
    shape, steps = (2, 4, 4), 8
    models, data = _identity_problem(shape)
    net = GaussianEps(_scheduler(), mean=5.0, std=0.5)
    inferer = PETDDSInferer(scheduler=_scheduler(), num_inference_steps=steps, num_subsets=1,
                            steps_per_diffusion_step=0, eta=eta, previous_timestep="ddim_step")
    out = inferer(data, net, models=models, slice_scale=torch.ones(2), generator=_gen(3))

    reference = _scheduler()
    reference.set_timesteps(steps)
    generator = _gen(3)
    x = torch.randn((2, 1, 4, 4), generator=generator)
    for t in reference.timesteps:
        eps = net(x, torch.full((2,), int(t), dtype=torch.long))
        x, x0 = reference.step(eps, int(t), x, eta=eta, generator=generator)
        assert float(x0.min()) > 0  # the sampler's x̂0 >= 0 clamp is inactive here
    torch.testing.assert_close(out, x0[:, 0])
    torch.testing.assert_close(out, x[:, 0])  # set_alpha_to_one: the last DDIM sample is the last x̂0


def test_chunk_size_bounds_network_batches_without_changing_the_result():
    models, data = _identity_problem((5, 4, 4))
    outs = []
    for chunk in (2, 5):
        net = GaussianEps(_scheduler(), mean=5.0, std=0.5)
        inferer = PETDDSInferer(scheduler=_scheduler(), num_inference_steps=3, num_subsets=1,
                                steps_per_diffusion_step=0, chunk_size=chunk)
        outs.append(inferer(data, net, models=models, slice_scale=torch.ones(5), generator=_gen(0)))
        assert net.batch_sizes == ([2, 2, 1] if chunk == 2 else [5]) * 3
    torch.testing.assert_close(outs[0], outs[1])


# ---------------------------------------------------------------- Gaussian-prior oracle
def _affine_ddim_oracle(scheduler: DDIMScheduler, steps: int, mean: float, std: float) -> tuple[float, float]:
    """Scalar re-derivation: with the exact Gaussian ε-predictor, deterministic DDIM over the scheduler's timesteps
    (t_prev = next timestep) maps x_T = z to x̂0 = c + a z; returns (c, a)."""
    scheduler.set_timesteps(steps)
    ts = [int(t) for t in scheduler.timesteps]
    alphas = [float(scheduler.alphas_cumprod[t]) for t in ts] + [1.0]
    c, a = 0.0, 1.0
    for i in range(len(ts)):
        g, nu, g_prev = alphas[i] ** 0.5, (1 - alphas[i]) ** 0.5, alphas[i + 1] ** 0.5
        k = nu / (g * g * std * std + nu * nu)
        c_eps, a_eps = (c - g * mean) * k, a * k
        c0, a0 = (c - nu * c_eps) / g, (a - nu * a_eps) / g
        c = g_prev * c0 + (1 - alphas[i + 1]) ** 0.5 * c_eps
        a = g_prev * a0 + (1 - alphas[i + 1]) ** 0.5 * a_eps
    return c0, a0


def test_gaussian_prior_oracle_exact_affine_map_and_prior_statistics():
    shape, mean, std, steps = (4, 8, 8), 5.0, 0.5, 20
    models, data = _identity_problem(shape, dtype=torch.float64)
    inferer = PETDDSInferer(scheduler=_scheduler(), num_inference_steps=steps, num_subsets=1,
                            steps_per_diffusion_step=0, eta=0.0)
    net = GaussianEps(_scheduler(), mean=mean, std=std)
    samples = reconstruct_many(inferer, data, net, models=models, seeds=[0, 1],
                               slice_scale=torch.ones(4, dtype=torch.float64))
    assert samples.shape == (2, *shape)
    c, a = _affine_ddim_oracle(_scheduler(), steps, mean, std)
    z_t = torch.randn(shape, generator=_gen(0), dtype=torch.float64)
    torch.testing.assert_close(samples[0], c + a * z_t, rtol=1e-9, atol=1e-9)
    # the discretised sampler is close to the prior N(m, s²): the oracle's own c, a and the 512 voxel samples
    assert abs(c - mean) < 0.02 and abs(a / std - 1) < 0.15
    assert abs(float(samples.mean()) - mean) < 0.1  # standard error 0.022
    assert abs(float(samples.std()) / std - 1) < 0.2


def test_data_consistency_pulls_the_prior_sample_towards_the_data():
    shape = (2, 4, 4)
    counts = torch.poisson(torch.full(shape, 10.0, dtype=torch.float64), generator=_gen(7))
    model = PoissonDataModel(operator=IdentityOperator(shape), background=torch.full(shape, 0.1, dtype=torch.float64))
    net = GaussianEps(_scheduler(), mean=5.0, std=0.5)
    results = {}
    for p in (0, 5):
        inferer = PETDDSInferer(scheduler=_scheduler(), num_inference_steps=10, num_subsets=1,
                                steps_per_diffusion_step=p, delta=0.5, lambda_dds=0.1, lambda_rdp=0.0)
        results[p] = inferer([counts], net, models=[model], slice_scale=torch.ones(2, dtype=torch.float64),
                             generator=_gen(0))
    assert abs(float(results[0].mean()) - 5.0) < 0.5
    target = float((counts - 0.1).mean())
    assert abs(float(results[5].mean()) - target) < abs(float(results[0].mean()) - target) / 2


# ---------------------------------------------------------------- full sampler: non-negativity, seeds
def _conv_net() -> torch.nn.Module:
    torch.manual_seed(0)  # only for the toy network's weights
    net = torch.nn.Conv2d(1, 1, 3, padding=1, dtype=torch.float64)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = net

        def forward(self, x, t):
            return self.conv(x) + 1e-3 * t.to(x.dtype).reshape(-1, 1, 1, 1)

    return Net()


def test_full_sampler_is_non_negative_and_seeded():
    model, y = _pet_problem()
    net = _conv_net()
    inferer = PETDDSInferer(scheduler=_scheduler(), num_inference_steps=5, num_subsets=4, steps_per_diffusion_step=2,
                            eta=0.5, lambda_rdp=0.1, chunk_size=2)
    a = inferer(y, net, models=model, generator=_gen(1))  # slice scale from an internal OSEM
    b = inferer(y, net, models=model, generator=_gen(1))
    c = inferer(y, net, models=model, generator=_gen(2))
    assert a.shape == IMAGE_SHAPE and a.dtype == torch.float64
    assert bool(torch.isfinite(a).all()) and float(a.min()) >= 0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    default_seed = inferer(y, net, models=model)  # generator None -> Generator().manual_seed(seed=0)
    torch.testing.assert_close(default_seed, inferer(y, net, models=model, generator=_gen(0)), rtol=0, atol=0)


# ---------------------------------------------------------------- weights in relative units
def _scaled_problem(counts: float, activity: float) -> tuple[PETForwardModel, torch.Tensor]:
    """_pet_problem's data in other units: every count × ``counts`` (A, b, y), activity unit ``activity`` times
    smaller (A / activity), so the same scan is described by a different but equivalent model."""
    _, y = _pet_problem()
    scaled = PETForwardModel(projector=FakeProjector(0, scale=counts / activity),
                             background=torch.full(SINO_SHAPE, 0.5 * counts, dtype=torch.float64))
    return scaled, y * counts


def _weighted_inferer(**overrides) -> PETDDSInferer:
    kwargs = dict(scheduler=_scheduler(), num_inference_steps=4, num_subsets=4, steps_per_diffusion_step=2,
                  eta=0.0, lambda_rdp=0.5, lambda_dds=0.5)
    return PETDDSInferer(**{**kwargs, **overrides})


def test_relative_weights_make_the_reconstruction_invariant_to_count_and_activity_units():
    net = GaussianEps(_scheduler(), mean=1.0, std=0.5)  # a prior in normalised units, as a trained network's
    scale = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)  # c_z in the reference units
    reference_model, y = _scaled_problem(1.0, 1.0)
    reference = _weighted_inferer()(y, net, models=reference_model, slice_scale=scale, generator=_gen(1))
    # (A, b, y) × 1000 (e.g. a 1000 times longer scan of the same expectation): the same image
    model, y_k = _scaled_problem(1000.0, 1.0)
    torch.testing.assert_close(_weighted_inferer()(y_k, net, models=model, slice_scale=scale, generator=_gen(1)),
                               reference, rtol=1e-8, atol=1e-10)
    # activity in units 50 times smaller (A / 50, so c_z × 50): 50 times the image
    model, y_a = _scaled_problem(1.0, 50.0)
    torch.testing.assert_close(
        _weighted_inferer()(y_a, net, models=model, slice_scale=50 * scale, generator=_gen(1)), 50 * reference,
        rtol=1e-8, atol=1e-9)
    # the same weights in absolute units are not invariant: the penalty terms shrink against the likelihood
    model, y_k = _scaled_problem(1000.0, 1.0)
    absolute = _weighted_inferer(weight_units="absolute")
    with pytest.warns(UserWarning, match="lambda_rdp"):
        other = absolute(y_k, net, models=model, slice_scale=scale, generator=_gen(1))
    assert float((other - reference).abs().max()) > 1e-3 * float(reference.max())


def test_relative_weights_follow_the_mean_sensitivity_and_activity_scale():
    model, y = _pet_problem()
    inferer = _weighted_inferer(lambda_rdp=0.3, lambda_dds=2.0)
    slice_scale = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64)
    inferer(y, _conv_net(), models=model, slice_scale=slice_scale, generator=_gen(0))
    column_sums = FakeProjector(0).matrix.sum(dim=0)  # Aᵀ1 (independent of the subsets)
    mean_sensitivity = float(column_sums[column_sums > 0].mean())
    assert inferer.weights["mean_sensitivity"] == pytest.approx(mean_sensitivity, rel=1e-12)
    assert inferer.weights["activity_scale"] == pytest.approx(3.0)
    assert inferer.weights["lambda_rdp"] == pytest.approx(0.3 * mean_sensitivity, rel=1e-12)
    assert inferer.weights["lambda_dds"] == pytest.approx(2.0 * mean_sensitivity / 3.0, rel=1e-12)
    assert set(inferer.step_sizes) == {"likelihood", "rdp", "proximity"}
    assert all(v > 0 for v in inferer.step_sizes.values())


def test_negligible_penalty_warns_and_names_the_weight():
    model, y = _pet_problem()
    with pytest.warns(UserWarning, match=r"the rdp term's step .* lambda_rdp=1e-08 \(absolute units\)"):
        _weighted_inferer(lambda_rdp=1e-8, weight_units="absolute")(y, _conv_net(), models=model, generator=_gen(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _weighted_inferer()(y, _conv_net(), models=model, generator=_gen(0))  # relative defaults: no warning
        _weighted_inferer(lambda_rdp=1e-8, negligible_ratio=0.0, weight_units="absolute")(
            y, _conv_net(), models=model, generator=_gen(0))  # check switched off


# ---------------------------------------------------------------- uncertainty
def test_uncertainty_mean_and_coefficient_of_variation():
    mean, cv = uncertainty_from_samples([torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])])
    torch.testing.assert_close(mean, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(cv, torch.tensor([0.5, 0.0]))  # population std; CV := 0 where the mean is 0
    _, cv1 = uncertainty_from_samples(torch.tensor([[1.0], [3.0]]), correction=1)
    torch.testing.assert_close(cv1, torch.tensor([2**0.5 / 2]))
    with pytest.raises(ValueError, match="same shape"):
        uncertainty_from_samples([torch.ones(2), torch.ones(3)])
    with pytest.raises(TypeError, match="non-empty sequence of tensors"):
        uncertainty_from_samples([])


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scheduler": object()}, TypeError, "scheduler must be a MONAI DDIMScheduler"),
        ({"num_inference_steps": 0}, ValueError, "num_inference_steps must be >= 1, got 0"),
        ({"num_inference_steps": 1001}, ValueError, r"num_inference_steps must be <= scheduler.num_train_timesteps"),
        ({"num_subsets": 2.0}, TypeError, "num_subsets must be an int >= 1"),
        ({"steps_per_diffusion_step": -1}, ValueError, "steps_per_diffusion_step must be >= 0, got -1"),
        ({"delta": 0.0}, ValueError, "delta must be a finite number > 0, got 0.0"),
        ({"delta": float("nan")}, ValueError, "delta must be a finite number > 0"),
        ({"lambda_rdp": -1e-4}, ValueError, "lambda_rdp must be a finite number >= 0"),
        ({"lambda_dds": "1"}, TypeError, "lambda_dds must be a finite number >= 0"),
        ({"eta": 1.5}, ValueError, "eta must be a finite number >= 0 and <= 1.0, got 1.5"),
        ({"preconditioner": "jacobi"}, ValueError, "preconditioner must be one of"),
        ({"weight_units": "percent"}, ValueError, "weight_units must be one of"),
        ({"negligible_ratio": -1.0}, ValueError, "negligible_ratio must be a finite number >= 0"),
        ({"previous_timestep": "t-1"}, ValueError, "previous_timestep must be one of"),
        ({"gradient_scale": 0}, ValueError, "gradient_scale must be a finite number > 0"),
        ({"prior": object()}, TypeError, "prior must have a gradient"),
        ({"osem_iterations": 0}, ValueError, "osem_iterations must be >= 1"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1, got 0"),
        ({"prior_enabled": 1}, TypeError, "prior_enabled must be a bool"),
        ({"progress": "yes"}, TypeError, "progress must be a bool"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_constructor_argument_checks(kwargs, error, message):
    full = {"scheduler": _scheduler(), **kwargs}
    with pytest.raises(error, match=message):
        PETDDSInferer(**full)


def _call_cases():
    model, y = _pet_problem()
    net = _conv_net()
    ok = {"models": model}
    bad_counts = y.clone()
    bad_counts[0, 0, 0] = -1
    nan_counts = y.clone()
    nan_counts[0, 0, 0] = float("nan")
    return [
        (y[:, :4], net, ok, ValueError, r"inputs must have shape \(3, 8, 6\), got \(3, 4, 6\)"),
        (bad_counts, net, ok, ValueError, "inputs must be >= 0 everywhere"),
        (nan_counts, net, ok, ValueError, "inputs must be finite everywhere"),
        (y, net, {"models": "model"}, TypeError, "models must be a PETForwardModel or a sequence"),
        (y, net, {**ok, "slice_scale": torch.ones(2, dtype=torch.float64)}, ValueError,
         r"slice_scale must have shape \(3,\), got \(2,\)"),
        (y, net, {**ok, "slice_scale": torch.tensor([1.0, 0.0, 1.0])}, ValueError, "slice_scale must be > 0"),
        (y, net, {**ok, "initial_osem": -torch.ones(IMAGE_SHAPE)}, ValueError, "initial_osem must be >= 0"),
        (y, net, {**ok, "generator": 0}, TypeError, "generator must be a torch.Generator"),
        (y, None, ok, TypeError, "network must be callable"),
        (y, lambda x, t: x[:, :, :2], ok, ValueError, "network output must be a tensor of the input's shape"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_call_argument_checks(case):
    inputs, network, kwargs, error, message = _call_cases()[case]
    inferer = PETDDSInferer(scheduler=_scheduler(), num_inference_steps=2, num_subsets=4, steps_per_diffusion_step=1)
    with pytest.raises(error, match=message):
        inferer(inputs, network, **kwargs)


def test_subset_model_list_argument_checks():
    model, y = _pet_problem()
    idx = view_subsets(model.n_views, 2)
    models, data = [model.subset(i) for i in idx], [select_views(y, i) for i in idx]
    inferer = _osem_inferer(num_subsets=2)
    with pytest.raises(ValueError, match="models must hold num_subsets=2 PoissonDataModel, got 1"):
        inferer(data[:1], None, models=models[:1])
    with pytest.raises(ValueError, match=r"inputs must hold one tensor per model \(2\), got 1"):
        inferer(data[:1], None, models=models)
    with pytest.raises(TypeError, match="inputs must be a sequence of subset data tensors"):
        inferer(y, None, models=models)
    with pytest.raises(ValueError, match=r"inputs\[1\] must have shape"):
        inferer([data[0], data[0][:, :2]], None, models=models)
    with pytest.raises(ValueError, match=r"num_subsets \(9\) must be <= the number of sinogram views \(8\)"):
        _osem_inferer(num_subsets=9)(y, None, models=model)
    with pytest.raises(TypeError, match="seeds must be a non-empty sequence"):
        reconstruct_many(inferer, data, None, models=models, seeds=[])


def test_real_unet_and_sinogram_projector_smoke():
    """MONAI DiffusionModelUNet (untrained) + the tiny_3d sinogram projector: the full sampler runs end to end,
    stays finite and non-negative, and is reproducible by seed."""
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.schedulers import DDIMScheduler

    from bundle.data import ellipsoid_head_phantom, simulate_scan
    from bundle.inferers import PETDDSInferer
    from bundle.physics import preset

    geometry = preset("tiny_3d")
    activity, mu = ellipsoid_head_phantom(geometry.image)
    scan = simulate_scan(activity, mu, layout=geometry.layout, image=geometry.image, total_counts=2e5,
                         generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    network = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 8),
                                 attention_levels=(False, False), num_res_blocks=1, norm_num_groups=8).eval()
    inferer = PETDDSInferer(scheduler=DDIMScheduler(num_train_timesteps=1000), num_inference_steps=3,
                            num_subsets=4, steps_per_diffusion_step=1, osem_iterations=1, chunk_size=4)
    with torch.no_grad():
        a = inferer(scan.counts, network, models=scan.model, generator=torch.Generator().manual_seed(1))
        b = inferer(scan.counts, network, models=scan.model, generator=torch.Generator().manual_seed(1))
    assert a.shape == geometry.image.shape
    assert bool(torch.isfinite(a).all()) and float(a.min()) >= 0
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_unet_and_sinogram_projector_on_cuda_matches_cpu():
    """The same sampler on CUDA (numba CUDA projector, UNet on the GPU) agrees with the CPU run."""
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.schedulers import DDIMScheduler

    from bundle.data import ellipsoid_head_phantom, simulate_scan
    from bundle.inferers import PETDDSInferer
    from bundle.physics import (
        GaussianResolution,
        PETForwardModel,
        SinogramProjector,
        attenuation_factors_from_mu_map,
        preset,
    )

    geometry = preset("tiny_3d")
    activity, mu = ellipsoid_head_phantom(geometry.image)
    scan = simulate_scan(activity, mu, layout=geometry.layout, image=geometry.image, total_counts=2e5,
                         generator=torch.Generator().manual_seed(0))

    def model_on(device):
        projector = SinogramProjector(layout=geometry.layout, image=geometry.image)
        return PETForwardModel(
            projector=projector, attenuation_factors=attenuation_factors_from_mu_map(projector, mu.to(device)),
            normalisation=geometry.layout.gap_mask().to(device),
            resolution=GaussianResolution(image_shape=geometry.image.shape, fwhm_mm=4.5,
                                          voxel_size_mm=geometry.image.voxel_size_mm),
            background=scan.background.to(device),
        )

    torch.manual_seed(0)
    network = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 8),
                                 attention_levels=(False, False), num_res_blocks=1, norm_num_groups=8).eval()
    inferer = PETDDSInferer(scheduler=DDIMScheduler(num_train_timesteps=1000), num_inference_steps=3,
                            num_subsets=4, steps_per_diffusion_step=1, osem_iterations=1, chunk_size=4)
    with torch.no_grad():
        cpu = inferer(scan.counts, network, models=model_on("cpu"), generator=torch.Generator().manual_seed(1))
        gpu = inferer(scan.counts.cuda(), network.cuda(), models=model_on("cuda"),
                      generator=torch.Generator().manual_seed(1))  # same CPU generator: same x_T and noise
    assert gpu.device.type == "cuda" and bool(torch.isfinite(gpu).all())
    # float32 on two devices (and GPU atomics in the back projection): equal up to rounding
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3 * float(cpu.abs().max()))


# ---------------------------------------------------------------- run-time split (network / projector / rest)
class _SlowAdjoint(MatrixOperator):
    """MatrixOperator whose adjoint (back projection) takes at least ``pause`` seconds."""

    pause = 0.004

    def _adjoint(self, y):
        import time

        time.sleep(self.pause)
        return super()._adjoint(y)


class _SlowProjector(FakeProjector):
    def view_subset(self, view_indices: torch.Tensor) -> MatrixOperator:
        fast = super().view_subset(view_indices)
        return _SlowAdjoint(fast.matrix, in_shape=fast.in_shape, out_shape=fast.out_shape)


class _SlowNet(torch.nn.Module):
    pause = 0.006

    def forward(self, x, t):
        import time

        time.sleep(self.pause)
        return torch.zeros_like(x)


@pytest.mark.parametrize("steps_per_diffusion_step", [0, 2])
def test_timings_split_network_projector_and_rest(steps_per_diffusion_step):
    model = PETForwardModel(projector=_SlowProjector(0), background=torch.full(SINO_SHAPE, 0.5, dtype=torch.float64))
    y = torch.poisson(model.expectation(torch.full(IMAGE_SHAPE, 20.0, dtype=torch.float64)), generator=_gen(3))
    inferer = PETDDSInferer(scheduler=_scheduler(), num_inference_steps=3, num_subsets=4,
                            steps_per_diffusion_step=steps_per_diffusion_step, chunk_size=8)
    assert inferer.timings == {}
    inferer(y, _SlowNet(), models=model, slice_scale=torch.ones(IMAGE_SHAPE[0], dtype=torch.float64))
    t = inferer.timings
    assert set(t) == {"network_s", "projector_s", "osem_s", "other_s", "total_s"}
    assert t["network_s"] >= 3 * _SlowNet.pause  # one batch of 3 slices per diffusion step, 3 steps
    assert t["osem_s"] == 0.0  # slice scale given: no OSEM inside the call
    if steps_per_diffusion_step == 0:
        assert t["projector_s"] == 0.0
    else:
        assert t["projector_s"] >= 3 * steps_per_diffusion_step * _SlowAdjoint.pause  # one adjoint per DC step
    assert t["other_s"] >= 4 * _SlowAdjoint.pause  # the 4 subset sensitivities A_kᵀ1 are set-up, not DC
    total = t["network_s"] + t["projector_s"] + t["osem_s"] + t["other_s"]
    assert abs(total - t["total_s"]) < 1e-9


class GaussianPrediction(GaussianEps):
    """The same Gaussian prior's exact x̂0 (``sample``: E[x0 | x_t] = m + γ_t s² (x_t − γ_t m) / (γ_t² s² + ν_t²)) or
    v (``v_prediction``: E[v | x_t] = γ_t E[ε | x_t] − ν_t E[x0 | x_t])."""

    def __init__(self, scheduler: DDIMScheduler, mean: float, std: float, kind: str) -> None:
        super().__init__(scheduler, mean, std)
        self.kind = kind

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t].to(x.dtype).reshape(-1, 1, 1, 1)
        gamma, nu = a.sqrt(), (1 - a).sqrt()
        x0 = self.mean + gamma * self.std**2 * (x - gamma * self.mean) / (gamma**2 * self.std**2 + nu**2)
        return x0 if self.kind == "sample" else gamma * super().forward(x, t) - nu * x0


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_prediction_types_reconstruct_as_epsilon_with_the_exact_denoiser(kind, eta):
    shape = (2, 4, 4)
    counts = torch.poisson(torch.full(shape, 10.0, dtype=torch.float64), generator=_gen(7))
    model = PoissonDataModel(operator=IdentityOperator(shape), background=torch.full(shape, 0.1, dtype=torch.float64))
    results = {}
    for prediction in ("epsilon", kind):
        scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, prediction_type=prediction)
        inferer = PETDDSInferer(scheduler=scheduler, num_inference_steps=10, num_subsets=1,
                                steps_per_diffusion_step=2, eta=eta)
        net = GaussianEps(scheduler, 5.0, 0.5) if prediction == "epsilon" else GaussianPrediction(scheduler, 5.0, 0.5,
                                                                                                   kind)
        results[prediction] = inferer([counts], net, models=[model], slice_scale=torch.ones(2, dtype=torch.float64),
                                      generator=_gen(1))
    torch.testing.assert_close(results[kind], results["epsilon"], rtol=1e-9, atol=1e-9)
