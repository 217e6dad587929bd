"""Forward (degradation) processes of the diffusion methods beyond MONAI's Gaussian schedulers: the uPETe Poisson
dose schedule and Poisson degradation.  Importing runs nothing."""

from __future__ import annotations

from .poisson import (
    DoseScheduleKind,
    OSEMReconstruction,
    PoissonDegradation,
    PoissonDoseSchedule,
    Reconstruction,
)

__all__ = [
    "DoseScheduleKind",
    "OSEMReconstruction",
    "PoissonDegradation",
    "PoissonDoseSchedule",
    "Reconstruction",
]
