"""The optional perceptual loss of the uPETe autoencoder: features of a local 3D MONAI ResNet (nothing is
downloaded).  Importing runs nothing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from monai.networks.nets import resnet
from torch import nn

__all__ = ["LocalPerceptualLoss", "optional_perceptual_loss"]


class LocalPerceptualLoss(nn.Module):
    """Perceptual distance from a 3D MONAI ResNet whose weights the user supplies as a local file (nothing is
    downloaded).  P(x̂, x) = Σ_l mean((φ̄_l(x̂) − φ̄_l(x))²), φ̄_l = channel-normalised features after ResNet
    stage l (LPIPS-style, without learned layer weights).

    Args (keyword-only):
        weights_path: a ``torch.save`` state dict of ``monai.networks.nets.resnet{depth}`` (3D, 1 input channel),
            e.g. converted MedicalNet / Med3D weights (the paper's perceptual network).  Loaded with
            ``weights_only=True``; keys may carry a ``module.`` prefix.
        depth: 10, 18 or 34.
    """

    def __init__(self, *, weights_path: str | Path, depth: int = 10) -> None:
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise ValueError(f"weights_path must be an existing local file with ResNet weights, got {str(path)!r}")
        if depth not in (10, 18, 34):
            raise ValueError(f"depth must be 10, 18 or 34, got {depth!r}")
        net = getattr(resnet, f"resnet{depth}")(spatial_dims=3, n_input_channels=1, feed_forward=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
        net.load_state_dict(state, strict=False)
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.eval()

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        h = n.maxpool(n.act(n.bn1(n.conv1(x))))
        feats = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            h = layer(h)
            feats.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return feats

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pairs = zip(self._features(prediction), self._features(target), strict=True)
        return sum((a - b).pow(2).mean() for a, b in pairs)


def optional_perceptual_loss(weights_path: str | Path | None, *, depth: int = 10):
    """``None`` (the default: no perceptual term) or a :class:`LocalPerceptualLoss` of ``weights_path``."""
    if weights_path is None or str(weights_path) == "":
        return None
    return LocalPerceptualLoss(weights_path=weights_path, depth=depth)
