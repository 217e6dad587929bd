"""MONAI ``CheckpointSaver`` writing through :class:`bundle.engines.checkpoints.AtomicDiskSaver` (fsync + rename).

Kept apart from :mod:`bundle.engines.checkpoints` so that the loading / resuming helpers import without MONAI's
handler stack.  Importing this module runs nothing.
"""

from __future__ import annotations

from typing import Any

from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointSaver

from .checkpoints import AtomicDiskSaver

__all__ = ["AtomicCheckpointSaver"]


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` (same arguments) writing through :class:`AtomicDiskSaver`.

    Put ``"trainer": "@trainer"`` into ``save_dict`` to make its files resumable with
    :class:`bundle.engines.checkpoints.ResumeFromLatest`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, name, None)
            if isinstance(checkpoint, Checkpoint) and isinstance(checkpoint.save_handler, DiskSaver):
                old = checkpoint.save_handler
                checkpoint.save_handler = AtomicDiskSaver(
                    dirname=old.dirname, require_empty=False, create_dir=True, save_on_rank=old.save_on_rank,
                    filename=getattr(old, "filename", None),  # MONAI's fixed final / key-metric file names
                )
