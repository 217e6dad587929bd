"""LegoPET networks (Sun et al., "LegoPET: Hierarchical Feature Guided Conditional Diffusion for PET Image
Reconstruction", arXiv:2411.16629): the sinogram-conditioned ε-prediction denoiser and the plug-and-play prior
network PnPNet whose hierarchical features b_d (down blocks) and b_m (middle block) are added to the denoiser.

Notation (code ↔ paper):

======================================  =========  ==============================================================
code                                     paper      meaning
======================================  =========  ==============================================================
``sinogram``                             s          input sinogram, ``(B, 1, H, W)``, already resampled/padded to
                                                    the image grid by the caller (256 × 256 in the paper preset)
``x_t``                                  x_t        noisy image at step t, ``(B, 1, H, W)``
``down_residuals``                       b_d        PnPNet encoder features, one per skip connection of the U-Net
``mid_residual``                         b_m        PnPNet middle-block feature
``LegoPETCondition``                     C          {s, b_d, b_m}
``null_condition``                       ∅          zeros for s, b_d and b_m (classifier-free guidance)
``LegoPETDenoiser(...)(x_t, t, s, …)``   ε_θ(x_t, t, C)  predicted noise, ``(B, 1, H, W)``
======================================  =========  ==============================================================

Feature injection.  MONAI's ``DiffusionModelUNet.forward`` takes ``down_block_additional_residuals`` (one tensor per
entry of its skip list ``down_block_res_samples``) and ``mid_block_additional_residual`` and adds them, like a
ControlNet, to the skip connections and to the middle-block output.  The skip list of a U-Net with L levels,
channels (C_0 … C_{L-1}) and n_i residual blocks per level holds, in order (spatial size H_i = H / 2^i)::

    conv_in output                         (C_0, H_0, W_0)
    for level i: n_i resnet outputs        (C_i, H_i, W_i) each
                 the downsampler output    (C_i, H_{i+1}, W_{i+1})   (not after the last level)

i.e. 1 + Σ n_i + (L − 1) tensors; the middle-block output is (C_{L-1}, H_{L-1}, W_{L-1}).  :class:`PnPNet` is the
same MONAI U-Net (same channel layout) so its own skip list and middle output have exactly these shapes: b_d is
PnPNet's skip list and b_m its middle-block output.  H and W must be divisible by 2^(L−1).

``FeatureInjection.ADD`` (default) adds b_d, b_m unchanged: no new weights, so cDPM and LegoPET have the same
number of trainable parameters (the paper's Table 1: 35.71 M for both; PnPNet is frozen and not counted).
``FeatureInjection.ADAPTER`` passes each feature through a zero-initialised bias-free 1×1 convolution first
(ControlNet-style "zero convs"): the denoiser then starts as the cDPM and has Σ_k C_k² more parameters (C_k = the
channels of residual k).  Bias-free so that the null features (zeros) stay exactly zero: the null condition means
"no feature bias" in both modes.

The cDPM baseline ("LegoPET w/o guidance") is the same denoiser called without residuals.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

from bundle.transforms.scaling import Standardisation

__all__ = [
    "FeatureInjection",
    "FeatureShapes",
    "LegoPETCondition",
    "LegoPETDenoiser",
    "PnPNet",
    "null_condition",
    "pnpnet_condition",
]


class FeatureInjection(StrEnum):
    """How PnPNet features enter the denoiser."""

    ADD = "add"
    """b_d, b_m are added as they are (no new weights; default, the paper's equal parameter counts)."""
    ADAPTER = "adapter"
    """Each feature goes through a zero-initialised bias-free 1×1 convolution before it is added."""


class FeatureShapes(NamedTuple):
    """Shapes (with batch) of the hierarchical features: ``down`` = one shape per skip tensor, ``mid`` = middle."""

    down: tuple[tuple[int, ...], ...]
    mid: tuple[int, ...]


class LegoPETCondition(NamedTuple):
    """The condition C = {s, b_d, b_m}; ``down_residuals``/``mid_residual`` are ``None`` for the cDPM (s only).

    ``sinogram`` is the image-domain channel stack given to the denoiser: ``(B, 1, H, W)`` = [s] (the paper), or
    ``(B, 2, H, W)`` = [s, x̂_PnP] with the PnPNet output image (the image-condition extension)."""

    sinogram: torch.Tensor
    down_residuals: tuple[torch.Tensor, ...] | None = None
    mid_residual: torch.Tensor | None = None


def null_condition(
    sinogram_shape: Sequence[int],
    feature_shapes: FeatureShapes | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LegoPETCondition:
    """The null condition ∅ shared by training (condition dropout) and sampling (unconditional branch).

    Args:
        sinogram_shape: shape of s, e.g. ``(B, 1, H, W)``.
        feature_shapes: shapes of b_d and b_m (:meth:`PnPNet.feature_shapes`), or ``None`` for the cDPM (no features).

    Returns:
        :class:`LegoPETCondition` of zeros of the given shapes (``None`` features when ``feature_shapes`` is ``None``).
    """
    shape = _check_shape(sinogram_shape, "sinogram_shape")
    sinogram = torch.zeros(shape, dtype=dtype, device=device)
    if feature_shapes is None:
        return LegoPETCondition(sinogram)
    if not isinstance(feature_shapes, FeatureShapes):
        raise TypeError(f"feature_shapes must be a FeatureShapes or None, got {type(feature_shapes).__name__}")
    down = tuple(
        torch.zeros(_check_shape(s, f"feature_shapes.down[{i}]"), dtype=dtype, device=device)
        for i, s in enumerate(feature_shapes.down)
    )
    mid = torch.zeros(_check_shape(feature_shapes.mid, "feature_shapes.mid"), dtype=dtype, device=device)
    return LegoPETCondition(sinogram, down, mid)


def _check_shape(shape: object, name: str) -> tuple[int, ...]:
    if (
        isinstance(shape, str | bytes)
        or not isinstance(shape, Sequence | torch.Size)
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise TypeError(f"{name} must be a sequence of positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


class _UNetLayout:
    """Shared channel layout of the denoiser and PnPNet (keyword-only, validated)."""

    def __init__(
        self,
        *,
        channels: Sequence[int],
        num_res_blocks: Sequence[int] | int,
        attention_levels: Sequence[bool],
        norm_num_groups: int,
        num_head_channels: Sequence[int] | int,
        resblock_updown: bool,
        use_flash_attention: bool,
    ) -> None:
        self.channels = tuple(_check_shape(channels, "channels"))
        if isinstance(num_res_blocks, numbers.Integral):
            num_res_blocks = (int(num_res_blocks),) * len(self.channels)
        self.num_res_blocks = _check_shape(num_res_blocks, "num_res_blocks")
        if len(self.num_res_blocks) != len(self.channels):
            raise ValueError(
                f"num_res_blocks must be an int or have one entry per level ({len(self.channels)}), "
                f"got {num_res_blocks}"
            )
        self.kwargs = {
            "channels": self.channels,
            "num_res_blocks": self.num_res_blocks,
            "attention_levels": tuple(attention_levels),
            "norm_num_groups": norm_num_groups,
            "num_head_channels": num_head_channels,
            "resblock_updown": resblock_updown,
            "use_flash_attention": use_flash_attention,
        }

    @property
    def levels(self) -> int:
        return len(self.channels)

    def residual_channels(self) -> tuple[int, ...]:
        """Channels of the skip tensors, in MONAI's ``down_block_res_samples`` order (module docstring)."""
        out = [self.channels[0]]
        for i, (c, n) in enumerate(zip(self.channels, self.num_res_blocks, strict=True)):
            out += [c] * n
            if i < self.levels - 1:
                out.append(c)
        return tuple(out)

    def check_spatial(self, height: int, width: int, name: str) -> None:
        factor = 2 ** (self.levels - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"{name} spatial size must be divisible by 2^(levels - 1) = {factor} for this U-Net, got "
                f"({height}, {width})"
            )

    def feature_shapes(self, batch: int, height: int, width: int) -> FeatureShapes:
        self.check_spatial(height, width, "input")
        down: list[tuple[int, ...]] = [(batch, self.channels[0], height, width)]
        for i, (c, n) in enumerate(zip(self.channels, self.num_res_blocks, strict=True)):
            h, w = height // 2**i, width // 2**i
            down += [(batch, c, h, w)] * n
            if i < self.levels - 1:
                down.append((batch, c, h // 2, w // 2))
        f = 2 ** (self.levels - 1)
        return FeatureShapes(tuple(down), (batch, self.channels[-1], height // f, width // f))


def _check_image(x: object, name: str, channels: int = 1) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, H, W), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be floating-point, got dtype {x.dtype}")
    return x


class LegoPETDenoiser(torch.nn.Module):
    """ε_θ(x_t, t, C): a 2D MONAI ``DiffusionModelUNet`` on the channel stack [x_t, s] with PnPNet feature biases.

    Paper eq. (5)-(6): µ_θ(x_t, t, C) = (x_t − (1 − α_t)/sqrt(1 − ᾱ_t) · ε_θ(x_t, t, C)) / sqrt(α_t), trained with
    ‖ε − ε_θ(x_t, t, C)‖².  Without residuals this is the plain sinogram-conditioned cDPM.

    Args (keyword-only; the layout arguments are those of ``DiffusionModelUNet`` and must equal PnPNet's):
        channels: output channels per level (L levels; the paper preset has 4: 256/128/64/32 at 256 × 256 input).
        num_res_blocks: residual blocks per level (int or one per level).
        attention_levels: self-attention per level.
        norm_num_groups: GroupNorm groups (every channel count must be a multiple).
        num_head_channels: channels per attention head.
        resblock_updown: residual blocks for up/downsampling.
        use_flash_attention: PyTorch scaled-dot-product attention.
        feature_injection: :class:`FeatureInjection` (``"add"`` or ``"adapter"``).
        condition_channels: channels of the image-domain condition stacked with x_t: 1 = [s] (the paper), 2 =
            [s, x̂_PnP] with the PnPNet output image (the image-condition extension; :class:`LegoPETCondition`).
    """

    def __init__(
        self,
        *,
        channels: Sequence[int] = (64, 128, 256, 256),
        num_res_blocks: Sequence[int] | int = 2,
        attention_levels: Sequence[bool] = (False, False, False, True),
        norm_num_groups: int = 32,
        num_head_channels: Sequence[int] | int = 32,
        resblock_updown: bool = False,
        use_flash_attention: bool = False,
        feature_injection: FeatureInjection | str = FeatureInjection.ADD,
        condition_channels: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(condition_channels, bool) or not isinstance(condition_channels, int) or condition_channels < 1:
            raise ValueError(f"condition_channels must be an int >= 1 (1: [s], 2: [s, PnPNet image]), "
                             f"got {condition_channels!r}")
        self.condition_channels = condition_channels
        self.layout = _UNetLayout(
            channels=channels,
            num_res_blocks=num_res_blocks,
            attention_levels=attention_levels,
            norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
            resblock_updown=resblock_updown,
            use_flash_attention=use_flash_attention,
        )
        try:
            self.feature_injection = FeatureInjection(feature_injection)
        except ValueError:
            raise ValueError(
                f"feature_injection must be one of {[f.value for f in FeatureInjection]}, got {feature_injection!r}"
            ) from None
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=1 + condition_channels, out_channels=1, **self.layout.kwargs
        )
        self.down_adapters: torch.nn.ModuleList | None = None
        self.mid_adapter: torch.nn.Module | None = None
        if self.feature_injection is FeatureInjection.ADAPTER:
            self.down_adapters = torch.nn.ModuleList(_zero_conv(c) for c in self.layout.residual_channels())
            self.mid_adapter = _zero_conv(self.layout.channels[-1])

    def feature_shapes(self, batch: int, height: int, width: int) -> FeatureShapes:
        """Shapes of the residuals this denoiser accepts for inputs ``(batch, 1, height, width)``."""
        return self.layout.feature_shapes(batch, height, width)

    def forward(
        self,
        x_t: torch.Tensor,
        timesteps: torch.Tensor,
        sinogram: torch.Tensor,
        *,
        down_residuals: Sequence[torch.Tensor] | None = None,
        mid_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε_θ(x_t, t, C).

        Args:
            x_t: ``(B, 1, H, W)`` noisy image.
            timesteps: ``(B,)`` integer timesteps.
            sinogram: ``(B, condition_channels, H, W)``: the sinogram on the image grid [and the PnPNet image]
                (zeros = null).
            down_residuals: b_d, shapes ``feature_shapes(B, H, W).down`` (``None`` = cDPM); with ``mid_residual``.
            mid_residual: b_m, shape ``feature_shapes(B, H, W).mid``.

        Returns:
            Predicted noise ``(B, 1, H, W)``.
        """
        _check_image(x_t, "x_t")
        _check_image(sinogram, "sinogram", channels=self.condition_channels)
        expected = (x_t.shape[0], self.condition_channels, *x_t.shape[2:])
        if tuple(sinogram.shape) != expected:
            raise ValueError(f"sinogram (condition stack) must have shape {expected} (x_t's batch and grid, "
                             f"condition_channels={self.condition_channels}), got {tuple(sinogram.shape)}")
        b, _, h, w = x_t.shape
        self.layout.check_spatial(h, w, "x_t")
        if (down_residuals is None) != (mid_residual is None):
            raise ValueError("down_residuals and mid_residual must be given together (or both None for the cDPM)")
        down = mid = None
        if down_residuals is not None:
            expected = self.feature_shapes(b, h, w)
            if isinstance(down_residuals, torch.Tensor) or not isinstance(down_residuals, Sequence):
                raise TypeError(f"down_residuals must be a sequence of tensors, got {type(down_residuals).__name__}")
            if len(down_residuals) != len(expected.down):
                raise ValueError(
                    f"down_residuals must hold {len(expected.down)} tensors (one per skip connection), "
                    f"got {len(down_residuals)}"
                )
            for i, (r, s) in enumerate(zip(down_residuals, expected.down, strict=True)):
                if not isinstance(r, torch.Tensor) or tuple(r.shape) != s:
                    raise ValueError(f"down_residuals[{i}] must have shape {s}, got {getattr(r, 'shape', r)!r}")
            if not isinstance(mid_residual, torch.Tensor) or tuple(mid_residual.shape) != expected.mid:
                got = getattr(mid_residual, "shape", mid_residual)
                raise ValueError(f"mid_residual must have shape {expected.mid}, got {got!r}")
            down, mid = tuple(down_residuals), mid_residual
            if self.down_adapters is not None and self.mid_adapter is not None:
                down = tuple(a(r) for a, r in zip(self.down_adapters, down, strict=True))
                mid = self.mid_adapter(mid)
        return self.unet(
            torch.cat([x_t, sinogram.to(x_t.dtype)], dim=1),
            timesteps,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        )


def _zero_conv(channels: int) -> torch.nn.Conv2d:
    conv = torch.nn.Conv2d(channels, channels, kernel_size=1, bias=False)
    torch.nn.init.zeros_(conv.weight)
    return conv


class PnPNet(torch.nn.Module):
    """Plug-and-play prior network: regression U-Net s ``(B, 1, H, W)`` → PET image ``(B, 1, H, W)``.

    Trained with L_PnPNet = L_MSE + λ1 L_DWT (paper eq. (1), λ1 = 0.1; :class:`bundle.losses.MSEPlusDWTLoss`), then
    frozen.  It *is* a MONAI ``DiffusionModelUNet`` (ResNet blocks + spatial self-attention, as the paper says)
    called with the fixed timestep t = 0, so the time embedding reduces to a learned constant per-block bias.  Using
    the very same class as the denoiser (rather than re-assembling its blocks) guarantees that PnPNet's skip tensors
    and middle output have exactly the shapes of the denoiser's ``down_block_additional_residuals`` /
    ``mid_block_additional_residual`` for the same layout arguments.  The paper's "4 encoder, 2 middle, 4 decoder
    blocks at 256/128/64/32" is 4 levels; MONAI's middle block holds two ResNet blocks around an attention block.

    :meth:`features` runs only the encoder and the middle block (steps 1, 3, 4, 5 of
    ``DiffusionModelUNet.forward``, through its public sub-modules ``time_embed``, ``conv_in``, ``down_blocks``,
    ``middle_block``); a test checks it against forward hooks on the full MONAI forward.

    Args: the layout arguments of :class:`LegoPETDenoiser` (keyword-only), which they must equal.
    """

    def __init__(
        self,
        *,
        channels: Sequence[int] = (64, 128, 256, 256),
        num_res_blocks: Sequence[int] | int = 2,
        attention_levels: Sequence[bool] = (False, False, False, True),
        norm_num_groups: int = 32,
        num_head_channels: Sequence[int] | int = 32,
        resblock_updown: bool = False,
        use_flash_attention: bool = False,
    ) -> None:
        super().__init__()
        self.layout = _UNetLayout(
            channels=channels,
            num_res_blocks=num_res_blocks,
            attention_levels=attention_levels,
            norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
            resblock_updown=resblock_updown,
            use_flash_attention=use_flash_attention,
        )
        self.unet = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, **self.layout.kwargs)

    def feature_shapes(self, batch: int, height: int, width: int) -> FeatureShapes:
        """Shapes of :meth:`features` for a sinogram ``(batch, 1, height, width)``."""
        return self.layout.feature_shapes(batch, height, width)

    def _timesteps(self, sinogram: torch.Tensor) -> torch.Tensor:
        return torch.zeros(sinogram.shape[0], dtype=torch.long, device=sinogram.device)

    def _check(self, sinogram: torch.Tensor) -> torch.Tensor:
        _check_image(sinogram, "sinogram")
        self.layout.check_spatial(sinogram.shape[-2], sinogram.shape[-1], "sinogram")
        return sinogram

    def forward(self, sinogram: torch.Tensor) -> torch.Tensor:
        """PET image estimate ``(B, 1, H, W)`` from the sinogram ``(B, 1, H, W)`` (on the image grid)."""
        sinogram = self._check(sinogram)
        return self.unet(sinogram, self._timesteps(sinogram))

    def features(self, sinogram: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Hierarchical features (b_d, b_m) for the denoiser.

        Returns:
            ``down_residuals``: one tensor per skip connection (shapes ``feature_shapes(B, H, W).down``) and
            ``mid_residual``: the middle-block output (shape ``feature_shapes(B, H, W).mid``).
        """
        sinogram = self._check(sinogram)
        unet = self.unet
        t_emb = get_timestep_embedding(self._timesteps(sinogram), unet.block_out_channels[0]).to(dtype=sinogram.dtype)
        emb = unet.time_embed(t_emb)
        h = unet.conv_in(sinogram)
        down: list[torch.Tensor] = [h]
        for block in unet.down_blocks:
            h, res = block(hidden_states=h, temb=emb, context=None)
            down.extend(res)
        mid = unet.middle_block(hidden_states=h, temb=emb, context=None)
        return tuple(down), mid


@torch.no_grad()
def pnpnet_condition(
    sinogram: torch.Tensor,
    pnpnet: PnPNet | None,
    *,
    features: bool = True,
    image: bool = False,
    standardisation: Standardisation | None = None,
) -> LegoPETCondition:
    """The condition C of sinograms ``(B, 1, H, W)`` from the frozen PnPNet (run under ``no_grad``, mode unchanged).

    * ``pnpnet`` ``None``: C = {s} (the cDPM);
    * ``features``: C = {s, b_d, b_m} (LegoPET, the paper);
    * ``image``: the PnPNet output image x̂_PnP (network units, put through ``standardisation`` so that it is in
      the diffusion model's units, like x_0) is stacked with s: ``sinogram`` = [s, x̂_PnP] ``(B, 2, H, W)``.  This
      is the image-condition extension (the sinogram's features, added to image-domain skips, are not spatially
      aligned with the image; x̂_PnP is); with ``features`` too it is "LegoPET + image condition", without them
      "cDPM + image condition".
    """
    if pnpnet is None:
        if image or not features:
            raise ValueError("pnpnet must be given for the image condition (image=True) or features=False; "
                             f"got pnpnet=None with features={features}, image={image}")
        return LegoPETCondition(sinogram)
    if not (features or image):
        raise ValueError("a PnPNet condition needs features=True, image=True or both; got both False")
    stack = sinogram
    if image:
        estimate = pnpnet(sinogram)
        if standardisation is not None:
            estimate = standardisation.forward(estimate)
        stack = torch.cat([sinogram, estimate.to(sinogram.dtype)], dim=1)
    if not features:
        return LegoPETCondition(stack)
    down, mid = pnpnet.features(sinogram)
    return LegoPETCondition(stack, down, mid)
