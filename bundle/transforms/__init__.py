"""MONAI dictionary transforms of the bundle.  Importing runs nothing."""

from __future__ import annotations

from .petct import CTWindowd, ValidatePETCTd, invert_petct_preprocessing, petct_preprocessing
from .scaling import FromNetworkUnitsd, ScaleStatistic, Standardisation, ToNetworkUnitsd
from .simulation import BinomialThinningd, SimulateScand

__all__ = [
    "BinomialThinningd",
    "CTWindowd",
    "FromNetworkUnitsd",
    "ScaleStatistic",
    "SimulateScand",
    "Standardisation",
    "ToNetworkUnitsd",
    "ValidatePETCTd",
    "invert_petct_preprocessing",
    "petct_preprocessing",
]
