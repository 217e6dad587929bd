"""MONAI dictionary transforms of the bundle.  Importing runs nothing."""

from __future__ import annotations

from .simulation import BinomialThinningd, SimulateScand

__all__ = ["BinomialThinningd", "SimulateScand"]
