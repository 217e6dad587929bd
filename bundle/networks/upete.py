"""uPETe networks: the PET autoencoder (MONAI ``AutoencoderKL``, compression f), the CT encoder E_CT to the same
latent grid, and :class:`UPETe`, the container the trainers and the
:class:`~bundle.inferers.upete.LatentEnhancementInferer` share (Jiang et al., MICCAI 2023, Sect. 2.1-2.2).

Shapes (f = 2^(L−1) for an L-level encoder; the paper's f = H/h = W/w = Z/z, our default f = 4)::

    x     (B, 1, D, H, W)              PET in network units            E(x) = z_0   (B, c, D/f, H/f, W/f)
    ct    (B, 1, D, H, W)              CT windowed to [0, 1]           E_CT(ct) = z_CT (B, c_ct, D/f, H/f, W/f)
    D(z)  (B, 1, D, H, W)              decoded PET

The latents the diffusion model sees are scaled: z = s · μ_E(x) with the encoder mean μ_E and a scalar s (the
usual LDM "scale factor", 1 / std of training latents), so the denoiser works on latents of unit variance;
:meth:`UPETe.decode` divides by s again.

The CT encoder is MONAI's ``AutoencoderKL`` encoder stack (``monai.networks.nets.autoencoderkl.Encoder``: conv, ResNet
blocks, strided downsampling) without the variational head; it is trained together with the latent denoiser (the
paper does not say how E_CT is trained; METHODS.md).  Importing runs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import torch
from monai.networks.nets import AutoencoderKL
from monai.networks.nets.autoencoderkl import Encoder
from torch import nn

from .._checks import check_int as _check_int
from .ct_attention import CTGuidedLatentDenoiser

__all__ = [
    "CTEncoder",
    "IdentityAutoencoder",
    "LDMVariant",
    "UPETe",
    "build_upete",
    "compression_factor",
    "ct_encoder_for",
    "latent_shape",
    "pet_autoencoder",
]


class LDMVariant(StrEnum):
    """The four ablation variants of the paper's Table 1."""

    LDM = "LDM"
    """Gaussian diffusion, no CT."""
    LDM_P = "LDM-P"
    """Poisson diffusion, no CT."""
    LDM_CT = "LDM-CT"
    """Gaussian diffusion, CT-guided cross-attention."""
    LDM_P_CT = "LDM-P-CT"
    """Poisson diffusion, CT-guided cross-attention (uPETe)."""

    @property
    def uses_poisson(self) -> bool:
        return self in (LDMVariant.LDM_P, LDMVariant.LDM_P_CT)

    @property
    def uses_ct(self) -> bool:
        return self in (LDMVariant.LDM_CT, LDMVariant.LDM_P_CT)

    @classmethod
    def parse(cls, value: object) -> LDMVariant:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"variant must be one of {[v.value for v in cls]}, got {value!r}") from None


def _check_channels(channels: object, name: str) -> tuple[int, ...]:
    if isinstance(channels, str | bytes) or not isinstance(channels, Sequence) or len(channels) < 1:
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {channels!r}")
    return tuple(_check_int(c, name, minimum=1) for c in channels)


def compression_factor(channels: Sequence[int]) -> int:
    """f = 2^(L − 1) of an AutoencoderKL / CT encoder with L = ``len(channels)`` levels."""
    return 2 ** (len(_check_channels(channels, "channels")) - 1)


