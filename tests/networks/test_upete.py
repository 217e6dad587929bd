"""uPETe networks: autoencoder latent grid (f = 4), CT encoder grid, UPETe wiring and argument errors."""

from __future__ import annotations

import pytest
import torch

from bundle.networks.ct_attention import CTGuidedLatentDenoiser
from bundle.networks.upete import (
    CTEncoder,
    IdentityAutoencoder,
    LDMVariant,
    UPETe,
    build_upete,
    compression_factor,
    latent_shape,
    pet_autoencoder,
)

LAYOUT = {"channels": (16, 32), "num_res_blocks": 1, "attention_levels": (False, True), "norm_num_groups": 8,
          "num_head_channels": 16, "ct_head_channels": 16, "ct_window": 2}


def _ae():
    return pet_autoencoder(channels=(8, 16, 16), latent_channels=3, norm_num_groups=4)


def _model(use_ct: bool) -> UPETe:
    torch.manual_seed(0)
    denoiser = CTGuidedLatentDenoiser(latent_channels=3, use_ct=use_ct, **LAYOUT)
    ct_encoder = CTEncoder(channels=(8, 16, 16), latent_channels=3, norm_num_groups=4) if use_ct else None
    return UPETe(autoencoder=_ae(), denoiser=denoiser, ct_encoder=ct_encoder, latent_scale=0.5)


def test_autoencoder_round_trip_shapes_and_latent_grid_f4():
    ae = _ae()
    x = torch.rand(2, 1, 16, 24, 8)
    recon, mu, sigma = ae(x)
    assert compression_factor((8, 16, 16)) == 4
    assert recon.shape == x.shape
    assert mu.shape == sigma.shape == (2, 3, 4, 6, 2)  # (D/4, H/4, W/4)
    assert latent_shape((16, 24, 8), factor=4) == (4, 6, 2)


def test_latent_shape_rejects_sizes_not_divisible_by_f():
    with pytest.raises(ValueError, match="divisible by the compression factor f = 4"):
        latent_shape((16, 18, 8), factor=4)


def test_ct_encoder_maps_to_the_pet_latent_grid():
    enc = CTEncoder(channels=(8, 16, 16), latent_channels=5, norm_num_groups=4)
    assert enc(torch.rand(1, 1, 16, 16, 8)).shape == (1, 5, 4, 4, 2)
    with pytest.raises(ValueError, match=r"ct must have shape \(B, 1, D, H, W\)"):
        enc(torch.rand(1, 2, 16, 16, 8))


def test_upete_encode_decode_scale_and_shapes():
    model = _model(use_ct=False).eval()
    x = torch.rand(1, 1, 16, 16, 8)
    z = model.encode(x)
    assert z.shape == (1, 3, 4, 4, 2)
    expected = model.autoencoder.encode(x)[0] * 0.5  # z = s μ_E(x), no sampling
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(model.encode(x), z)  # deterministic
    assert model.decode(z).shape == x.shape
    out = model(z, torch.tensor([3]))
    assert out.shape == z.shape


def test_ct_variant_requires_ct_and_the_same_grid():
    model = _model(use_ct=True).eval()
    z = torch.randn(1, 3, 4, 4, 2)
    with pytest.raises(ValueError, match="ct is required"):
        model(z, torch.tensor([1]))
    with pytest.raises(ValueError, match="ct must be on the PET's grid"):
        model(z, torch.tensor([1]), torch.rand(1, 1, 16, 16, 16))
    assert model(z, torch.tensor([1]), torch.rand(1, 1, 16, 16, 8)).shape == z.shape


def test_upete_rejects_inconsistent_parts():
    denoiser = CTGuidedLatentDenoiser(latent_channels=3, use_ct=True, **LAYOUT)
    with pytest.raises(ValueError, match="ct_encoder is required"):
        UPETe(autoencoder=_ae(), denoiser=denoiser)
    plain = CTGuidedLatentDenoiser(latent_channels=3, use_ct=False, **LAYOUT)
    with pytest.raises(ValueError, match="ct_encoder must be None"):
        UPETe(autoencoder=_ae(), denoiser=plain, ct_encoder=CTEncoder(channels=(8, 16, 16), norm_num_groups=4))
    with pytest.raises(ValueError, match="latent_scale must be a number > 0"):
        UPETe(autoencoder=_ae(), denoiser=plain, latent_scale=0.0)


def test_variant_flags_and_parse_error():
    assert [(v.uses_poisson, v.uses_ct) for v in LDMVariant] == [(False, False), (True, False), (False, True),
                                                                 (True, True)]
    with pytest.raises(ValueError, match="variant must be one of"):
        LDMVariant.parse("LDM-X")


def test_autoencoder_factory_checks_groups():
    with pytest.raises(ValueError, match="norm_num_groups=5 must divide"):
        pet_autoencoder(channels=(8, 16, 16), norm_num_groups=5)


def test_image_space_upete_works_on_the_voxels():
    """The image-space extension: E = D = identity (f = 1), so z = s x exactly and D(z / s) = x; E_CT keeps its own
    channel count (8) at full resolution and the denoiser's CT attention is built for it."""
    layout = {"channels": (8, 16, 32), "num_res_blocks": 1, "attention_levels": (False, False, True),
              "norm_num_groups": 8, "num_head_channels": 8, "ct_head_channels": 8, "ct_window": 2}
    torch.manual_seed(0)
    model = build_upete("LDM-P-CT", autoencoder=IdentityAutoencoder(), latent_scale=4.0, latent_channels=1,
                        denoiser_layout=layout,
                        ct_encoder_layout={"channels": (8,), "num_res_blocks": 1, "norm_num_groups": 8,
                                           "latent_channels": 8})
    assert model.factor == 1 and model.denoiser.ct_channels == 8 and model.ct_encoder.latent_channels == 8
    assert list(model.autoencoder.parameters()) == []
    x, ct = torch.rand(2, 1, 8, 16, 16), torch.rand(2, 1, 8, 16, 16)
    z = model.encode(x)
    assert torch.equal(z, 4.0 * x) and torch.allclose(model.decode(z), x)
    assert model.encode_ct(ct).shape == (2, 8, 8, 16, 16)
    assert model(z, torch.tensor([0, 399]), ct).shape == x.shape
    with pytest.raises(TypeError, match="AutoencoderKL or an IdentityAutoencoder"):
        UPETe(autoencoder=torch.nn.Identity(), denoiser=model.denoiser, ct_encoder=model.ct_encoder)
