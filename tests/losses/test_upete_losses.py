"""The uPETe autoencoder's losses (bundle.losses.kl, bundle.losses.perceptual) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.nets import resnet10

from bundle.losses import LocalPerceptualLoss, kl_divergence, optional_perceptual_loss


def test_kl_divergence_matches_the_gaussian_closed_form():
    mu, sigma = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    assert float(kl_divergence(mu, sigma)) == pytest.approx(0.0, abs=1e-6)  # KL(N(0, 1) || N(0, 1)) = 0
    # per voxel ½ (μ² + σ² − log σ² − 1) with μ = 1, σ = 2: ½ (1 + 4 − log 4 − 1); summed over 12 voxels
    expected = 12 * 0.5 * (4.0 - math.log(4.0))
    assert float(kl_divergence(torch.ones(2, 3, 4), 2 * torch.ones(2, 3, 4))) == pytest.approx(expected, rel=1e-6)


def test_local_perceptual_loss_is_zero_for_identical_images_and_needs_a_file(tmp_path):
    assert optional_perceptual_loss(None) is None and optional_perceptual_loss("") is None
    with pytest.raises(ValueError, match="weights_path must be an existing local file"):
        LocalPerceptualLoss(weights_path=tmp_path / "missing.pt")
    torch.manual_seed(0)
    path = tmp_path / "resnet10.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in resnet10(spatial_dims=3, n_input_channels=1,
                                                                      feed_forward=False).state_dict().items()}}, path)
    loss = optional_perceptual_loss(path)
    x = torch.rand(1, 1, 16, 16, 16)
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, torch.rand(1, 1, 16, 16, 16))) > 0.0
    assert not any(p.requires_grad for p in loss.parameters())