def latent_shape(spatial: Sequence[int], *, factor: int) -> tuple[int, ...]:
    """(D/f, H/f, W/f) of an image (D, H, W); ``ValueError`` unless every size is divisible by f."""
    f = _check_int(factor, "factor", minimum=1)
    sizes = tuple(_check_int(s, "spatial", minimum=1) for s in spatial)
    if any(s % f for s in sizes):
        raise ValueError(f"spatial size {sizes} must be divisible by the compression factor f = {f}")
    return tuple(s // f for s in sizes)


def pet_autoencoder(
    *,
    channels: Sequence[int] = (32, 64, 64),
    latent_channels: int = 3,
    num_res_blocks: int = 1,
    norm_num_groups: int = 16,
    attention_levels: Sequence[bool] | None = None,
    with_nonlocal_attn: bool = False,
) -> AutoencoderKL:
    """E and D: a 3D MONAI ``AutoencoderKL`` (1 channel in/out) with f = 2^(len(channels) − 1) (default 4).

    Args (keyword-only):
        channels: channels per level; ``len(channels) = 3`` gives f = 4.
        latent_channels: c, channels of z_0.
        num_res_blocks: ResNet blocks per level.
        norm_num_groups: GroupNorm groups (must divide every entry of ``channels``).
        attention_levels: self-attention per level (default none: attention on 3D patches is memory-bound).
        with_nonlocal_attn: the encoder/decoder's middle self-attention.
    """
    chans = _check_channels(channels, "channels")
    groups = _check_int(norm_num_groups, "norm_num_groups", minimum=1)
    if any(c % groups for c in chans):
        raise ValueError(f"norm_num_groups={groups} must divide every entry of channels={chans}")
    levels = tuple(attention_levels) if attention_levels is not None else (False,) * len(chans)
    if len(levels) != len(chans):
        raise ValueError(f"attention_levels must have {len(chans)} entries (one per level), got {attention_levels!r}")
    return AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=chans,
        latent_channels=_check_int(latent_channels, "latent_channels", minimum=1),
        num_res_blocks=_check_int(num_res_blocks, "num_res_blocks", minimum=1),
        norm_num_groups=groups,
        attention_levels=levels,
        with_encoder_nonlocal_attn=bool(with_nonlocal_attn),
        with_decoder_nonlocal_attn=bool(with_nonlocal_attn),
    )


