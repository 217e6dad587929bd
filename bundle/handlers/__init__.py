"""Ignite / MONAI handlers of the trainings and evaluators, one per module: atomic checkpoint saving, resume, stop on
a non-finite loss, TensorBoard sample images, sample validation metrics, key-metric state, event filters,
output transforms, the training progress bar.  Importing runs nothing."""

from __future__ import annotations

from .checkpoint_saver import AtomicCheckpointSaver, AtomicDiskSaver
from .event_filters import every_n_events
from .image_logging import TensorBoardSampleImages
from .key_metric_state import KeyMetricState
from .non_finite_loss import NonFiniteLossError, StopOnNonFiniteLoss
from .output_transforms import scalar_terms
from .progress_bar import TrainingProgressBar
from .resume import ResumeFromLatest, ResumeTraining, TrainerState
from .sample_metrics import SampleValidationMetrics

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "KeyMetricState",
    "NonFiniteLossError",
    "ResumeFromLatest",
    "ResumeTraining",
    "SampleValidationMetrics",
    "StopOnNonFiniteLoss",
    "TensorBoardSampleImages",
    "TrainerState",
    "TrainingProgressBar",
    "every_n_events",
    "scalar_terms",
]
