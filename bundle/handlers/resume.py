"""Resuming a training from its checkpoints: :class:`ResumeFromLatest` (fresh start when there is none),
:class:`ResumeTraining` (the methods' ``resume.json`` overlays: a checkpoint is required) and :class:`TrainerState`
(the trainer's iteration / epoch as a checkpoint entry).

:class:`ResumeFromLatest` resumes a run from the newest checkpoint of a folder (by the trainer iteration stored in
it, :func:`bundle.checkpoint.latest_checkpoint`): iteration count, epoch, weights and optimizer state continue.
Resuming mid-epoch continues the iteration count of that epoch (ignite) but restarts the data loader's order.

Exact resume needs more than weights; three checkpoint entries make it possible from a config: :class:`TrainerState`
(a proxy, because a saver listed in the trainer's own ``train_handlers`` cannot reference ``@trainer``),
:class:`bundle.checkpoint.RandomStates` and the method's own entries (e.g.
:class:`bundle.handlers.key_metric_state.KeyMetricState`).  :class:`ResumeTraining` is the strict
``ResumeFromLatest``: no checkpoint in the folder is a ``FileNotFoundError`` naming it
(:func:`bundle.checkpoint.resumable_checkpoint`), never a silent fresh start.  Resuming from a checkpoint written at
the end of an epoch continues bit for bit.

Both log (INFO) the file, run id, iteration and epoch a resume starts from, warn for every file of the folder that
cannot be read (skipped: the resume continues from an older checkpoint) and refuse (``ValueError`` listing every file
with its run id) a folder whose checkpoints belong to different training runs
(:class:`bundle.checkpoint.run_id.RunId`, :func:`bundle.checkpoint.choose_checkpoint`) unless ``run_id`` names the
run to continue.  A checkpoint written before run ids were recorded is accepted with a warning.

Importing this module runs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from bundle.checkpoint.io import (
    CheckpointScan,
    choose_checkpoint,
    load_state_dicts,
    resumable_checkpoint,
    scan_checkpoints,
)
from bundle.checkpoint.run_id import RUN_ID_KEY, RunId

__all__ = ["ResumeFromLatest", "ResumeTraining", "TrainerState"]

logger = logging.getLogger(__name__)


class ResumeFromLatest:
    """Resume a trainer from the newest checkpoint of ``checkpoint_dir`` when the run starts.

    Attach it to the trainer (``handler.attach(trainer)``, or list it among ``train_handlers``).  At
    ``Events.STARTED`` it loads every entry of ``load_dict`` (e.g. ``{"network": ..., "optimizer": ...,
    "trainer": trainer}``) from :func:`latest_checkpoint`; without a checkpoint the run starts fresh.  Loading the
    ``trainer`` entry restores iteration and epoch, so the run continues where the killed one was checkpointed;
    the current run's ``max_epochs`` is kept (so a finished run can be extended by raising it).

    Args (keyword-only):
        checkpoint_dir: folder written by ``AtomicCheckpointSaver`` (or MONAI's ``CheckpointSaver``).
        load_dict: name -> object with ``load_state_dict``; must include ``trainer_key``; a
            :class:`~bundle.checkpoint.run_id.RunId` entry adopts the run id of the checkpoint (module docstring).
        pattern: file-name glob of the checkpoints to consider.
        trainer_key: the entry holding the engine state.
        strict: strict loading of ``torch.nn.Module`` entries.
        run_id: the run to continue when the folder holds checkpoints of several runs (its newest checkpoint is
            loaded); ``None``: the folder's checkpoints must belong to one run.
    """

    def __init__(
        self,
        *,
        checkpoint_dir: str | Path,
        load_dict: Mapping[str, Any],
        pattern: str = "*.pt",
        trainer_key: str = "trainer",
        strict: bool = True,
        run_id: str | None = None,
    ) -> None:
        if not isinstance(checkpoint_dir, str | Path) or str(checkpoint_dir) == "":
            raise ValueError(f"checkpoint_dir must be a folder path, got {checkpoint_dir!r}")
        if not isinstance(load_dict, Mapping) or trainer_key not in load_dict:
            raise ValueError(
                f"load_dict must be a mapping that includes the trainer under {trainer_key!r} (to restore the "
                f"iteration count), got keys {sorted(load_dict) if isinstance(load_dict, Mapping) else load_dict!r}"
            )
        self.checkpoint_dir = Path(checkpoint_dir)
        self.load_dict = dict(load_dict)
        self.pattern = pattern
        self.trainer_key = trainer_key
        self.strict = strict
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError(f"run_id must be the id of the run to continue (a non-empty string) or None, got "
                             f"{run_id!r}")
        self.run_id = None if run_id is None else run_id.strip()
        self.run_key = next((k for k, v in self.load_dict.items() if isinstance(v, RunId)), RUN_ID_KEY)
        self.resumed_from: Path | None = None

    def _scan(self) -> CheckpointScan:
        return scan_checkpoints(self.checkpoint_dir, pattern=self.pattern, trainer_key=self.trainer_key,
                                run_key=self.run_key)

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.STARTED`` (before ignite computes where in the epoch the run continues).  Where nobody
        configured logging (``python -m monai.bundle run`` without a logging file: the root logger has no handler),
        this module's logger gets a console handler at INFO, so the resume's start point shows."""
        if not logging.root.handlers and not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        scan = self._scan()
        for path, reason in scan.unreadable:
            logger.warning("resume: skipping %s, it cannot be read (%s)", path, reason)
        record = choose_checkpoint(scan, run_id=self.run_id)
        if record is None:
            logger.info("no checkpoint in %s: starting a fresh run", self.checkpoint_dir)
            return
        load_dict = self.load_dict
        if record.run_id is None:
            logger.warning(
                "resume: %s holds no run id (written before run ids were recorded): it cannot be checked against the "
                "folder's other checkpoints; the resumed run records a new run id", record.path)
            load_dict = {k: v for k, v in load_dict.items() if not isinstance(v, RunId)}
        configured_max_epochs = engine.state.max_epochs
        load_state_dicts(load_dict, record.path, strict=self.strict)
        if configured_max_epochs is not None and configured_max_epochs > engine.state.epoch:
            engine.state.max_epochs = configured_max_epochs  # this run's target wins over the killed run's
        self.resumed_from = record.path
        logger.info(
            "resuming from %s (run %s) at iteration %d, epoch %d", record.path, record.run_id or "unrecorded",
            engine.state.iteration, engine.state.epoch,
        )


class TrainerState:
    """The trainer's ignite state as a checkpoint entry (``state_dict`` / ``load_state_dict``).

    List it among the trainer's ``train_handlers`` (MONAI calls :meth:`attach`) and put it into the checkpoint saver's
    ``save_dict`` under ``"trainer"``: the saver then stores ``trainer.state_dict()`` (iteration, epoch_length,
    max_epochs) although the saver, itself a train handler, cannot reference the trainer in a config.
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Remember ``engine`` (registers no event handler); attaching again replaces it."""
        if not isinstance(engine, Engine):
            raise TypeError(f"engine must be an ignite Engine, got {type(engine).__name__}")
        self.engine = engine

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("TrainerState is not attached to a trainer: list it in train_handlers or call attach()")
        return self.engine

    def state_dict(self) -> dict[str, Any]:
        """``engine.state_dict()``: ``{"iteration", "epoch_length", "max_epochs"}`` (ignite)."""
        return dict(self._engine().state_dict())

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """``engine.load_state_dict(state_dict)``."""
        self._engine().load_state_dict(state_dict)


class ResumeTraining(ResumeFromLatest):
    """:class:`ResumeFromLatest` that requires a checkpoint (the handler of the methods' ``resume.json`` overlays).

    Construction (config parsing) already raises ``FileNotFoundError`` naming ``checkpoint_dir`` when it holds no
    checkpoint with trainer state (:func:`resumable_checkpoint`), so a mistyped folder never silently starts a fresh
    run.  :meth:`attach` also attaches every not yet attached :class:`TrainerState` of ``load_dict`` (ranks whose
    ``train_handlers`` are empty under DDP).  Same keyword-only arguments as ``ResumeFromLatest`` (``run_id``: the
    resume overlays' ``resume_run_id``), plus ``hint`` for the error message.  Checkpoints of different runs raise the
    ``ValueError`` already at construction.
    """

    def __init__(
        self,
        *,
        checkpoint_dir: str | Path,
        load_dict: Mapping[str, Any],
        pattern: str = "*.pt",
        trainer_key: str = "trainer",
        strict: bool = True,
        run_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(
            checkpoint_dir=checkpoint_dir, load_dict=load_dict, pattern=pattern, trainer_key=trainer_key, strict=strict,
            run_id=run_id,
        )
        self.hint = hint
        self.checkpoint = self._resumable()

    def _resumable(self) -> Path:
        return resumable_checkpoint(self.checkpoint_dir, trainer_key=self.trainer_key, hint=self.hint,
                                    pattern=self.pattern, run_id=self.run_id)

    def attach(self, engine: Engine) -> None:
        """Attach unattached :class:`TrainerState` entries, then load at ``Events.STARTED``."""
        for value in self.load_dict.values():
            if isinstance(value, TrainerState) and value.engine is None:
                value.attach(engine)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        self._resumable()  # still there
        super().__call__(engine)
        state = engine.state
        if state.max_epochs is not None and state.epoch >= state.max_epochs:
            logger.warning(
                "the checkpoint %s is at epoch %d, max_epochs is %d: nothing left to train (raise --max_epochs to "
                "continue)", self.resumed_from, state.epoch, state.max_epochs,
            )
