"""The KL term of the uPETe autoencoder (a VAE-style ``AutoencoderKL``).  Importing runs nothing."""

from __future__ import annotations

import torch

__all__ = ["kl_divergence"]


def kl_divergence(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """½ Σ (μ² + σ² − log σ² − 1) over channels and voxels, averaged over the batch (MONAI tutorial convention)."""
    per_item = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1.0)
    return per_item.flatten(1).sum(dim=1).mean()
