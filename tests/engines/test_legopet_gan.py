"""The conditional-GAN iteration of the LegoPET baselines (bundle.engines.legopet_gan) against independent truths:
a hand-written Adam step of L1 regression, closed-form adversarial losses on known logits, the separation of the
generator and discriminator steps, and the sinogram channel of the conditional discriminator."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from monai.engines.utils import IterationEvents
from monai.networks.nets import PatchDiscriminator, UNet

from bundle.engines import ConditionalGANIteration

SHAPE = (2, 1, 16, 16)


def _generator() -> UNet:
    torch.manual_seed(0)
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), strides=(2,), num_res_units=0,
                norm="batch", act=("LEAKYRELU", {"negative_slope": 0.2}))


def _discriminator() -> PatchDiscriminator:
    torch.manual_seed(1)
    return PatchDiscriminator(spatial_dims=2, channels=4, in_channels=2, num_layers_d=2)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(SHAPE, generator=g), torch.rand(SHAPE, generator=g)


def _iteration(discriminator: torch.nn.Module | None = None, lr: float = 1e-2, **kwargs) -> ConditionalGANIteration:
    d = _discriminator() if discriminator is None else discriminator
    return ConditionalGANIteration(discriminator=d, d_optimizer=torch.optim.Adam(d.parameters(), lr=lr), **kwargs)


def _engine(network: torch.nn.Module, optimizer: torch.optim.Optimizer, batch) -> SimpleNamespace:
    """The attributes of a MONAI SupervisedTrainer the iteration uses; ``fired`` records the events."""
    fired = []
    return SimpleNamespace(network=network, optimizer=optimizer, state=SimpleNamespace(device=torch.device("cpu")),
                           non_blocking=False, to_kwargs={}, fired=fired, fire_event=fired.append,
                           prepare_batch=lambda data, device=None, non_blocking=False, **kw: batch)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_without_adversarial_term_the_step_is_a_plain_l1_adam_step():
    """w_adv = 0: θ' = θ − lr · g / (|g| + eps) (Adam's first step, bias-corrected) with g = ∇ w_L1 mean|G(s) − x|,
    computed on a copy of G; D is neither evaluated nor trained."""
    s, x = _batch()
    g_net, lr, eps = _generator(), 1e-3, 1e-8
    by_hand = copy.deepcopy(g_net)
    iteration = _iteration(adversarial_weight=0.0, l1_weight=2.0)
    d_before = _params(iteration.discriminator)
    engine = _engine(g_net, torch.optim.Adam(g_net.parameters(), lr=lr, eps=eps), (s, x))
    out = iteration(engine, {"unused": 0})
    assert engine.fired == [IterationEvents.MODEL_COMPLETED] and out is engine.state.output

    by_hand.train()
    l1 = (by_hand(s) - x).abs().mean()
    (2.0 * l1).backward()
    with torch.no_grad():
        expected = {k: p - lr * p.grad / (p.grad.abs() + eps) for k, p in by_hand.named_parameters()}
    for name, value in g_net.named_parameters():
        torch.testing.assert_close(value.detach(), expected[name], rtol=1e-5, atol=1e-7)
    assert float(out["loss"]) == pytest.approx(2.0 * float(l1.detach()), rel=1e-6)
    assert float(out["l1"]) == pytest.approx(float(l1.detach()), rel=1e-6)
    assert float(out["g_adv"]) == float(out["d_loss"]) == 0.0
    assert all(torch.equal(v, d_before[k]) for k, v in iteration.discriminator.named_parameters())
    assert all(p.grad is None for p in iteration.discriminator.parameters())
    assert set(out) == {"image", "label", "pred", "loss", "l1", "g_adv", "d_loss", "d_real", "d_fake"}
    assert out["pred"].shape == SHAPE and not out["pred"].requires_grad


def test_discriminator_step_lowers_its_loss_and_leaves_the_generator_alone():
    s, x = _batch()
    g_net = _generator()
    g_before = _params(g_net)
    fake = g_net(s)  # still attached to G's graph: the step must detach it
    iteration = _iteration()
    losses = [float(iteration.discriminator_step(s, x, fake)["d_loss"]) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.grad is None for p in g_net.parameters())
    assert all(torch.equal(v, g_before[k]) for k, v in g_net.named_parameters())


def test_generator_step_updates_only_the_generator():
    """Adversarial term only (w_L1 = 0): G moves (the gradient came through D), D's parameters keep their values,
    get no gradient and stay trainable afterwards."""
    s, x = _batch()
    g_net = _generator()
    g_before = _params(g_net)
    iteration = _iteration(l1_weight=0.0)
    d_before = _params(iteration.discriminator)
    _, terms = iteration.generator_step(g_net, torch.optim.Adam(g_net.parameters(), lr=1e-3), s, x)
    assert float(terms["loss"]) == pytest.approx(float(terms["g_adv"])) and float(terms["g_adv"]) > 0
    assert any(not torch.equal(v, g_before[k]) for k, v in g_net.named_parameters())
    for name, p in iteration.discriminator.named_parameters():
        assert torch.equal(p.detach(), d_before[name]) and p.grad is None and p.requires_grad, name


def test_discriminator_is_conditioned_on_the_sinogram():
    s, x = _batch()
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, pair: torch.Tensor) -> list[torch.Tensor]:
            seen.append(pair.detach().clone())
            return [pair, pair[:, :1] * self.w]  # PatchDiscriminator-style list: logits last

    logits = _iteration(Spy()).logits(s, x)
    assert seen[0].shape == (2, 2, 16, 16)
    assert torch.equal(seen[0][:, 0:1], s) and torch.equal(seen[0][:, 1:2], x)
    assert torch.equal(logits, s)  # the last entry of a list output
    patch = _iteration()
    assert not torch.allclose(patch.logits(s, x), patch.logits(s.flip(-1), x))  # changing s changes D's output


class _ImageLogits(torch.nn.Module):
    """D with logits = the image channel (so the logits of a pair are known exactly)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return pair[:, 1:2] * self.w


