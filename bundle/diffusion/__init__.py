"""Forward (degradation) processes of the diffusion methods beyond MONAI's Gaussian schedulers: the uPETe Poisson
dose schedule and Poisson degradation, and the latent processes of the uPETe ablations.  Importing runs nothing."""

from __future__ import annotations

from .latent import (
    DoseEstimator,
    GaussianLatentDiffusion,
    LatentDiffusionProcess,
    PoissonLatentDiffusion,
    calibrate_count_scale,
    latent_noise_variance,
)
from .poisson import (
    DoseScheduleKind,
    OSEMReconstruction,
    PoissonDegradation,
    PoissonDoseSchedule,
    Reconstruction,
)

__all__ = [
    "DoseEstimator",
    "DoseScheduleKind",
    "GaussianLatentDiffusion",
    "LatentDiffusionProcess",
    "OSEMReconstruction",
    "PoissonDegradation",
    "PoissonDoseSchedule",
    "PoissonLatentDiffusion",
    "Reconstruction",
    "calibrate_count_scale",
    "latent_noise_variance",
]
