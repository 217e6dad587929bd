"""Checkpoint content and I/O: atomic save, ``weights_only`` load, the one weight loader (:func:`load_weights`,
errors are :class:`CheckpointError`), the newest / resumable checkpoint of a folder, run ids and RNG states as
checkpoint entries, the uPETe calibration, trained variants and combined checkpoint, the shipped weights of
``models/`` (sha256-verified, :mod:`bundle.checkpoint.shipped`).  The handlers that save and resume during training
live in :mod:`bundle.handlers`.  Importing runs nothing."""

from __future__ import annotations

from .io import (
    CheckpointError,
    CheckpointRecord,
    CheckpointScan,
    atomic_torch_save,
    choose_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_dicts,
    load_weights,
    resumable_checkpoint,
    save_checkpoint,
    scan_checkpoints,
)
from .random_states import RandomStates, numpy_random_states
from .run_id import RunId, stored_run_id
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

# the shipped-weights names load on first use, so `python -m bundle.checkpoint.shipped` runs the module once (an
# eager import here would make runpy execute it a second time, with a RuntimeWarning)
_SHIPPED = ("read_manifest", "ship", "shipped_weights", "stored_settings", "verify_shipped")


def __getattr__(name: str):
    if name in _SHIPPED:
        from . import shipped

        return getattr(shipped, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMBINED_FILENAME",
    "COMBINED_KEYS",
    "Calibration",
    "CheckpointError",
    "CheckpointRecord",
    "CheckpointScan",
    "RandomStates",
    "RunId",
    "atomic_torch_save",
    "calibrate",
    "choose_checkpoint",
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
    "read_manifest",
    "resumable_checkpoint",
    "save_checkpoint",
    "scan_checkpoints",
    "ship",
    "shipped_weights",
    "stored_run_id",
    "stored_settings",
    "verify_shipped",
]