class _Scale(torch.nn.Module):
    """G(s) = a · s."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return s * self.a


@pytest.mark.parametrize("criterion", ["bce", "least_squares"])
def test_adversarial_losses_match_the_closed_forms(criterion):
    g = torch.Generator().manual_seed(3)
    s, x = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g) * 2
    a = 0.7
    fake = s * a
    if criterion == "bce":  # −log σ(l) for real, −log(1 − σ(l)) = −log σ(−l) for fake; G: non-saturating
        real_term, fake_term, g_adv = -F.logsigmoid(x).mean(), -F.logsigmoid(-fake).mean(), -F.logsigmoid(fake).mean()
    else:  # LSGAN on raw logits
        real_term, fake_term, g_adv = ((x - 1) ** 2).mean(), (fake**2).mean(), ((fake - 1) ** 2).mean()
    l1 = (fake - x).abs().mean()

    iteration = _iteration(_ImageLogits(), criterion=criterion, adversarial_weight=0.5, l1_weight=3.0)
    net = _Scale(a)
    _, g_terms = iteration.generator_step(net, torch.optim.SGD(net.parameters(), lr=0.0), s, x)
    torch.testing.assert_close(g_terms["g_adv"], g_adv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_terms["l1"], l1)
    torch.testing.assert_close(g_terms["loss"], 0.5 * g_adv + 3.0 * l1, rtol=1e-5, atol=1e-6)
    d_terms = iteration.discriminator_step(s, x, fake)
    torch.testing.assert_close(d_terms["d_real"], real_term, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d_terms["d_fake"], fake_term, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d_terms["d_loss"], 0.5 * (real_term + fake_term), rtol=1e-5, atol=1e-6)


def test_full_iteration_trains_both_networks():
    s, x = _batch()
    g_net = _generator()
    g_before = _params(g_net)
    iteration = _iteration()
    d_before = _params(iteration.discriminator)
    out = iteration(_engine(g_net, torch.optim.Adam(g_net.parameters(), lr=1e-3), (s, x)), {"unused": 0})
    assert float(out["loss"]) == pytest.approx(float(out["g_adv"]) + 100.0 * float(out["l1"]), rel=1e-5)
    assert float(out["d_loss"]) == pytest.approx(0.5 * (float(out["d_real"]) + float(out["d_fake"])), rel=1e-6)
    assert torch.equal(out["image"], s) and torch.equal(out["label"], x)
    assert any(not torch.equal(v, g_before[k]) for k, v in g_net.named_parameters())
    assert any(not torch.equal(v, d_before[k]) for k, v in iteration.discriminator.named_parameters())


def test_bad_arguments_are_rejected():
    d = _discriminator()
    opt = torch.optim.Adam(d.parameters())
    with pytest.raises(TypeError, match=r"discriminator must be a torch\.nn\.Module"):
        ConditionalGANIteration(discriminator=lambda x: x, d_optimizer=opt)
    with pytest.raises(TypeError, match=r"d_optimizer must be a torch\.optim\.Optimizer"):
        ConditionalGANIteration(discriminator=d, d_optimizer=None)
    with pytest.raises(ValueError, match="d_optimizer must optimise the discriminator's parameters only"):
        ConditionalGANIteration(discriminator=d, d_optimizer=torch.optim.Adam(_generator().parameters()))
    with pytest.raises(ValueError, match=r"criterion must be one of .*'wgan'"):
        ConditionalGANIteration(discriminator=d, d_optimizer=opt, criterion="wgan")
    with pytest.raises(ValueError, match="l1_weight must be finite and >= 0, got -1"):
        ConditionalGANIteration(discriminator=d, d_optimizer=opt, l1_weight=-1)
    with pytest.raises(ValueError, match="adversarial_weight must be finite"):
        ConditionalGANIteration(discriminator=d, d_optimizer=opt, adversarial_weight=float("nan"))
    with pytest.raises(TypeError, match="adversarial_weight must be a real number"):
        ConditionalGANIteration(discriminator=d, d_optimizer=opt, adversarial_weight=True)
    with pytest.raises(ValueError, match="both 0"):
        ConditionalGANIteration(discriminator=d, d_optimizer=opt, adversarial_weight=0, l1_weight=0)
    iteration = ConditionalGANIteration(discriminator=d, d_optimizer=opt)
    s, x = _batch()
    with pytest.raises(ValueError, match="sinogram and image must be on one padded grid"):
        iteration.logits(s, x[..., :8])
    with pytest.raises(ValueError, match=r"image must be a \(B, 1, H, W\) tensor"):
        iteration.logits(s, x[:, 0])
    with pytest.raises(ValueError, match="prepare_batch must return \\(sinogram, reference\\)"):
        iteration(_engine(_generator(), torch.optim.Adam(_generator().parameters()), (s, x, x)), {})
    with pytest.raises(ValueError, match="batchdata must be a training batch"):
        iteration(_engine(_generator(), torch.optim.Adam(_generator().parameters()), (s, x)), None)
