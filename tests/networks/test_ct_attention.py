from __future__ import annotations

import math

import pytest
import torch

from bundle.diffusion.ddim import PredictionType
from bundle.networks import CTGuidedCrossAttention, CTGuidedLatentDenoiser

SPATIAL = (2, 3, 4)
N = math.prod(SPATIAL)


def _attention(seed: int = 0, **kwargs) -> CTGuidedCrossAttention:
    torch.manual_seed(seed)
    args = {"pet_channels": 6, "ct_channels": 3, "num_heads": 2, "head_channels": 4, "window": 1}
    args.update(kwargs)
    module = CTGuidedCrossAttention(**args)
    with torch.no_grad():  # non-zero output projection and a non-trivial bias table
        torch.nn.init.normal_(module.proj_out.weight)
        torch.nn.init.normal_(module.relative_bias)
    return module.double()


def _volumes(seed: int, *, batch: int = 2, pet_channels: int = 6, ct_channels: int = 3, spatial=SPATIAL):
    g = torch.Generator().manual_seed(seed)
    pet = torch.randn(batch, pet_channels, *spatial, generator=g, dtype=torch.float64)
    ct = torch.randn(batch, ct_channels, *spatial, generator=g, dtype=torch.float64)
    return pet, ct


def _naive(module: CTGuidedCrossAttention, pet: torch.Tensor, ct: torch.Tensor) -> torch.Tensor:
    """Eq. (2) written out token by token (oracle)."""
    b, _, d, h, w = pet.shape
    heads, hc, win = module.num_heads, module.head_channels, module.window
    q = module.conv_q(ct).reshape(b, heads, hc, -1)
    k = module.conv_k(ct).reshape(b, heads, hc, -1)
    v = module.conv_v(pet).reshape(b, heads, hc, -1)
    coords = [(z, y, x) for z in range(d) for y in range(h) for x in range(w)]
    mixed = torch.zeros_like(v)
    for bi in range(b):
        for hi in range(heads):
            for i, pi in enumerate(coords):
                logits = []
                for j, pj in enumerate(coords):
                    off = [max(-win, min(win, a - c)) + win for a, c in zip(pi, pj, strict=True)]
                    bias = module.relative_bias[hi, off[0], off[1], off[2]]
                    logits.append(q[bi, hi, :, i] @ k[bi, hi, :, j] / math.sqrt(hc) + bias)
                weights = torch.softmax(torch.stack(logits), dim=0)
                mixed[bi, hi, :, i] = v[bi, hi] @ weights
    return pet + module.proj_out(mixed.reshape(b, heads * hc, d, h, w))


def test_attention_matches_equation_2_token_by_token():
    module = _attention()
    pet, ct = _volumes(1)
    out, weights = module(pet, ct, return_weights=True)
    assert out.shape == pet.shape
    assert weights.shape == (2, 2, N, N)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, N, dtype=torch.float64))
    with torch.no_grad():
        torch.testing.assert_close(out, _naive(module, pet, ct))


def test_queries_and_keys_come_from_ct_values_from_pet():
    module = _attention()
    pet, ct = _volumes(2)
    pet2, ct2 = _volumes(3)
    out, weights = module(pet, ct, return_weights=True)
    out_pet2, weights_pet2 = module(pet2, ct, return_weights=True)
    # PET changes the values only: the attention pattern is exactly the same
    assert torch.equal(weights, weights_pet2)
    torch.testing.assert_close(module.attention_weights(ct), weights)
    assert not torch.allclose(out, out_pet2)
    # CT changes the pattern
    _, weights_ct2 = module(pet, ct2, return_weights=True)
    assert not torch.allclose(weights, weights_ct2)


def test_position_bias_is_a_clipped_relative_offset_table():
    module = _attention(window=1)
    bias = module.position_bias(SPATIAL)
    assert bias.shape == (2, N, N)
    coords = [(z, y, x) for z in range(SPATIAL[0]) for y in range(SPATIAL[1]) for x in range(SPATIAL[2])]
    for i, pi in enumerate(coords):
        for j, pj in enumerate(coords):
            off = [max(-1, min(1, a - c)) + 1 for a, c in zip(pi, pj, strict=True)]
            assert torch.equal(bias[:, i, j], module.relative_bias[:, off[0], off[1], off[2]])
    assert module.relative_bias.numel() == 2 * 3**3  # num_heads · (2w+1)³, independent of the grid


