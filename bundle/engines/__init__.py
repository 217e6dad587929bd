"""PrepareBatch subclasses for the stock MONAI trainers (condition dropout, frozen-feature conditions).  Importing
runs nothing."""

from __future__ import annotations

from .legopet import LegoPETPrepareBatch

__all__ = ["LegoPETPrepareBatch"]
