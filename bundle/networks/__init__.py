"""Networks of the bundle built from MONAI DiffusionModelUNet blocks (LegoPET denoiser and PnPNet) and MONAI
convolution blocks (DeepPET).  Importing runs nothing."""

from __future__ import annotations

from .ct_attention import CTGuidedCrossAttention, CTGuidedLatentDenoiser
from .deeppet import DeepPET
from .legopet import (
    FeatureInjection,
    FeatureShapes,
    LegoPETCondition,
    LegoPETDenoiser,
    PnPNet,
    null_condition,
)

__all__ = [
    "CTGuidedCrossAttention",
    "CTGuidedLatentDenoiser",
    "DeepPET",
    "FeatureInjection",
    "FeatureShapes",
    "LegoPETCondition",
    "LegoPETDenoiser",
    "PnPNet",
    "null_condition",
]