def test_zero_initialised_output_projection_makes_the_module_the_identity():
    torch.manual_seed(0)
    module = CTGuidedCrossAttention(pet_channels=4, ct_channels=2)
    pet, ct = _volumes(4, pet_channels=4, ct_channels=2)
    assert torch.equal(module.double()(pet, ct), pet)


def test_gradients_reach_every_parameter():
    module = _attention()
    pet, ct = _volumes(5)
    module(pet, ct).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_attention_argument_errors():
    module = _attention()
    pet, ct = _volumes(6)
    with pytest.raises(ValueError, match=r"ct is required"):
        module(pet, None)
    _, ct_small = _volumes(6, spatial=(2, 3, 2))
    with pytest.raises(ValueError, match=r"pet \(2, 6, 2, 3, 4\) and ct \(2, 3, 2, 3, 2\)"):
        module(pet, ct_small)
    with pytest.raises(ValueError, match=r"same batch"):
        module(pet, ct[:1])
    with pytest.raises(ValueError, match=r"ct must have 3 channels"):
        module(pet, pet)
    with pytest.raises(ValueError, match=r"pet must have shape \(B, C, D, H, W\)"):
        module(pet[0], ct)
    with pytest.raises(TypeError, match=r"pet must be a torch.Tensor"):
        module(pet.numpy(), ct)
    with pytest.raises(TypeError, match=r"ct must be floating-point"):
        module(pet, ct.long())
    small = _attention(max_tokens=N - 1)
    with pytest.raises(ValueError, match=rf"{N} tokens exceeds max_tokens={N - 1}"):
        small(pet, ct)
    with pytest.raises(ValueError, match=r"pet_channels must be >= 1, got 0"):
        CTGuidedCrossAttention(pet_channels=0)
    with pytest.raises(TypeError, match=r"window must be an int >= 0"):
        CTGuidedCrossAttention(pet_channels=2, window=1.5)
    with pytest.raises(TypeError):
        CTGuidedCrossAttention(2)  # keyword-only


LAYOUT = {
    "latent_channels": 2,
    "ct_channels": 3,
    "channels": (8, 16),
    "num_res_blocks": 1,
    "attention_levels": (True, True),
    "norm_num_groups": 4,
    "num_head_channels": 8,
    "ct_head_channels": 8,
    "ct_window": 2,
}
LATENT = (2, 2, 8, 8, 8)


def _denoiser(*, use_ct: bool, seed: int = 0, **kwargs) -> CTGuidedLatentDenoiser:
    torch.manual_seed(seed)  # the U-Net is built first, so equal seeds give equal U-Net weights
    model = CTGuidedLatentDenoiser(**{**LAYOUT, **kwargs}, use_ct=use_ct).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # MONAI zero-initialises the U-Net's last convolution: make the output non-trivial
        for p in model.unet.out.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _latents(seed: int):
    g = torch.Generator().manual_seed(seed)
    z_t = torch.randn(*LATENT, generator=g)
    z_ct = torch.randn(LATENT[0], 3, *LATENT[2:], generator=g)
    return z_t, torch.tensor([0, 399]), z_ct


def _randomise_output_projections(model: CTGuidedLatentDenoiser) -> None:
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for module in model.ct_attention.values():
            module.proj_out.weight.copy_(torch.randn(module.proj_out.weight.shape, generator=g))


def test_sites_and_default_prediction():
    model = _denoiser(use_ct=True)
    assert model.ct_sites() == {"down0": (8, 0), "down1": (8, 1), "mid": (16, 1), "up0": (16, 0)}
    assert set(model.ct_attention) == set(model.ct_sites())
    assert model.prediction is PredictionType.SAMPLE
    assert _denoiser(use_ct=True, prediction="epsilon").prediction is PredictionType.EPSILON
    assert set(_denoiser(use_ct=True, attention_levels=(False, True)).ct_sites()) == {"down1", "mid"}


def test_composed_forward_equals_monai_forward_without_ct():
    model = _denoiser(use_ct=False)
    z_t, t, _ = _latents(0)
    with torch.no_grad():
        out = model(z_t, t)
        assert out.shape == LATENT
        assert float(out.abs().max()) > 0
        torch.testing.assert_close(out, model.unet(z_t, t), rtol=0, atol=0)


def test_use_ct_false_ignores_ct_entirely():
    model = _denoiser(use_ct=False)
    z_t, t, z_ct = _latents(1)
    with torch.no_grad():
        ref = model(z_t, t)
        assert torch.equal(model(z_t, t, z_ct), ref)
        assert torch.equal(model(z_t, t, torch.zeros(1, 7, 2, 2, 2)), ref)  # not even checked
    assert model.ct_attention is None


