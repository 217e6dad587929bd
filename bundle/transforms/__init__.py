"""MONAI dictionary transforms of the bundle.  Importing runs nothing."""

from __future__ import annotations

from .petct import CTWindowd, PETMinMaxScaled, ValidatePETCTd, invert_petct_preprocessing, petct_preprocessing
from .simulation import BinomialThinningd, SimulateScand

__all__ = [
    "BinomialThinningd",
    "CTWindowd",
    "PETMinMaxScaled",
    "SimulateScand",
    "ValidatePETCTd",
    "invert_petct_preprocessing",
    "petct_preprocessing",
]
