"""Training losses: the LegoPET DWT loss (PyWavelets filter banks applied with torch convolutions), the uPETe
autoencoder's KL term and optional perceptual loss."""

from __future__ import annotations

from .dwt import Distance, DWTLoss, MSEPlusDWTLoss, Subband, WaveletMode, dwt2, wavedec2
from .kl import kl_divergence
from .perceptual import LocalPerceptualLoss, optional_perceptual_loss

__all__ = [
    "DWTLoss",
    "Distance",
    "LocalPerceptualLoss",
    "MSEPlusDWTLoss",
    "Subband",
    "WaveletMode",
    "dwt2",
    "kl_divergence",
    "optional_perceptual_loss",
    "wavedec2",
]