def test_ct_acts_only_through_the_attention_path():
    plain = _denoiser(use_ct=False)
    model = _denoiser(use_ct=True)
    z_t, t, z_ct = _latents(2)
    _, _, other_ct = _latents(3)
    with torch.no_grad():
        ref = plain(z_t, t)
        # zero output projections (the initial state): the CT has no effect at all
        assert torch.equal(model(z_t, t, z_ct), ref)
        assert torch.equal(model(z_t, t, torch.zeros_like(z_ct)), ref)
        # non-zero output projections: the CT matters
        _randomise_output_projections(model)
        out = model(z_t, t, z_ct)
        assert not torch.allclose(out, ref)
        assert not torch.allclose(model(z_t, t, other_ct), out)
        # ... and only through that path: zero the projections again and the U-Net output is back
        for module in model.ct_attention.values():
            module.proj_out.weight.zero_()
        assert torch.equal(model(z_t, t, other_ct), ref)


def test_ct_guided_denoiser_trains_end_to_end():
    model = _denoiser(use_ct=True).train()
    _randomise_output_projections(model)
    z_t, t, z_ct = _latents(4)
    model(z_t, t, z_ct).square().mean().backward()
    for name, module in model.ct_attention.items():
        assert bool(module.conv_q.weight.grad.abs().sum() > 0), name
        assert bool(module.conv_v.weight.grad.abs().sum() > 0), name


def test_parameter_difference_is_the_attention_modules():
    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    with_ct, without = _denoiser(use_ct=True), _denoiser(use_ct=False)
    assert count(with_ct) - count(without) == count(with_ct.ct_attention) > 0
    assert count(with_ct.unet) == count(without.unet)


def test_denoiser_argument_errors():
    model = _denoiser(use_ct=True)
    z_t, t, z_ct = _latents(5)
    with pytest.raises(ValueError, match=r"z_ct is required when use_ct=True"):
        model(z_t, t)
    with pytest.raises(ValueError, match=r"z_t \(2, 2, 8, 8, 8\) and z_ct \(2, 3, 4, 4, 4\)"):
        model(z_t, t, z_ct[..., :4, :4, :4])
    with pytest.raises(ValueError, match=r"z_ct must have 3 channels"):
        model(z_t, t, z_t)
    with pytest.raises(ValueError, match=r"divisible by 2\^\(levels - 1\) = 2 for this U-Net, got \(8, 8, 7\)"):
        model(z_t[..., :7], t, z_ct[..., :7])
    big = _denoiser(use_ct=True, ct_max_tokens=100)
    with pytest.raises(ValueError, match=r"512 tokens exceeds max_tokens=100"):
        big(z_t, t, z_ct)
    with pytest.raises(ValueError, match=r"prediction must be one of \['epsilon', 'v_prediction', 'sample'\], got 'v'"):
        _denoiser(use_ct=True, prediction="v")
    with pytest.raises(ValueError, match=r"attention_levels must have one entry per level \(2\)"):
        _denoiser(use_ct=True, attention_levels=(True,))
    with pytest.raises(TypeError, match=r"use_ct must be a bool"):
        CTGuidedLatentDenoiser(**LAYOUT, use_ct=1)


def test_residual_denoiser_adds_the_unet_correction_to_its_input():
    """ẑ0 = z_t + U-Net(z_t, t, z_CT): the same U-Net weights with and without ``residual`` differ by exactly z_t, and
    an untrained residual denoiser (MONAI's zero-initialised last convolution) is the identity."""
    z_t, t, z_ct = _latents(2)
    plain, residual = _denoiser(use_ct=True, seed=4), _denoiser(use_ct=True, seed=4, residual=True)
    with torch.no_grad():
        torch.testing.assert_close(residual(z_t, t, z_ct), z_t + plain(z_t, t, z_ct))
        torch.manual_seed(5)
        untrained = CTGuidedLatentDenoiser(**LAYOUT, use_ct=True, residual=True).eval()
        assert torch.equal(untrained(z_t, t, z_ct), z_t)
    with pytest.raises(ValueError, match=r"residual=True.*prediction='sample'"):
        CTGuidedLatentDenoiser(**LAYOUT, residual=True, prediction="epsilon")
    with pytest.raises(TypeError, match="residual must be a bool"):
        CTGuidedLatentDenoiser(**LAYOUT, residual=1)
