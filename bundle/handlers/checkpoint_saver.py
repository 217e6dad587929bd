"""Atomic training checkpoints: :class:`AtomicDiskSaver` is ignite's ``DiskSaver`` with the fsync discipline of
:func:`bundle.checkpoint.save_checkpoint` (ignite's own atomic mode renames but does not fsync);
:class:`AtomicCheckpointSaver` is MONAI's ``CheckpointSaver`` using it, a drop-in ``_target_`` for the training
configs.  Importing this module runs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointSaver

from bundle.checkpoint.io import atomic_torch_save

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver"]


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` whose atomic writes also fsync the file and its folder
    (:func:`bundle.checkpoint.save_checkpoint`).

    ``filename``: a fixed file name for every save (as MONAI's ``CheckpointSaver`` uses for ``final_filename`` and
    ``key_metric_filename``); ``None`` keeps ignite's generated names.
    """

    def __init__(self, dirname: str | Path, *args: Any, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(dirname, *args, **kwargs)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        super().remove(self.filename or filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        atomic_torch_save(checkpoint, Path(path), func, **self.kwargs)
        os.chmod(path, 0o644)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` (same arguments) writing through :class:`AtomicDiskSaver`.

    Put ``"trainer": "@trainer"`` into ``save_dict`` to make its files resumable with
    :class:`bundle.handlers.resume.ResumeFromLatest`.
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
