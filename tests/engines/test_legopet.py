"""LegoPETPrepareBatch: condition dropout with an explicit generator, frozen PnPNet features, trainer integration."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from monai.networks.schedulers import DDPMScheduler

from bundle.engines import LegoPETPrepareBatch
from bundle.inferers import LegoPETTrainingInferer
from bundle.networks import LegoPETDenoiser, PnPNet

LAYOUT = {
    "channels": (8, 16, 16, 16),
    "num_res_blocks": 1,
    "attention_levels": (False, False, False, True),
    "norm_num_groups": 8,
    "num_head_channels": 8,
}
BATCH = 6


@pytest.fixture(scope="module")
def pnpnet() -> PnPNet:
    torch.manual_seed(0)
    return PnPNet(**LAYOUT)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "reference": torch.rand(BATCH, 1, 32, 32, generator=g),
        "sinogram": torch.rand(BATCH, 1, 32, 32, generator=g) + 0.5,  # strictly positive: zero means dropped
    }


def _prepare(pnpnet: PnPNet | None, p: float, seed: int = 0) -> LegoPETPrepareBatch:
    return LegoPETPrepareBatch(
        num_train_timesteps=1000, pnpnet=pnpnet, drop_probability=p, generator=torch.Generator().manual_seed(seed)
    )


def test_p_zero_keeps_everything(pnpnet):
    batch = _batch()
    images, target, args, kwargs = _prepare(pnpnet, 0.0)(batch)
    assert args == () and torch.equal(images, batch["reference"]) and torch.equal(target, kwargs["noise"])
    assert set(kwargs) == {"noise", "timesteps", "condition", "down_residuals", "mid_residual"}
    assert kwargs["timesteps"].dtype == torch.long and kwargs["timesteps"].shape == (BATCH,)
    assert torch.equal(kwargs["condition"], batch["sinogram"])
    with torch.no_grad():
        down, mid = pnpnet.features(batch["sinogram"])
    for a, b in zip(kwargs["down_residuals"], down, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(kwargs["mid_residual"], mid)
    assert not any(r.requires_grad for r in (*kwargs["down_residuals"], kwargs["mid_residual"]))


def test_p_one_replaces_everything(pnpnet):
    _, _, _, kwargs = _prepare(pnpnet, 1.0)(_batch())
    for tensor in (kwargs["condition"], *kwargs["down_residuals"], kwargs["mid_residual"]):
        assert not bool(tensor.any())


def test_same_seed_same_mask_and_dropped_samples_are_exactly_null(pnpnet):
    batch = _batch()
    first = _prepare(pnpnet, 0.5, seed=1)(batch)[3]
    second = _prepare(pnpnet, 0.5, seed=1)(batch)[3]
    for key in ("noise", "timesteps", "condition", "mid_residual"):
        assert torch.equal(first[key], second[key])
    # the mask is the first draw of the generator
    expected = torch.rand(BATCH, generator=torch.Generator().manual_seed(1)) < 0.5
    assert 0 < int(expected.sum()) < BATCH, "pick a seed that drops some but not all samples"
    dropped = (first["condition"] == 0).flatten(1).all(dim=1)
    assert torch.equal(dropped, expected)
    with torch.no_grad():
        down, mid = pnpnet.features(batch["sinogram"])
    for got, full in zip((*first["down_residuals"], first["mid_residual"]), (*down, mid), strict=True):
        assert not bool(got[expected].any())
        assert torch.equal(got[~expected], full[~expected])
    assert torch.equal(first["condition"][~expected], batch["sinogram"][~expected])
    other = _prepare(pnpnet, 0.5, seed=4)
    masks = [other.get_drop_mask(BATCH) for _ in range(3)]
    assert any(not torch.equal(m, expected) for m in masks)


def test_cdpm_batches_have_no_features():
    _, _, _, kwargs = _prepare(None, 1.0)(_batch())
    assert set(kwargs) == {"noise", "timesteps", "condition"}
    assert not bool(kwargs["condition"].any())


def test_one_supervised_trainer_iteration(pnpnet):
    torch.manual_seed(0)
    denoiser = LegoPETDenoiser(**LAYOUT)
    before = [p.detach().clone() for p in denoiser.parameters()]
    pnp_before = [p.detach().clone() for p in pnpnet.parameters()]
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=[_batch(1)],
        network=denoiser,
        optimizer=torch.optim.Adam(denoiser.parameters(), lr=1e-3),
        loss_function=torch.nn.MSELoss(),
        inferer=LegoPETTrainingInferer(scheduler=scheduler),
        prepare_batch=_prepare(pnpnet, 0.5, seed=3),
    )
    trainer.run()
    assert torch.isfinite(torch.as_tensor(trainer.state.output[0]["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, denoiser.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(pnp_before, pnpnet.parameters(), strict=True))


def test_argument_errors(pnpnet):
    with pytest.raises(ValueError, match=r"drop_probability must be in \[0, 1\], got 1.5"):
        LegoPETPrepareBatch(drop_probability=1.5)
    with pytest.raises(TypeError, match="pnpnet must be a PnPNet or None, got Linear"):
        LegoPETPrepareBatch(pnpnet=torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator or None, got int"):
        LegoPETPrepareBatch(generator=0)
    with pytest.raises(ValueError, match="num_train_timesteps must be >= 1, got 0"):
        LegoPETPrepareBatch(num_train_timesteps=0)
    prepare = _prepare(pnpnet, 0.1)
    batch = _batch()
    with pytest.raises(KeyError, match="batchdata has no 'sinogram' entry"):
        prepare({"reference": batch["reference"]})
    with pytest.raises(ValueError, match=r"batchdata\['sinogram'\] must have the image's shape \(6, 1, 32, 32\)"):
        prepare({**batch, "sinogram": batch["sinogram"][..., :16]})
    with pytest.raises(TypeError, match="batchdata must be a mapping"):
        prepare([batch["reference"], batch["sinogram"]])


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_target_follows_the_scheduler_prediction_type(prediction):
    """ε, x_0 or v = sqrt(ᾱ_t) ε − sqrt(1 − ᾱ_t) x_0 (Salimans & Ho 2022), ᾱ_t = cumulative product of 1 − β."""
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction)
    prepare = LegoPETPrepareBatch(pnpnet=None, drop_probability=0.0, generator=torch.Generator().manual_seed(0),
                                  scheduler=scheduler)
    x0, target, _, kwargs = prepare(_batch())
    abar = torch.cumprod(1 - scheduler.betas.double(), 0)[kwargs["timesteps"]].reshape(-1, 1, 1, 1)
    expected = {"epsilon": kwargs["noise"], "sample": x0,
                "v_prediction": (abar.sqrt() * kwargs["noise"] - (1 - abar).sqrt() * x0).float()}[prediction]
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(LegoPETPrepareBatch(pnpnet=None, drop_probability=0.0)(_batch())[1],
                       LegoPETPrepareBatch(pnpnet=None, drop_probability=0.0, scheduler=DDPMScheduler())(_batch())[1])


def test_standardisation_and_image_condition_reach_the_batch(pnpnet):
    """x_0 is standardised before noise and target (the v of the standardised x_0); pnpnet_image stacks the
    standardised PnPNet image with s, and a dropped sample has the whole stack zeroed."""
    from bundle.transforms.scaling import Standardisation

    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    scaling = Standardisation(mean=0.1, std=0.2)
    prepare = LegoPETPrepareBatch(pnpnet=pnpnet, drop_probability=0.5, generator=torch.Generator().manual_seed(1),
                                  scheduler=scheduler, standardisation=scaling, pnpnet_image=True)
    batch = _batch()
    x0, target, _, kwargs = prepare(batch)
    torch.testing.assert_close(x0, (batch["reference"] - 0.1) / 0.2)
    abar = scheduler.alphas_cumprod[kwargs["timesteps"]].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(target, abar.sqrt() * kwargs["noise"] - (1 - abar).sqrt() * x0)
    stack = kwargs["condition"]
    assert stack.shape == (BATCH, 2, 32, 32)
    kept = stack[:, 0].flatten(1).abs().sum(1) > 0
    assert 0 < int(kept.sum()) < BATCH  # p_dp = 0.5 with this seed drops some
    with torch.no_grad():
        image = (pnpnet.eval()(batch["sinogram"]) - 0.1) / 0.2
    torch.testing.assert_close(stack[kept, 1:], image[kept])
    assert not bool(stack[~kept].any())
    with pytest.raises(ValueError, match="pnpnet must be given for pnpnet_image=True"):
        LegoPETPrepareBatch(pnpnet=None, pnpnet_image=True)
