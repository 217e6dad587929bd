"""uPETe CT-guided cross-attention and the CT-guided latent denoiser (Jiang et al., "PET-Diffusion: Unsupervised PET
Enhancement Based on the Latent Diffusion Model", MICCAI 2023, Sect. 2.2, eq. (2)).

CT-guided cross-attention (paper eq. (2)), per head h with head dimension d::

    Output = softmax(Q_CT K_CTᵀ / √d + B) V_PET,
    Q_CT = Conv_Q(z_CT),   K_CT = Conv_K(z_CT),   V_PET = Conv_V(z_PET)          (1×1×1 convolutions, stride 1)

followed here by a 1×1×1 output projection and a residual to the PET features: z_PET + Conv_out(Output).  Queries
*and* keys come from the CT, so the attention pattern (which PET voxels are mixed into which) is decided by the
anatomy alone; only the values carry PET information.

Notation (code ↔ paper):

=========================  ==========  ===================================================================
code                       paper       meaning
=========================  ==========  ===================================================================
``pet``                    z_PET       output of the previous layer, ``(B, C_pet, D, H, W)``
``ct``                     z_CT        CT latent (at the same spatial size), ``(B, C_ct, D, H, W)``
``head_channels``          d           channels per head (the √d of the softmax temperature)
``relative_bias``          B           learnable position bias (below)
``z_t``                    z_t         perturbed PET latent at step t
``z_ct``                   z_CT        CT latent E_CT(CT) at the latent resolution
output of the denoiser     ẑ0 or ε̂    :class:`PredictionType` (default ẑ0, METHODS.md)
=========================  ==========  ===================================================================

Position bias B (the paper gives no parameterisation).  Ours: a learnable per-head table over *clipped relative
offsets* (Swin-/T5-style).  For query voxel p and key voxel q on the (D, H, W) grid the offset Δ = p − q is clipped
per axis to [−w, w] (w = ``window``) and looked up in a table of shape ``(num_heads, 2w+1, 2w+1, 2w+1)``::

    B[h, p, q] = table[h, clip(Δz) + w, clip(Δy) + w, clip(Δx) + w].

The attention itself is global (every token sees every token); the window only bounds the bias table:
relative positions are exact for offsets up to w voxels per axis and saturate beyond (all farther pairs share the
edge entry).  Parameters per module: num_heads · (2w + 1)³ (w = 7: 3375 per head), independent of the latent size.
The table is initialised from N(0, 0.02²) truncated at ±2σ (as Swin).

Memory limit.  The attention matrix and the gathered bias are ``(B, num_heads, N, N)`` and ``(num_heads, N, N)``
with N = D·H·W tokens, so memory grows as N².  A module refuses inputs with more than ``max_tokens`` tokens
(default 4096 = 16³: about 64 MiB per head and batch item in float32) with a ``ValueError``; apply it only at
small latent resolutions (the denoiser's coarse attention levels) or tile the volume (SlidingWindowInferer).

The output projection is zero-initialised (as MONAI's ``SpatialTransformer.proj_out``; option
``zero_init_output``), so a freshly built module is the identity on the PET features and a freshly built
:class:`CTGuidedLatentDenoiser` computes exactly its plain MONAI U-Net.

Where the CT attention acts in :class:`CTGuidedLatentDenoiser`.  Inserting a module inside MONAI's
``AttnDownBlock``/``AttnUpBlock`` (between a ResNet block and its self-attention) is not possible through their
public interface, so the denoiser re-composes ``DiffusionModelUNet.forward`` from its public sub-modules
(``time_embed``, ``conv_in``, ``down_blocks``, ``middle_block``, ``up_blocks``, ``out``; the same steps as
MONAI's forward, checked by a test) and applies a CT-guided attention module at these sites, for an L-level U-Net
with channels (C_0 … C_{L-1}) on a latent of spatial size S (each level l has size S / 2^l):

- ``down{l}`` for every level l with ``attention_levels[l]``: on the hidden state *entering* down block l
  (the output of ``conv_in`` for l = 0, else the output of down block l − 1), channels C_0 for l = 0 and C_{l−1}
  otherwise, spatial size S / 2^l.  The skip connections stored from there on (for l = 0 including the
  ``conv_in`` skip) therefore already carry the CT information.
- ``mid``: on the output of the middle block (MONAI's middle block always holds a self-attention), channels
  C_{L−1}, size S / 2^(L−1).  This is also the input of the first up block, i.e. the up-path site of level L − 1.
- ``up{l}`` for every level l < L − 1 with ``attention_levels[l]``: on the hidden state entering the up block of
  level l (the output of the previous up block), channels C_{l+1}, size S / 2^l.

At level l the CT latent is average-pooled by 2^l (no weights), so the only new parameters are those of the
attention modules: ``use_ct=False`` (the LDM / LDM-P ablations) builds the same U-Net without them and ignores
``z_ct``.  Setting ``z_ct`` to zeros is *not* "no CT" (the queries and keys become the convolution biases and the
attention uniform up to B); use ``use_ct=False`` for the variants without CT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from torch import nn

from bundle.diffusion.ddim import PredictionType

from .._checks import check_choice
from .._checks import check_int as _check_int

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_WINDOW",
    "CTGuidedCrossAttention",
    "CTGuidedLatentDenoiser",
]

DEFAULT_WINDOW = 7
"""Default clipping radius w of the relative position bias (table (2w+1)³ per head)."""
DEFAULT_MAX_TOKENS = 4096
"""Default largest number of tokens D·H·W one attention module accepts (16³)."""


def _check_volume(x: object, name: str, channels: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, C, D, H, W), got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(f"{name} must have shape (B, C, D, H, W), got {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be floating-point, got dtype {x.dtype}")
    return x


class CTGuidedCrossAttention(nn.Module):
    """z_PET + Conv_out(softmax(Q_CT K_CTᵀ / √d + B) V_PET), multi-head, for 3D feature maps (module docstring).

    Args (keyword-only):
        pet_channels: C_pet, channels of the PET features (input and output).
        ct_channels: C_ct, channels of the CT features; default ``pet_channels``.
        num_heads: number of heads.
        head_channels: d, channels per head; default ``pet_channels // num_heads`` (at least 1).  The attention's
            inner width is ``num_heads · head_channels``.
        window: w >= 0, clipping radius of the relative position bias (table ``(num_heads, 2w+1, 2w+1, 2w+1)``).
        max_tokens: largest D·H·W accepted (memory grows as ``num_heads · N²``).
        zero_init_output: zero-initialise the output projection (module starts as the identity).
    """

    def __init__(
        self,
        *,
        pet_channels: int,
        ct_channels: int | None = None,
        num_heads: int = 1,
        head_channels: int | None = None,
        window: int = DEFAULT_WINDOW,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        zero_init_output: bool = True,
    ) -> None:
        super().__init__()
        self.pet_channels = _check_int(pet_channels, "pet_channels", minimum=1)
        self.ct_channels = (
            self.pet_channels if ct_channels is None else _check_int(ct_channels, "ct_channels", minimum=1)
        )
        self.num_heads = _check_int(num_heads, "num_heads", minimum=1)
        self.head_channels = (
            max(1, self.pet_channels // self.num_heads)
            if head_channels is None
            else _check_int(head_channels, "head_channels", minimum=1)
        )
        self.window = _check_int(window, "window", minimum=0)
        self.max_tokens = _check_int(max_tokens, "max_tokens", minimum=1)
        inner = self.num_heads * self.head_channels
        self.conv_q = nn.Conv3d(self.ct_channels, inner, kernel_size=1)
        self.conv_k = nn.Conv3d(self.ct_channels, inner, kernel_size=1)
        self.conv_v = nn.Conv3d(self.pet_channels, inner, kernel_size=1)
        self.proj_out = nn.Conv3d(inner, self.pet_channels, kernel_size=1)
        side = 2 * self.window + 1
        self.relative_bias = nn.Parameter(torch.empty(self.num_heads, side, side, side))
        nn.init.trunc_normal_(self.relative_bias, std=0.02, a=-0.04, b=0.04)
        if zero_init_output:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def position_bias(self, spatial: Sequence[int], *, device: torch.device | None = None) -> torch.Tensor:
        """B for a ``(D, H, W)`` grid: ``(num_heads, N, N)`` with N = D·H·W, tokens in row-major (z, y, x) order."""
        w = self.window
        index = []
        for size in spatial:
            pos = torch.arange(size, device=device)
            index.append((pos[:, None] - pos[None, :]).clamp(-w, w) + w)
        iz, iy, ix = index
        d, h, wx = (int(s) for s in spatial)
        table = self.relative_bias.to(device) if device is not None else self.relative_bias
        bias = table[
            :,
            iz[:, None, None, :, None, None],
            iy[None, :, None, None, :, None],
            ix[None, None, :, None, None, :],
        ]
        n = d * h * wx
        return bias.reshape(self.num_heads, n, n)

    def _check_tokens(self, spatial: Sequence[int]) -> int:
        n = math.prod(int(s) for s in spatial)
        if n > self.max_tokens:
            raise ValueError(
                f"CT-guided attention on {tuple(spatial)} = {n} tokens exceeds max_tokens={self.max_tokens} "
                "(memory grows as tokens²); use smaller latents/patches or attend only at coarser levels"
            )
        return n

    def attention_weights(self, ct: torch.Tensor) -> torch.Tensor:
        """softmax(Q_CT K_CTᵀ / √d + B): ``(B, num_heads, N, N)`` from the CT features ``(B, C_ct, D, H, W)`` alone.

        Row i holds the weights with which query token i mixes the value tokens (rows sum to 1).
        """
        ct = _check_volume(ct, "ct", self.ct_channels)
        b, _, *spatial = ct.shape
        n = self._check_tokens(spatial)
        q = self.conv_q(ct).reshape(b, self.num_heads, self.head_channels, n)
        k = self.conv_k(ct).reshape(b, self.num_heads, self.head_channels, n)
        logits = torch.einsum("bhci,bhcj->bhij", q, k) / math.sqrt(self.head_channels)
        logits = logits + self.position_bias(spatial, device=ct.device).to(logits.dtype)
        return torch.softmax(logits, dim=-1)

    def forward(
        self, pet: torch.Tensor, ct: torch.Tensor | None, *, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """z_PET + Conv_out(softmax(Q_CT K_CTᵀ / √d + B) V_PET).

        Args:
            pet: z_PET ``(B, C_pet, D, H, W)``.
            ct: z_CT ``(B, C_ct, D, H, W)`` (same B and spatial size); required.
            return_weights: also return the attention weights ``(B, num_heads, N, N)``.

        Returns:
            ``(B, C_pet, D, H, W)``, or ``(output, weights)`` with ``return_weights=True``.
        """
        pet = _check_volume(pet, "pet", self.pet_channels)
        if ct is None:
            raise ValueError("ct is required for CT-guided cross-attention (queries and keys come from it), got None")
        ct = _check_volume(ct, "ct", self.ct_channels)
        if pet.shape[0] != ct.shape[0] or pet.shape[2:] != ct.shape[2:]:
            raise ValueError(
                f"pet and ct must have the same batch and spatial size, got pet {tuple(pet.shape)} and "
                f"ct {tuple(ct.shape)}"
            )
        weights = self.attention_weights(ct.to(pet.dtype))
        b, _, *spatial = pet.shape
        n = math.prod(spatial)
        v = self.conv_v(pet).reshape(b, self.num_heads, self.head_channels, n)
        mixed = torch.einsum("bhij,bhcj->bhci", weights, v).reshape(b, self.num_heads * self.head_channels, *spatial)
        out = pet + self.proj_out(mixed)
        return (out, weights) if return_weights else out


class CTGuidedLatentDenoiser(nn.Module):
    """f_θ(z_t, t, z_CT) -> ẑ0 (or ε̂): a 3D MONAI ``DiffusionModelUNet`` with CT-guided attention (module docstring).

    Args (keyword-only; the layout arguments go to ``DiffusionModelUNet(spatial_dims=3, ...)``):
        latent_channels: channels of z_t (in and out), e.g. the AutoencoderKL's ``latent_channels``.
        ct_channels: channels of z_CT; default ``latent_channels``.
        channels: U-Net channels per level (L levels).
        num_res_blocks: ResNet blocks per level.
        attention_levels: MONAI self-attention per level; the CT attention acts at the same levels (+ middle).
        norm_num_groups: GroupNorm groups of the U-Net.
        num_head_channels: channels per head of MONAI's self-attention (int or per level).
        resblock_updown: residual blocks for up/downsampling.
        use_flash_attention: PyTorch scaled-dot-product attention in MONAI's self-attention.
        use_ct: build and apply the CT attention (LDM-CT / LDM-P-CT); ``False`` gives LDM / LDM-P (no CT at all).
        prediction: :class:`PredictionType`, the training target (the architecture is the same).
        residual: ẑ0 = z_t + U-Net(z_t, t, z_CT) (residual learning, only with ``prediction="sample"``): MONAI's
            U-Net ends in a zero-initialised convolution, so an untrained residual denoiser is the identity, the best
            estimate at high doses, and training learns the correction.  A plain ẑ0 = U-Net(·) starts at 0 and has to
            learn the identity first: after 300 iterations of the image-space extension it made a 30 %-dose training
            patch 4 times worse (MSE 0.051 against the input's 0.012) and biased the air by 0.05 network units.
        ct_head_channels: d of the CT attention; each site gets max(1, C_site // ct_head_channels) heads.
        ct_window: w of the relative position bias.
        ct_max_tokens: ``max_tokens`` of every CT attention module.
    """

    def __init__(
        self,
        *,
        latent_channels: int = 3,
        ct_channels: int | None = None,
        channels: Sequence[int] = (64, 128, 256),
        num_res_blocks: Sequence[int] | int = 2,
        attention_levels: Sequence[bool] = (False, True, True),
        norm_num_groups: int = 32,
        num_head_channels: Sequence[int] | int = 32,
        resblock_updown: bool = False,
        use_flash_attention: bool = False,
        use_ct: bool = True,
        prediction: PredictionType | str = PredictionType.SAMPLE,
        ct_head_channels: int = 32,
        ct_window: int = DEFAULT_WINDOW,
        ct_max_tokens: int = DEFAULT_MAX_TOKENS,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.latent_channels = _check_int(latent_channels, "latent_channels", minimum=1)
        self.ct_channels = (
            self.latent_channels if ct_channels is None else _check_int(ct_channels, "ct_channels", minimum=1)
        )
        if isinstance(channels, str | bytes) or not isinstance(channels, Sequence) or len(channels) < 1:
            raise TypeError(f"channels must be a non-empty sequence of ints, got {channels!r}")
        self.channels = tuple(_check_int(c, "channels", minimum=1) for c in channels)
        if isinstance(attention_levels, str | bytes) or not isinstance(attention_levels, Sequence):
            raise TypeError(f"attention_levels must be a sequence of bools, got {attention_levels!r}")
        if len(attention_levels) != len(self.channels):
            raise ValueError(
                f"attention_levels must have one entry per level ({len(self.channels)}), got {attention_levels!r}"
            )
        self.attention_levels = tuple(bool(a) for a in attention_levels)
        if not isinstance(use_ct, bool):
            raise TypeError(f"use_ct must be a bool, got {use_ct!r}")
        self.use_ct = use_ct
        self.prediction = check_choice(prediction, PredictionType, "prediction")
        if not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool, got {residual!r}")
        if residual and self.prediction is not PredictionType.SAMPLE:
            raise ValueError(f"residual=True predicts ẑ0 = z_t + correction: it needs prediction='sample', got "
                             f"prediction={self.prediction.value!r}")
        self.residual = residual
        self.unet = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            channels=self.channels,
            num_res_blocks=num_res_blocks,
            attention_levels=self.attention_levels,
            norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
            resblock_updown=resblock_updown,
            use_flash_attention=use_flash_attention,
        )
        self._site_levels = {name: level for name, (_, level) in self.ct_sites().items()}
        self.ct_attention: nn.ModuleDict | None = None
        if use_ct:
            head = _check_int(ct_head_channels, "ct_head_channels", minimum=1)
            self.ct_attention = nn.ModuleDict(
                {
                    name: CTGuidedCrossAttention(
                        pet_channels=c,
                        ct_channels=self.ct_channels,
                        num_heads=max(1, c // head),
                        head_channels=head,
                        window=ct_window,
                        max_tokens=ct_max_tokens,
                    )
                    for name, (c, _) in self.ct_sites().items()
                }
            )

    @property
    def levels(self) -> int:
        return len(self.channels)

    def ct_sites(self) -> dict[str, tuple[int, int]]:
        """``{site: (pet_channels, level)}`` of the CT attention sites (module docstring), in forward order."""
        c, last = self.channels, self.levels - 1
        sites: dict[str, tuple[int, int]] = {}
        for level in range(self.levels):
            if self.attention_levels[level]:
                sites[f"down{level}"] = (c[0] if level == 0 else c[level - 1], level)
        sites["mid"] = (c[last], last)
        for level in reversed(range(last)):
            if self.attention_levels[level]:
                sites[f"up{level}"] = (c[level + 1], level)
        return sites

    def _check_spatial(self, spatial: Sequence[int]) -> None:
        factor = 2 ** (self.levels - 1)
        if any(s % factor for s in spatial):
            raise ValueError(
                f"z_t spatial size must be divisible by 2^(levels - 1) = {factor} for this U-Net, got {tuple(spatial)}"
            )

    def _ct_at(self, site: str, h: torch.Tensor, ct_pyramid: list[torch.Tensor] | None) -> torch.Tensor:
        if self.ct_attention is None or ct_pyramid is None or site not in self.ct_attention:
            return h
        level = self._site_levels[site]
        return self.ct_attention[site](h, ct_pyramid[level])

    def forward(self, z_t: torch.Tensor, timesteps: torch.Tensor, z_ct: torch.Tensor | None = None) -> torch.Tensor:
        """ẑ0 (or ε̂, see ``prediction``) from (z_t, t, z_CT).

        Args:
            z_t: ``(B, latent_channels, D, H, W)``; D, H, W divisible by 2^(L−1).
            timesteps: ``(B,)`` integer steps.
            z_ct: ``(B, ct_channels, D, H, W)``; required when ``use_ct``, ignored (not even checked) otherwise.

        Returns:
            ``(B, latent_channels, D, H, W)``.
        """
        z_t = _check_volume(z_t, "z_t", self.latent_channels)
        self._check_spatial(z_t.shape[2:])
        pyramid: list[torch.Tensor] | None = None
        if self.use_ct:
            if z_ct is None:
                raise ValueError(
                    "z_ct is required when use_ct=True (build with use_ct=False for LDM / LDM-P), got None"
                )
            z_ct = _check_volume(z_ct, "z_ct", self.ct_channels)
            if z_ct.shape[0] != z_t.shape[0] or z_ct.shape[2:] != z_t.shape[2:]:
                raise ValueError(
                    f"z_ct must have the batch and spatial size of z_t, got z_t {tuple(z_t.shape)} and "
                    f"z_ct {tuple(z_ct.shape)}"
                )
            z_ct = z_ct.to(z_t.dtype)
            pyramid = [z_ct if lv == 0 else F.avg_pool3d(z_ct, 2**lv) for lv in range(self.levels)]
        unet = self.unet
        # MONAI DiffusionModelUNet.forward, steps 1, 3-7 (no class labels, no context), with the CT sites added.
        emb = unet.time_embed(get_timestep_embedding(timesteps, unet.block_out_channels[0]).to(dtype=z_t.dtype))
        h = unet.conv_in(z_t)
        skips: list[torch.Tensor] = []
        for level, block in enumerate(unet.down_blocks):
            h = self._ct_at(f"down{level}", h, pyramid)
            if level == 0:
                skips.append(h)
            h, res = block(hidden_states=h, temb=emb, context=None)
            skips.extend(res)
        h = unet.middle_block(hidden_states=h, temb=emb, context=None)
        h = self._ct_at("mid", h, pyramid)
        for j, block in enumerate(unet.up_blocks):
            h = self._ct_at(f"up{self.levels - 1 - j}", h, pyramid)
            idx = -len(block.resnets)
            res, skips = skips[idx:], skips[:idx]
            h = block(hidden_states=h, res_hidden_states_list=res, temb=emb, context=None)
        return z_t + unet.out(h) if self.residual else unet.out(h)
