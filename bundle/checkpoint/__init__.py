"""Checkpoint content and I/O: atomic save, ``weights_only`` load, the one weight loader (:func:`load_weights`,
errors are :class:`CheckpointError`), the newest / resumable checkpoint of a folder, RNG states as a checkpoint entry,
the uPETe calibration, trained variants and combined checkpoint.  The handlers that save and resume during training
live in :mod:`bundle.handlers`.  Importing runs nothing."""

from __future__ import annotations

from .io import (
    CheckpointError,
    atomic_torch_save,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_dicts,
    load_weights,
    resumable_checkpoint,
    save_checkpoint,
)
from .random_states import RandomStates, numpy_random_states
from .upete import (
    COMBINED_FILENAME,
    COMBINED_KEYS,
    Calibration,
    calibrate,
    combine_upete,
    combined_calibration,
    combined_state,
    load_calibration,
    load_trained_variants,
    read_combined,
)

__all__ = [
    "COMBINED_FILENAME",
    "COMBINED_KEYS",
    "Calibration",
    "CheckpointError",
    "RandomStates",
    "atomic_torch_save",
    "calibrate",
    "combine_upete",
    "combined_calibration",
    "combined_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_calibration",
    "load_checkpoint",
    "load_state_dicts",
    "load_trained_variants",
    "load_weights",
    "numpy_random_states",
    "read_combined",
    "resumable_checkpoint",
    "save_checkpoint",
]
