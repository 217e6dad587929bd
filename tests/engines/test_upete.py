"""LatentDiffusionPrepareBatch in the sinogram domain: z_t is the encoding of the data's x_t at the data's steps."""

from __future__ import annotations

import pytest
import torch

from bundle.diffusion.latent import GaussianLatentDiffusion
from bundle.engines.upete import LatentDiffusionPrepareBatch
from tests.diffusion.test_latent import _poisson
from tests.networks.test_upete import _model


def _batch():
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 1, 16, 16, 8, generator=g)
    return {"pet": x0, "pet_t": x0 + 0.1 * torch.rand(2, 1, 16, 16, 8, generator=g), "timestep": torch.tensor([3, 250])}


def test_sinogram_domain_batch_encodes_the_data_degradation():
    model = _model(use_ct=False).eval()
    prepare = LatentDiffusionPrepareBatch(model=model, process=_poisson(), degraded_key="pet_t")
    batch = _batch()
    z_t, z0, args, kwargs = prepare(batch)
    with torch.no_grad():
        torch.testing.assert_close(z_t, model.encode(batch["pet_t"]))
        torch.testing.assert_close(z0, model.encode(batch["pet"]))
    assert kwargs["timesteps"].tolist() == [3, 250] and args == ()


def test_sinogram_domain_errors():
    model = _model(use_ct=False)
    with pytest.raises(ValueError, match="needs a PoissonLatentDiffusion process"):
        LatentDiffusionPrepareBatch(model=model, process=GaussianLatentDiffusion(num_train_timesteps=400),
                                    degraded_key="pet_t")
    prepare = LatentDiffusionPrepareBatch(model=model, process=_poisson(), degraded_key="pet_t")
    batch = _batch()
    with pytest.raises(ValueError, match="no 'pet_t' entry"):
        prepare({"pet": batch["pet"], "timestep": batch["timestep"]})
    with pytest.raises(ValueError, match=r"steps in \[0, 399\]"):
        prepare(dict(batch, timestep=torch.tensor([3, 400])))
    with pytest.raises(ValueError, match="crop it together"):
        prepare(dict(batch, pet_t=batch["pet_t"][..., :4]))
