"""Training losses: the LegoPET DWT loss (PyWavelets filter banks applied with torch convolutions)."""

from __future__ import annotations

from .dwt import Distance, DWTLoss, MSEPlusDWTLoss, Subband, WaveletMode, dwt2, wavedec2

__all__ = ["DWTLoss", "Distance", "MSEPlusDWTLoss", "Subband", "WaveletMode", "dwt2", "wavedec2"]
