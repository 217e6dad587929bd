"""Atomic training checkpoints: :class:`AtomicDiskSaver` is ignite's ``DiskSaver`` with the fsync discipline of
:func:`bundle.checkpoint.save_checkpoint` (ignite's own atomic mode renames but does not fsync);
:class:`AtomicCheckpointSaver` is MONAI's ``CheckpointSaver`` using it, a drop-in ``_target_`` for the training
configs.  A fresh training (iteration 0 when its first epoch starts, i.e. not resumed) refuses to write into a folder
that already holds this saver's final or interval checkpoints unless ``overwrite`` is set
(:class:`ExistingCheckpointsError`, raised before anything is saved).  Importing this module runs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointSaver

from bundle.checkpoint.io import atomic_torch_save

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver", "ExistingCheckpointsError"]


class ExistingCheckpointsError(ValueError):
    """A fresh training would overwrite the checkpoints of an earlier run in its folder."""


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

    ``overwrite`` (keyword, default ``False``): let a fresh run replace the final / interval checkpoints of an
    earlier run in ``save_dir`` (module docstring); the training configs pass ``@overwrite_checkpoints``.
    """

    def __init__(self, *args: Any, overwrite: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be true or false, got {overwrite!r}")
        self.overwrite = overwrite
        self._checked = False
        for name in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, name, None)
            if isinstance(checkpoint, Checkpoint) and isinstance(checkpoint.save_handler, DiskSaver):
                old = checkpoint.save_handler
                checkpoint.save_handler = AtomicDiskSaver(
                    dirname=old.dirname, require_empty=False, create_dir=True, save_on_rank=old.save_on_rank,
                    filename=getattr(old, "filename", None),  # MONAI's fixed final / key-metric file names
                )

    def _earlier_checkpoints(self) -> list[str]:
        folder = Path(self.save_dir)
        if not folder.is_dir():
            return []
        found = []
        if self._final_checkpoint is not None and self._final_filename and (folder / self._final_filename).is_file():
            found.append(self._final_filename)
        if self._interval_checkpoint is not None:
            found += sorted(p.name for p in folder.glob("*.pt") if "_epoch=" in p.name or "_iteration=" in p.name)
        return found

    def _refuse_overwrite(self, engine: Engine) -> None:
        """At the first epoch start: a fresh run (iteration 0) over an earlier run's checkpoints is an error."""
        if self._checked:
            return
        self._checked = True
        if self.overwrite or engine.state.iteration != 0:
            return
        earlier = self._earlier_checkpoints()
        if earlier:
            raise ExistingCheckpointsError(
                f"{self.save_dir} already holds checkpoints of an earlier run ({', '.join(earlier)}); a fresh run "
                "would overwrite them and a later resume would mix the runs. Resume it (layer the method's "
                "resume.json), choose another output_dir / bundle_root, or pass --overwrite_checkpoints true")

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self._final_checkpoint is not None or self._interval_checkpoint is not None:
            engine.add_event_handler(Events.EPOCH_STARTED, self._refuse_overwrite)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """MONAI saves a final checkpoint when training stops with an exception; not when the exception is the
        refusal to overwrite (that save would overwrite what the refusal protects)."""
        if isinstance(e, ExistingCheckpointsError):
            raise e
        super().exception_raised(engine, e)
