"""Diffusion machinery shared by the three methods: the one reverse-process loop (:mod:`.sampler`), the scheduler
steps and prediction types (:mod:`.ddim`, the only DDIM/DDPM arithmetic), and the forward (degradation) processes
beyond MONAI's Gaussian schedulers: the uPETe Poisson dose schedule and Poisson degradation, and the latent processes
of the uPETe ablations.  Importing runs nothing."""

from __future__ import annotations

from .ddim import DDIMStep, DDPMStep, PredictionType, PreviousTimestep, split_prediction
from .latent import (
    DoseEstimator,
    GaussianLatentDiffusion,
    LatentDiffusionProcess,
    LatentStep,
    PoissonLatentDiffusion,
    Redegradation,
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
from .sampler import StepRule, classifier_free_guidance, sample

__all__ = [
    "DDIMStep",
    "DDPMStep",
    "DoseEstimator",
    "DoseScheduleKind",
    "GaussianLatentDiffusion",
    "LatentDiffusionProcess",
    "LatentStep",
    "OSEMReconstruction",
    "PoissonDegradation",
    "PoissonDoseSchedule",
    "PoissonLatentDiffusion",
    "PredictionType",
    "PreviousTimestep",
    "Reconstruction",
    "Redegradation",
    "StepRule",
    "calibrate_count_scale",
    "classifier_free_guidance",
    "latent_noise_variance",
    "sample",
    "split_prediction",
]
