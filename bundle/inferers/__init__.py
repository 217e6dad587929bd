"""MONAI inferers of the bundle (diffusion samplers with PET data consistency).  Importing runs nothing."""

from __future__ import annotations

from .legopet import LegoPETInferer, LegoPETTrainingInferer
from .petdds import (
    PETDDSInferer,
    Preconditioner,
    default_inferer,
    reconstruct_many,
    uncertainty_from_samples,
)

__all__ = [
    "LegoPETInferer",
    "LegoPETTrainingInferer",
    "PETDDSInferer",
    "Preconditioner",
    "default_inferer",
    "reconstruct_many",
    "uncertainty_from_samples",
]
