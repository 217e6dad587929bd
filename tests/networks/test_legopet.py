"""LegoPET denoiser and PnPNet: feature shapes, parameter counts, feature injection, null condition, argument checks."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from bundle.networks import (
    FeatureInjection,
    FeatureShapes,
    LegoPETCondition,
    LegoPETDenoiser,
    PnPNet,
    null_condition,
)

LAYOUT = {
    "channels": (8, 16, 16, 16),
    "num_res_blocks": 1,
    "attention_levels": (False, False, False, True),
    "norm_num_groups": 8,
    "num_head_channels": 8,
}


def _randomise_output(module: torch.nn.Module, seed: int) -> None:
    """MONAI zero-initialises the last conv; give it weights so outputs depend on the input."""
    g = torch.Generator().manual_seed(seed)
    conv = module.unet.out[2].conv
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.1)


@pytest.fixture(scope="module")
def nets() -> tuple[LegoPETDenoiser, PnPNet]:
    torch.manual_seed(0)
    denoiser, pnpnet = LegoPETDenoiser(**LAYOUT), PnPNet(**LAYOUT)
    _randomise_output(denoiser, 1)
    _randomise_output(pnpnet, 2)
    return denoiser.eval(), pnpnet.eval()


def _inputs(batch: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, size, size, generator=g)
    s = torch.rand(batch, 1, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t, s


def test_feature_shapes_match_denoiser_residuals(nets):
    denoiser, pnpnet = nets
    _, _, s = _inputs()
    down, mid = pnpnet.features(s)
    expected = denoiser.feature_shapes(2, 32, 32)
    assert expected == pnpnet.feature_shapes(2, 32, 32)
    # 1 (conv_in) + 4 levels × 1 resnet + 3 downsamplers
    assert len(down) == len(expected.down) == 8
    assert tuple(tuple(r.shape) for r in down) == expected.down
    assert tuple(mid.shape) == expected.mid == (2, 16, 4, 4)
    x, t, _ = _inputs()
    assert denoiser(x, t, s, down_residuals=down, mid_residual=mid).shape == (2, 1, 32, 32)


def test_features_equal_monai_forward_internals(nets):
    """features() (encoder + middle only) equals what DiffusionModelUNet.forward computes (forward hooks)."""
    _, pnpnet = nets
    _, _, s = _inputs(seed=3)
    captured: list[torch.Tensor] = []
    mid: list[torch.Tensor] = []
    unet = pnpnet.unet
    hooks = [unet.conv_in.register_forward_hook(lambda m, i, o: captured.append(o))]
    hooks += [b.register_forward_hook(lambda m, i, o: captured.extend(o[1])) for b in unet.down_blocks]
    hooks.append(unet.middle_block.register_forward_hook(lambda m, i, o: mid.append(o)))
    try:
        with torch.no_grad():
            image = pnpnet(s)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        down, m = pnpnet.features(s)
    assert image.shape == s.shape
    assert len(down) == len(captured)
    for a, b in zip(down, captured, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(m, mid[0], rtol=0, atol=0)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_parameter_counts():
    cdpm = DiffusionModelUNet(spatial_dims=2, in_channels=2, out_channels=1, **LAYOUT)
    add = LegoPETDenoiser(**LAYOUT)
    adapter = LegoPETDenoiser(**LAYOUT, feature_injection="adapter")
    assert _count(add) == _count(cdpm)
    channels = [shape[1] for shape in add.feature_shapes(1, 32, 32).down] + [LAYOUT["channels"][-1]]
    assert _count(adapter) - _count(add) == sum(c * c for c in channels)
    assert adapter.feature_injection is FeatureInjection.ADAPTER


def test_features_reach_the_denoiser(nets):
    denoiser, pnpnet = nets
    x, t, s = _inputs(seed=4)
    with torch.no_grad():
        down, mid = pnpnet.features(s)
        with_features = denoiser(x, t, s, down_residuals=down, mid_residual=mid)
        zeroed = denoiser(x, t, s, down_residuals=tuple(torch.zeros_like(r) for r in down), mid_residual=mid * 0)
        cdpm = denoiser(x, t, s)
        only_mid = denoiser(x, t, s, down_residuals=tuple(torch.zeros_like(r) for r in down), mid_residual=mid)
    assert not torch.allclose(with_features, cdpm)
    assert not torch.allclose(only_mid, cdpm)
    torch.testing.assert_close(zeroed, cdpm, rtol=0, atol=0)  # ADD: null features = no features, exactly


def test_adapter_starts_as_cdpm_and_then_uses_features(nets):
    _, pnpnet = nets
    torch.manual_seed(0)
    denoiser = LegoPETDenoiser(**LAYOUT, feature_injection=FeatureInjection.ADAPTER).eval()
    _randomise_output(denoiser, 1)
    x, t, s = _inputs(seed=5)
    with torch.no_grad():
        down, mid = pnpnet.features(s)
        torch.testing.assert_close(denoiser(x, t, s, down_residuals=down, mid_residual=mid), denoiser(x, t, s))
        for conv in [*denoiser.down_adapters, denoiser.mid_adapter]:
            conv.weight.fill_(0.05)
        assert not torch.allclose(denoiser(x, t, s, down_residuals=down, mid_residual=mid), denoiser(x, t, s))


def test_null_condition():
    shapes = FeatureShapes(((2, 8, 32, 32), (2, 16, 16, 16)), (2, 16, 4, 4))
    null = null_condition((2, 1, 32, 32), shapes, dtype=torch.float64)
    assert isinstance(null, LegoPETCondition)
    assert null.sinogram.shape == (2, 1, 32, 32) and null.sinogram.dtype == torch.float64
    assert tuple(tuple(r.shape) for r in null.down_residuals) == shapes.down
    assert tuple(null.mid_residual.shape) == shapes.mid
    assert all(not bool(r.any()) for r in (null.sinogram, *null.down_residuals, null.mid_residual))
    cdpm = null_condition((3, 1, 8, 8), None)
    assert cdpm.down_residuals is None and cdpm.mid_residual is None and not bool(cdpm.sinogram.any())


def test_argument_errors(nets):
    denoiser, pnpnet = nets
    x, t, s = _inputs()
    down, mid = pnpnet.features(s)
    with pytest.raises(ValueError, match=r"sinogram must have shape \(B, 1, H, W\), got \(2, 32, 32\)"):
        denoiser(x, t, s[:, 0])
    with pytest.raises(ValueError, match=r"condition stack\) must have shape \(2, 1, 32, 32\).*got \(1, 1, "):
        denoiser(x, t, s[:1])
    with pytest.raises(ValueError, match="must be given together"):
        denoiser(x, t, s, down_residuals=down)
    with pytest.raises(ValueError, match="down_residuals must hold 8 tensors"):
        denoiser(x, t, s, down_residuals=down[:-1], mid_residual=mid)
    with pytest.raises(ValueError, match=r"down_residuals\[1\] must have shape \(2, 8, 32, 32\)"):
        denoiser(x, t, s, down_residuals=(down[0], down[2], *down[2:]), mid_residual=mid)
    with pytest.raises(ValueError, match=r"mid_residual must have shape \(2, 16, 4, 4\)"):
        denoiser(x, t, s, down_residuals=down, mid_residual=mid[:1])
    with pytest.raises(TypeError, match="down_residuals must be a sequence of tensors"):
        denoiser(x, t, s, down_residuals=mid, mid_residual=mid)
    with pytest.raises(ValueError, match=r"divisible by 2\^\(levels - 1\) = 8.*\(20, 20\)"):
        pnpnet.features(torch.zeros(1, 1, 20, 20))
    with pytest.raises(TypeError, match="sinogram must be floating-point"):
        pnpnet(torch.zeros(1, 1, 32, 32, dtype=torch.long))
    with pytest.raises(ValueError, match="feature_injection must be one of \\['add', 'adapter'\\], got 'concat'"):
        LegoPETDenoiser(**LAYOUT, feature_injection="concat")
    with pytest.raises(ValueError, match=r"num_res_blocks must be an int or have one entry per level \(4\)"):
        PnPNet(**{**LAYOUT, "num_res_blocks": (1, 1)})
    with pytest.raises(TypeError, match="sinogram_shape must be a sequence of positive ints"):
        null_condition((2, 0, 4), None)
    with pytest.raises(TypeError, match="feature_shapes must be a FeatureShapes or None"):
        null_condition((2, 1, 4, 4), [(2, 1, 4, 4)])


def test_pnpnet_condition_variants_and_errors():
    """{s}, {s, b_d, b_m}, [s, x_PnP] and [s, x_PnP] + features; the two-channel denoiser accepts the stack."""
    from bundle.networks.legopet import pnpnet_condition

    torch.manual_seed(0)
    layout = {"channels": (8, 8, 8, 8), "num_res_blocks": 1, "attention_levels": (False,) * 4,
              "norm_num_groups": 8, "num_head_channels": 8}
    pnpnet = PnPNet(**layout).eval()
    s = torch.rand(2, 1, 32, 32)
    assert pnpnet_condition(s, None).sinogram is s
    features = pnpnet_condition(s, pnpnet)
    assert features.sinogram is s and len(features.down_residuals) == len(pnpnet.feature_shapes(2, 32, 32).down)
    stacked = pnpnet_condition(s, pnpnet, features=False, image=True)
    assert stacked.down_residuals is None and stacked.sinogram.shape == (2, 2, 32, 32)
    torch.testing.assert_close(stacked.sinogram[:, 1:], pnpnet(s))
    denoiser = LegoPETDenoiser(**layout, condition_channels=2)
    both = pnpnet_condition(s, pnpnet, image=True)
    out = denoiser(torch.randn(2, 1, 32, 32), torch.tensor([3, 7]), both.sinogram,
                   down_residuals=both.down_residuals, mid_residual=both.mid_residual)
    assert out.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="pnpnet must be given for the image condition"):
        pnpnet_condition(s, None, image=True)
    with pytest.raises(ValueError, match="needs features=True, image=True or both"):
        pnpnet_condition(s, pnpnet, features=False)
    with pytest.raises(ValueError, match="condition_channels must be an int >= 1"):
        LegoPETDenoiser(**layout, condition_channels=0)
