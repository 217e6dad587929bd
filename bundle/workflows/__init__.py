"""Reconstruction and evaluation workflows built on the bundle's physics, inferers and metrics.  Importing runs
nothing (no data is read, no GPU is probed)."""

from __future__ import annotations

from .petdds import (
    METHODS,
    bias_variance_study,
    evaluate_petdds,
    reconstruct_petdds_file,
    uncertainty_study,
)

__all__ = [
    "METHODS",
    "bias_variance_study",
    "evaluate_petdds",
    "reconstruct_petdds_file",
    "uncertainty_study",
]
