"""MONAI inferers of the bundle (diffusion samplers with PET data consistency).  Importing runs nothing."""

from __future__ import annotations

from .petdds import (
    PETDDSInferer,
    Preconditioner,
    PreviousTimestep,
    reconstruct_many,
    slice_scale_from_volume,
    uncertainty_from_samples,
)

__all__ = [
    "PETDDSInferer",
    "Preconditioner",
    "PreviousTimestep",
    "reconstruct_many",
    "slice_scale_from_volume",
    "uncertainty_from_samples",
]
