"""Studies only: each module runs one method's evaluation or diagnostic studies on a dataset and writes tables and
figures (:mod:`bundle.evaluation`).  File inference and model loading live in :mod:`bundle.app` and
:mod:`bundle.checkpoint`; nothing in :mod:`bundle.app` or :mod:`bundle.zoo` imports this package.  Importing runs
nothing (no data is read, no GPU is probed)."""

from __future__ import annotations

from .petdds import METHODS, evaluate_petdds
from .petdds_studies import bias_variance_study, uncertainty_study

__all__ = [
    "METHODS",
    "bias_variance_study",
    "evaluate_petdds",
    "uncertainty_study",
]
