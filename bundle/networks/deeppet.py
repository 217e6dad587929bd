"""DeepPET baseline (Häggström et al., "DeepPET: A deep encoder-decoder network for directly solving the PET image
reconstruction inverse problem", Med. Image Anal. 54, 2019): a regression encoder-decoder s ``(B, 1, H, W)`` →
PET image ``(B, 1, H, W)``, the LegoPET paper's strongest regression row (Table 1: 28.30 dB / 0.944).

Layout (MONAI ``Convolution`` blocks = conv 3×3 → norm → activation; ``UpSample`` for the decoder)::

    level 0:      ``convs_per_level`` convs   1 → C_0 → … → C_0                (H,        W)
    level i > 0:  strided conv C_{i-1} → C_i (stride 2), then convs C_i → C_i  (H / 2^i,  W / 2^i)
    decoder j = L-2 … 0: upsample ×2 (bilinear, no weights), conv C_{j+1} → C_j, then convs C_j → C_j
    head:         1×1 conv C_0 → 1 (no norm, no activation: a linear regression output)

There are no skip connections: the input lives in sinogram space (views × radial bins on the padded grid) and the
output in image space, so same-position features of encoder and decoder do not correspond (DeepPET's design).
H and W must be divisible by 2^(L−1) (L = ``len(channels)``).

Parameters (3×3 convs with bias, BatchNorm with affine γ, β; the count a test checks)::

    conv(a → b) = 9ab + b,   norm(b) = 2b
    encoder  Σ_i [conv(C_{i-1} → C_i) + norm(C_i)] + (n − 1) [conv(C_i → C_i) + norm(C_i)]     (C_{-1} = 1)
    decoder  Σ_j [conv(C_{j+1} → C_j) + norm(C_j)] + (n − 1) [conv(C_j → C_j) + norm(C_j)]
    head     C_0 + 1

The default (channels 32/64/128/256/512, 3 convs per level) has 11.00 M parameters (10 999 041), the "about 11 M" of
METHODS.md.  Importing this module runs nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import torch
from monai.networks.blocks import Convolution, UpSample

from .._checks import check_int

__all__ = ["DeepPET", "NormType"]


class NormType(StrEnum):
    """Normalisation after each convolution."""

    BATCH = "batch"
    INSTANCE = "instance"
    GROUP = "group"


def _check_channels(channels: object) -> tuple[int, ...]:
    if isinstance(channels, str | bytes) or not isinstance(channels, Sequence) or len(channels) < 1:
        raise ValueError(f"channels must be a non-empty sequence of positive ints (one per level), got {channels!r}")
    return tuple(check_int(c, f"channels[{i}]", minimum=1) for i, c in enumerate(channels))


class DeepPET(torch.nn.Module):
    """Regression encoder-decoder from sinogram to PET image (module docstring), built from MONAI blocks.

    Args (keyword-only):
        channels: feature channels per level C_0 … C_{L−1} (L levels, L − 1 downsamplings by 2).
        convs_per_level: n ≥ 1 convolutions per encoder and per decoder level.
        norm: :class:`NormType` (``"batch"``, ``"instance"`` or ``"group"``; group uses min(8, C) groups, which
            must divide every channel count).
        act: MONAI activation name (``"relu"`` as DeepPET; ``"prelu"``, ``"leakyrelu"``, …).
        dropout: dropout probability in [0, 1) after each activation (0 = none).
        in_channels: channels of the input sinogram (1).
        out_channels: channels of the output image (1).
    """

    def __init__(
        self,
        *,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        convs_per_level: int = 3,
        norm: NormType | str = NormType.BATCH,
        act: str = "relu",
        dropout: float = 0.0,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        self.channels = _check_channels(channels)
        n = check_int(convs_per_level, "convs_per_level", minimum=1)
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = check_int(out_channels, "out_channels", minimum=1)
        try:
            self.norm = NormType(norm)
        except ValueError:
            raise ValueError(f"norm must be one of {[m.value for m in NormType]}, got {norm!r}") from None
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not isinstance(act, str):
            raise TypeError(f"act must be a MONAI activation name (str), got {act!r}")
        if self.norm is NormType.GROUP:
            groups = [min(8, c) for c in self.channels]
            bad = [c for c, g in zip(self.channels, groups, strict=True) if c % g]
            if bad:
                raise ValueError(f"norm='group' uses min(8, C) groups, which must divide every channel; got {bad}")

        def conv(a: int, b: int, stride: int = 1) -> Convolution:
            norm_arg: tuple | str = ("group", {"num_groups": min(8, b)}) if self.norm is NormType.GROUP else (
                self.norm.value
            )
            return Convolution(
                spatial_dims=2, in_channels=a, out_channels=b, strides=stride, kernel_size=3, act=act,
                norm=norm_arg, dropout=float(dropout) or None, adn_ordering="NDA",
            )

        encoder: list[torch.nn.Module] = []
        previous = self.in_channels
        for i, c in enumerate(self.channels):
            encoder.append(conv(previous, c, stride=1 if i == 0 else 2))
            encoder += [conv(c, c) for _ in range(n - 1)]
            previous = c
        decoder: list[torch.nn.Module] = []
        for j in range(len(self.channels) - 2, -1, -1):
            c = self.channels[j]
            decoder.append(UpSample(spatial_dims=2, scale_factor=2, mode="nontrainable", interp_mode="bilinear",
                                    align_corners=False))
            decoder.append(conv(self.channels[j + 1], c))
            decoder += [conv(c, c) for _ in range(n - 1)]
        self.encoder = torch.nn.Sequential(*encoder)
        self.decoder = torch.nn.Sequential(*decoder)
        self.head = Convolution(
            spatial_dims=2, in_channels=self.channels[0], out_channels=self.out_channels, kernel_size=1, conv_only=True
        )

    @property
    def levels(self) -> int:
        """L, the number of resolution levels."""
        return len(self.channels)

    def forward(self, sinogram: torch.Tensor) -> torch.Tensor:
        """Image estimate ``(B, out_channels, H, W)`` from the sinogram ``(B, in_channels, H, W)`` on the image grid.

        Raises:
            TypeError: ``sinogram`` is not a floating-point tensor.
            ValueError: wrong rank/channels, or H, W not divisible by 2^(L−1).
        """
        if not isinstance(sinogram, torch.Tensor) or not torch.is_floating_point(sinogram):
            got = getattr(sinogram, "dtype", type(sinogram).__name__)
            raise TypeError(f"sinogram must be a floating-point torch.Tensor, got {got!r}")
        if sinogram.ndim != 4 or sinogram.shape[1] != self.in_channels:
            raise ValueError(f"sinogram must have shape (B, {self.in_channels}, H, W), got {tuple(sinogram.shape)}")
        factor = 2 ** (self.levels - 1)
        h, w = sinogram.shape[-2:]
        if h % factor or w % factor:
            raise ValueError(
                f"sinogram spatial size must be divisible by 2^(levels - 1) = {factor}, got ({h}, {w})"
            )
        return self.head(self.decoder(self.encoder(sinogram)))
