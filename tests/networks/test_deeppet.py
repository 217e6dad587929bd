"""DeepPET baseline: shapes, parameter count against the closed form, no skip path, argument checks, learning."""

from __future__ import annotations

import pytest
import torch

from bundle.networks.deeppet import DeepPET

SMALL = {"channels": (4, 8, 8), "convs_per_level": 2}


def _closed_form_parameters(channels: tuple[int, ...], n: int, in_channels: int = 1, out_channels: int = 1) -> int:
    """Module docstring: conv(a → b) = 9ab + b, BatchNorm(b) = 2b, 1×1 head C_0·out + out."""

    def block(a: int, b: int) -> int:
        return 9 * a * b + b + 2 * b

    total, previous = 0, in_channels
    for c in channels:
        total += block(previous, c) + (n - 1) * block(c, c)
        previous = c
    for j in range(len(channels) - 2, -1, -1):
        total += block(channels[j + 1], channels[j]) + (n - 1) * block(channels[j], channels[j])
    return total + channels[0] * out_channels + out_channels


@pytest.mark.parametrize(("channels", "n"), [((4, 8, 8), 2), ((32, 64, 128, 256, 512), 3), ((6,), 1)])
def test_parameter_count_matches_closed_form(channels, n):
    network = DeepPET(channels=channels, convs_per_level=n)
    assert sum(p.numel() for p in network.parameters()) == _closed_form_parameters(channels, n)


def test_default_is_about_11_million_parameters():
    assert sum(p.numel() for p in DeepPET().parameters()) == 10_999_041


def test_output_shape_and_determinism():
    torch.manual_seed(0)
    network = DeepPET(**SMALL).eval()
    x = torch.randn(3, 1, 16, 24)
    y = network(x)
    assert y.shape == (3, 1, 16, 24)
    torch.testing.assert_close(network(x), y)


def test_samples_are_independent_in_eval_mode():
    """Batch entries do not mix (BatchNorm uses running statistics in eval)."""
    network = DeepPET(**SMALL).eval()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(network(x)[:1], network(x[:1]))


def test_learns_a_fixed_mapping():
    """A few Adam steps on one pair reduce the MSE by at least half (gradients reach every level)."""
    generator = torch.Generator().manual_seed(0)
    network = DeepPET(channels=(4, 8), convs_per_level=1, norm="instance")
    x = torch.randn(1, 1, 8, 8, generator=generator)
    target = torch.roll(x, shifts=3, dims=-1).abs()
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-2)
    first = None
    for _ in range(15):
        loss = torch.nn.functional.mse_loss(network(x), target)
        first = float(loss.detach()) if first is None else first
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.5 * first
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in network.encoder.parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"channels": ()}, ValueError, "channels must be a non-empty"),
        ({"channels": "abc"}, ValueError, "channels must be a non-empty"),
        ({"channels": (4, 0)}, ValueError, r"channels\[1\] must be >= 1"),
        ({"convs_per_level": 0}, ValueError, "convs_per_level must be >= 1"),
        ({"norm": "layer"}, ValueError, "norm must be one of"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a number in \[0, 1\)"),
        ({"channels": (4, 12), "norm": "group"}, ValueError, "min\\(8, C\\) groups"),
        ({"act": 3}, TypeError, "act must be"),
    ],
)
def test_constructor_checks(kwargs, error, match):
    with pytest.raises(error, match=match):
        DeepPET(**{**SMALL, **kwargs})


def test_forward_checks():
    network = DeepPET(**SMALL)
    with pytest.raises(ValueError, match=r"divisible by 2\^\(levels - 1\) = 4"):
        network(torch.zeros(1, 1, 18, 16))
    with pytest.raises(ValueError, match=r"shape \(B, 1, H, W\)"):
        network(torch.zeros(1, 2, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        network(torch.zeros(1, 1, 16, 16, dtype=torch.long))
