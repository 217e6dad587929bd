"""Supervised 3D U-Net baseline: MONAI ``UNet`` in residual form, x̂ = x + g · UNet(x).

The global residual (as DnCNN-style denoisers) with a learnable gain g initialised to 0 (ReZero) makes the untrained
network the identity, so training starts from the LPET instead of from zero; with few CPU iterations a plain U-Net
is still far below its own input.  Shapes: ``(B, 1, D, H, W)`` -> ``(B, 1, D, H, W)``, each spatial size divisible
by the product of ``strides``.  Importing runs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import UNet
from torch import nn

__all__ = ["ResidualUNet"]


class ResidualUNet(nn.Module):
    """x + g · UNet(x) (g learnable, 0 at start) with MONAI's 3D ``UNet`` (1 channel in/out).

    Args (keyword-only):
        channels: UNet channels per level.
        strides: UNet down-sampling strides (one fewer than ``channels``).
        num_res_units: residual units per UNet block.
    """

    def __init__(
        self, *, channels: Sequence[int] = (16, 32, 64), strides: Sequence[int] = (2, 2), num_res_units: int = 1
    ) -> None:
        super().__init__()
        if len(strides) != len(channels) - 1:
            raise ValueError(f"strides must have len(channels) - 1 = {len(channels) - 1} entries, got {strides!r}")
        self.unet = UNet(spatial_dims=3, in_channels=1, out_channels=1, channels=tuple(channels),
                         strides=tuple(strides), num_res_units=num_res_units)
        self.gain = nn.Parameter(torch.zeros(1))  # ReZero-style: starts as the identity, learns the residual's size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gain * self.unet(x)
