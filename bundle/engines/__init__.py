"""PrepareBatch subclasses and iteration updates for the stock MONAI trainers (condition dropout, frozen-feature
conditions, the conditional-GAN baselines).  Importing runs nothing."""

from __future__ import annotations

from .legopet import LegoPETPrepareBatch
from .legopet_gan import ConditionalGANIteration

__all__ = ["ConditionalGANIteration", "LegoPETPrepareBatch"]