class IdentityAutoencoder(nn.Module):
    """E(x) = x, D(z) = z: the "autoencoder" of the image-space extension (f = 1, one latent channel).

    Not in the paper.  With it the same :class:`UPETe`, trainers, inferer and checkpoints run the Poisson diffusion
    and the CT attention on the PET voxels themselves, so what the latent compression costs can be told apart from
    what the method does (issue 17).  It has no weights; ``encode`` returns ``(x, 0)`` like AutoencoderKL's
    ``(μ, σ)`` and the calibration's latent scale s still puts the voxels on unit scale for the denoiser.
    """

    factor = 1
    latent_channels = 1

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.zeros_like(x)

    def decode_stage_2_outputs(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x, x, torch.zeros_like(x)


class CTEncoder(nn.Module):
    """E_CT: CT ``(B, 1, D, H, W)`` in [0, 1] -> z_CT ``(B, latent_channels, D/f, H/f, W/f)``, f = 2^(L − 1).

    MONAI's AutoencoderKL ``Encoder`` (conv_in, ResNet blocks, L − 1 strided downsamplings, GroupNorm + conv out).

    Args (keyword-only):
        channels: channels per level (``len = 3`` for f = 4, as the PET autoencoder).
        latent_channels: channels of z_CT.
        num_res_blocks: ResNet blocks per level.
        norm_num_groups: GroupNorm groups.
    """

    def __init__(
        self,
        *,
        channels: Sequence[int] = (16, 32, 32),
        latent_channels: int = 3,
        num_res_blocks: int = 1,
        norm_num_groups: int = 8,
    ) -> None:
        super().__init__()
        chans = _check_channels(channels, "channels")
        groups = _check_int(norm_num_groups, "norm_num_groups", minimum=1)
        if any(c % groups for c in chans):
            raise ValueError(f"norm_num_groups={groups} must divide every entry of channels={chans}")
        self.factor = compression_factor(chans)
        self.latent_channels = _check_int(latent_channels, "latent_channels", minimum=1)
        self.encoder = Encoder(
            spatial_dims=3,
            in_channels=1,
            channels=chans,
            out_channels=self.latent_channels,
            num_res_blocks=(_check_int(num_res_blocks, "num_res_blocks", minimum=1),) * len(chans),
            norm_num_groups=groups,
            norm_eps=1e-6,
            attention_levels=(False,) * len(chans),
            with_nonlocal_attn=False,
        )

    def forward(self, ct: torch.Tensor) -> torch.Tensor:
        if not isinstance(ct, torch.Tensor) or ct.ndim != 5 or ct.shape[1] != 1:
            shape = tuple(ct.shape) if isinstance(ct, torch.Tensor) else type(ct).__name__
            raise ValueError(f"ct must have shape (B, 1, D, H, W), got {shape}")
        latent_shape(ct.shape[2:], factor=self.factor)
        return self.encoder(ct)


class UPETe(nn.Module):
    """Autoencoder (E, D) + latent denoiser f_θ(z_t, t, z_CT) + optional E_CT, with the latent scale s.

    With an :class:`IdentityAutoencoder` the "latents" are the voxels (the image-space extension).

    ``forward(z_t, timesteps, ct=None)`` is the denoiser call the trainers and the inferer make:
    ẑ0 = f_θ(z_t, t, E_CT(ct)) (``ct`` is the CT *image*, encoded here so E_CT trains with f_θ).

    Args (keyword-only):
        autoencoder: the trained PET ``AutoencoderKL`` (frozen while the denoiser trains), or an
            :class:`IdentityAutoencoder` (image space).
        denoiser: :class:`CTGuidedLatentDenoiser`; ``use_ct=True`` needs ``ct_encoder``.
        ct_encoder: :class:`CTEncoder` with the autoencoder's f and the denoiser's ``ct_channels``.
        latent_scale: s > 0 (z = s μ_E(x)).
    """

    def __init__(
        self,
        *,
        autoencoder: AutoencoderKL,
        denoiser: CTGuidedLatentDenoiser,
        ct_encoder: CTEncoder | None = None,
        latent_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(autoencoder, AutoencoderKL | IdentityAutoencoder):
            raise TypeError(f"autoencoder must be a monai AutoencoderKL or an IdentityAutoencoder (image space), got "
                            f"{type(autoencoder).__name__}")
        if not isinstance(denoiser, CTGuidedLatentDenoiser):
            raise TypeError(f"denoiser must be a CTGuidedLatentDenoiser, got {type(denoiser).__name__}")
        if denoiser.use_ct and ct_encoder is None:
            raise ValueError("ct_encoder is required when the denoiser uses CT (use_ct=True), got None")
        if not denoiser.use_ct and ct_encoder is not None:
            raise ValueError("ct_encoder must be None when the denoiser has no CT attention (use_ct=False)")
        if ct_encoder is not None and ct_encoder.latent_channels != denoiser.ct_channels:
            raise ValueError(
                f"ct_encoder.latent_channels={ct_encoder.latent_channels} must equal the denoiser's "
                f"ct_channels={denoiser.ct_channels}"
            )
        if isinstance(latent_scale, bool) or not isinstance(latent_scale, int | float) or not latent_scale > 0:
            raise ValueError(f"latent_scale must be a number > 0, got {latent_scale!r}")
        self.autoencoder = autoencoder
        self.denoiser = denoiser
        self.ct_encoder = ct_encoder
        self.register_buffer("latent_scale", torch.tensor(float(latent_scale)))
        self.factor = _autoencoder_factor(autoencoder)

    @property
    def uses_ct(self) -> bool:
        return self.denoiser.use_ct

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of f_θ and E_CT (the autoencoder stays frozen in the diffusion stage)."""
        params = list(self.denoiser.parameters())
        if self.ct_encoder is not None:
            params += list(self.ct_encoder.parameters())
        return params

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = s · μ_E(x): ``(B, 1, D, H, W)`` -> ``(B, c, D/f, H/f, W/f)`` (no gradient into E)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, 1, D, H, W), got {shape}")
        latent_shape(x.shape[2:], factor=self.factor)
        with torch.no_grad():
            return self.autoencoder.encode(x)[0] * self.latent_scale  # μ_E (encode_stage_2_inputs would sample)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D(z / s): ``(B, c, d, h, w)`` -> ``(B, 1, f d, f h, f w)``."""
        with torch.no_grad():
            return self.autoencoder.decode_stage_2_outputs(z / self.latent_scale)

    def encode_ct(self, ct: torch.Tensor | None, *, like: torch.Tensor | None = None) -> torch.Tensor | None:
        """z_CT = E_CT(ct), or ``None`` for a model without CT; ``like`` (a PET image) checks the grid."""
        if self.ct_encoder is None:
            return None
        if ct is None:
            raise ValueError("ct is required: this model uses CT-guided attention (LDM-CT / LDM-P-CT), got None")
        if like is not None and (ct.shape[0] != like.shape[0] or ct.shape[2:] != like.shape[2:]):
            raise ValueError(
                f"ct must be on the PET's grid: expected shape {(like.shape[0], 1, *like.shape[2:])}, got "
                f"{tuple(ct.shape)}"
            )
        return self.ct_encoder(ct)

    def forward(self, z_t: torch.Tensor, timesteps: torch.Tensor, ct: torch.Tensor | None = None) -> torch.Tensor:
        """ẑ0 = f_θ(z_t, t, E_CT(ct)): ``(B, c, d, h, w)`` -> ``(B, c, d, h, w)``; ``ct`` ``(B, 1, f d, f h, f w)``."""
        z_ct = self.encode_ct(ct)
        if z_ct is not None and z_ct.shape[2:] != z_t.shape[2:]:
            raise ValueError(
                f"ct must be on the PET's grid: its latent {tuple(z_ct.shape)} does not match z_t {tuple(z_t.shape)}"
            )
        return self.denoiser(z_t, timesteps, z_ct)


def _autoencoder_factor(autoencoder: AutoencoderKL | IdentityAutoencoder) -> int:
    """f of a MONAI AutoencoderKL: 2^(number of downsampling blocks in its encoder); 1 for the identity."""
    from monai.networks.nets.autoencoderkl import AEKLDownsample

    if isinstance(autoencoder, IdentityAutoencoder):
        return 1
    return 2 ** sum(isinstance(b, AEKLDownsample) for b in autoencoder.encoder.blocks)


def ct_encoder_for(variant: LDMVariant | str, **layout: Any) -> CTEncoder | None:
    """A :class:`CTEncoder` for the CT variants, ``None`` otherwise."""
    return CTEncoder(**layout) if LDMVariant.parse(variant).uses_ct else None


def build_upete(
    variant: LDMVariant | str,
    *,
    autoencoder: torch.nn.Module,
    latent_scale: float,
    latent_channels: int = 3,
    denoiser_layout: Mapping[str, Any],
    ct_encoder_layout: Mapping[str, Any],
) -> UPETe:
    """The :class:`UPETe` of ``variant`` (denoiser with or without CT attention + E_CT) around ``autoencoder``.

    ``ct_encoder_layout`` may name its own ``latent_channels`` (channels of z_CT, default ``latent_channels``): the
    image-space extension has one PET channel but gives the CT attention several CT feature channels."""
    v = LDMVariant.parse(variant)
    ct_layout = dict(ct_encoder_layout)
    ct_channels = ct_layout.pop("latent_channels", latent_channels)
    denoiser = CTGuidedLatentDenoiser(latent_channels=latent_channels, ct_channels=ct_channels, use_ct=v.uses_ct,
                                      **dict(denoiser_layout))
    ct_encoder = ct_encoder_for(v, latent_channels=ct_channels, **ct_layout)
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    return UPETe(autoencoder=autoencoder, denoiser=denoiser, ct_encoder=ct_encoder, latent_scale=latent_scale)
