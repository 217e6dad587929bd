"""Reconstruction and evaluation workflows built on the bundle's physics, inferers and metrics.  Importing runs
nothing (no data is read, no GPU is probed)."""

from __future__ import annotations

from .petdds import (
    METHODS,
    PETDDSCase,
    bias_variance_study,
    evaluate_petdds,
    load_petdds_case,
    reconstruct_petdds_file,
    uncertainty_study,
)

__all__ = [
    "METHODS",
    "PETDDSCase",
    "bias_variance_study",
    "evaluate_petdds",
    "load_petdds_case",
    "reconstruct_petdds_file",
    "uncertainty_study",
]
