"""Checkpoint reliability for the MONAI/ignite trainers: atomic writes, safe loads, resume, stop on a NaN loss.

* :func:`save_checkpoint` writes ``torch.save(state)`` to a temporary file in the target folder, ``fsync``s it,
  renames it over the target with ``os.replace`` and ``fsync``s the folder, so a reader (or a resumed run after a
  kill or power loss) sees either the old file or the complete new one, never a truncated file.
* :class:`AtomicDiskSaver` is ignite's ``DiskSaver`` with the same fsync discipline (ignite's own atomic mode
  renames but does not fsync); :class:`bundle.engines.checkpoint_saver.AtomicCheckpointSaver` is MONAI's
  ``CheckpointSaver`` using it, a drop-in ``_target_`` for the training configs.
* :func:`load_checkpoint` reads with ``torch.load(weights_only=True)`` (no pickled code runs) and turns a missing,
  truncated or foreign file, or one without the expected keys, into an error that names the file, the expected keys
  and the keys found.  :func:`load_state_dicts` loads into modules / optimizers / engines and names the entry whose
  architecture does not match.
* :func:`latest_checkpoint` and :class:`ResumeFromLatest` resume a run from the newest checkpoint of a folder
  (by the trainer iteration stored in it): iteration count, epoch, weights and optimizer state continue.  Resuming
  mid-epoch continues the iteration count of that epoch (ignite) but restarts the data loader's order.
* :class:`StopOnNonFiniteLoss` stops training at the first NaN/Inf loss with a logged message naming the iteration
  and epoch and, by default, raises :class:`NonFiniteLossError` (ignite's ``TerminateOnNan`` only logs a warning
  and terminates silently).

Importing this module runs nothing.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver

__all__ = [
    "AtomicDiskSaver",
    "CheckpointError",
    "NonFiniteLossError",
    "ResumeFromLatest",
    "StopOnNonFiniteLoss",
    "latest_checkpoint",
    "load_checkpoint",
    "load_state_dicts",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated, or without the expected entries."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


# ---------------------------------------------------------------------------------------------------- writing
def _fsync_directory(folder: Path) -> None:
    """fsync a folder so a rename inside it survives a crash (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_torch_save(obj: Any, path: Path, save: Callable[..., None] = torch.save, **kwargs: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            save(obj, handle, **kwargs)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(path.parent)


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` (a mapping of state dicts / plain values) to ``path`` atomically (module docstring).

    Args:
        state: e.g. ``{"network": net.state_dict(), "optimizer": opt.state_dict(), "trainer": engine.state_dict()}``.
        path: target file; its folder is created when missing.

    Returns:
        ``path`` as a ``Path``.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of name -> state dict, got {type(state).__name__}")
    if not isinstance(path, str | Path) or str(path) == "":
        raise ValueError(f"path must be a non-empty file path (str or Path), got {path!r}")
    path = Path(path)
    _atomic_torch_save(dict(state), path)
    return path


class AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` whose atomic writes also fsync the file and its folder (see :func:`save_checkpoint`).

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
        _atomic_torch_save(checkpoint, Path(path), func, **self.kwargs)
        os.chmod(path, 0o644)


# ---------------------------------------------------------------------------------------------------- reading
def _describe_keys(keys: Sequence[str] | None) -> str:
    return "a mapping" if not keys else f"a mapping with keys {sorted(keys)}"


def load_checkpoint(
    path: str | Path,
    *,
    expected_keys: Sequence[str] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    Args:
        path: the ``.pt`` file.
        expected_keys: entries the checkpoint must hold (e.g. ``("network", "optimizer", "trainer")``).
        map_location: where tensors are loaded.

    Returns:
        The checkpoint as a dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ``ValueError``): a truncated / corrupt / non-PyTorch file, one holding arbitrary pickled
            objects (refused by ``weights_only``), not a mapping, or missing ``expected_keys`` (the message names the
            file, the expected keys and the keys found).
    """
    if not isinstance(path, str | Path) or str(path) == "":
        raise ValueError(f"path must be a non-empty file path (str or Path), got {path!r}")
    path = Path(path)
    expected = None if expected_keys is None else [str(k) for k in expected_keys]
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (expected {_describe_keys(expected)} saved by "
                                "torch.save)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CheckpointError(
            f"checkpoint {path} cannot be read with torch.load(weights_only=True): it is truncated, corrupt, not a "
            f"PyTorch file or holds pickled objects other than tensors and plain containers; expected "
            f"{_describe_keys(expected)} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from error
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"checkpoint {path} holds a {type(state).__name__}, expected {_describe_keys(expected)}"
        )
    missing = [k for k in (expected or []) if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks the entries {missing}: expected {_describe_keys(expected)}, found keys "
            f"{sorted(map(str, state))}"
        )
    return dict(state)


def load_state_dicts(
    objects: Mapping[str, Any], path: str | Path, *, strict: bool = True, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load the entries of checkpoint ``path`` into ``objects`` (name -> module / optimizer / engine / anything with
    ``load_state_dict``), after :func:`load_checkpoint` checked that every name is present.

    A state dict of another architecture raises :class:`CheckpointError` naming the file, the entry and torch's
    list of missing / unexpected / mismatched parameters.  Returns the checkpoint.
    """
    if not isinstance(objects, Mapping) or not objects:
        raise TypeError(f"objects must be a non-empty mapping name -> object with load_state_dict, got {objects!r}")
    for name, obj in objects.items():
        if not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(f"objects[{name!r}] must have a load_state_dict method, got {type(obj).__name__}")
    state = load_checkpoint(path, expected_keys=list(objects), map_location=map_location)
    for name, obj in objects.items():
        try:
            if isinstance(obj, torch.nn.Module):
                obj.load_state_dict(state[name], strict=strict)
            else:
                obj.load_state_dict(state[name])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            raise CheckpointError(
                f"checkpoint {path}: entry {name!r} does not fit the configured {type(obj).__name__} (wrong "
                f"architecture or settings?): {error}"
            ) from error
    return state


# ---------------------------------------------------------------------------------------------------- resuming
def _iteration_of(path: Path, trainer_key: str) -> int:
    try:
        state = load_checkpoint(path, expected_keys=[trainer_key])
        return int(state[trainer_key]["iteration"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return -1


def latest_checkpoint(folder: str | Path, *, pattern: str = "*.pt", trainer_key: str = "trainer") -> Path | None:
    """The checkpoint in ``folder`` matching ``pattern`` with the largest stored trainer iteration
    (``state[trainer_key]["iteration"]``); files without a readable trainer state are skipped.  ``None`` when there
    is none (a fresh run)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    best: tuple[int, float, Path] | None = None
    for path in folder.glob(pattern):
        if path.name.startswith(".") or not path.is_file():
            continue  # temporary files of an interrupted atomic write
        iteration = _iteration_of(path, trainer_key)
        if iteration < 0:
            continue
        key = (iteration, path.stat().st_mtime, path)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


class ResumeFromLatest:
    """Resume a trainer from the newest checkpoint of ``checkpoint_dir`` when the run starts.

    Attach it to the trainer (``handler.attach(trainer)``, or list it among ``train_handlers``).  At
    ``Events.STARTED`` it loads every entry of ``load_dict`` (e.g. ``{"network": ..., "optimizer": ...,
    "trainer": trainer}``) from :func:`latest_checkpoint`; without a checkpoint the run starts fresh.  Loading the
    ``trainer`` entry restores iteration and epoch, so the run continues where the killed one was checkpointed;
    the current run's ``max_epochs`` is kept (so a finished run can be extended by raising it).

    Args (keyword-only):
        checkpoint_dir: folder written by ``AtomicCheckpointSaver`` (or MONAI's ``CheckpointSaver``).
        load_dict: name -> object with ``load_state_dict``; must include ``trainer_key``.
        pattern: file-name glob of the checkpoints to consider.
        trainer_key: the entry holding the engine state.
        strict: strict loading of ``torch.nn.Module`` entries.
    """

    def __init__(
        self,
        *,
        checkpoint_dir: str | Path,
        load_dict: Mapping[str, Any],
        pattern: str = "*.pt",
        trainer_key: str = "trainer",
        strict: bool = True,
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
        self.resumed_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Register on ``Events.STARTED`` (before ignite computes where in the epoch the run continues)."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        path = latest_checkpoint(self.checkpoint_dir, pattern=self.pattern, trainer_key=self.trainer_key)
        if path is None:
            logger.info("no checkpoint in %s: starting a fresh run", self.checkpoint_dir)
            return
        configured_max_epochs = engine.state.max_epochs
        load_state_dicts(self.load_dict, path, strict=self.strict)
        if configured_max_epochs is not None and configured_max_epochs > engine.state.epoch:
            engine.state.max_epochs = configured_max_epochs  # this run's target wins over the killed run's
        self.resumed_from = path
        logger.info(
            "resumed from %s at iteration %d (epoch %d)", path, engine.state.iteration, engine.state.epoch
        )


# ---------------------------------------------------------------------------------------------------- NaN guard
def _default_loss(output: Any) -> Any:
    if isinstance(output, Mapping):
        return output.get("loss", output)
    if isinstance(output, list | tuple) and output and isinstance(output[0], Mapping):
        return output[0].get("loss", output[0])
    return output


def _first_non_finite(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if bool(torch.isfinite(value).all()):
            return None
        return float(value[~torch.isfinite(value)].flatten()[0])
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return None if math.isfinite(value) else float(value)
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            bad = _first_non_finite(item)
            if bad is not None:
                return bad
    return None


class StopOnNonFiniteLoss:
    """Stop training at the first NaN / Inf loss, naming the iteration (attach to ``Events.ITERATION_COMPLETED``).

    Args (keyword-only):
        output_transform: engine output -> loss (default: ``output["loss"]`` for MONAI's trainers, the output
            itself otherwise); any nested tensors / numbers are checked.
        raise_error: ``True`` (default) raises :class:`NonFiniteLossError` after logging; ``False`` logs an error
            and calls ``engine.terminate()``; ignite then still fires ``COMPLETED``, so a ``save_final`` checkpoint
            saver would write the NaN model: raising is the safer default.
    """

    def __init__(self, *, output_transform: Callable[[Any], Any] = _default_loss, raise_error: bool = True) -> None:
        if not callable(output_transform):
            raise TypeError(f"output_transform must be callable, got {type(output_transform).__name__}")
        if not isinstance(raise_error, bool):
            raise TypeError(f"raise_error must be a bool, got {raise_error!r}")
        self.output_transform = output_transform
        self.raise_error = raise_error

    def attach(self, engine: Engine) -> None:
        """Check the loss after every iteration."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        bad = _first_non_finite(self.output_transform(engine.state.output))
        if bad is None:
            return
        message = (
            f"non-finite loss ({bad}) at iteration {engine.state.iteration} (epoch {engine.state.epoch}); training "
            "stopped. Lower the learning rate, check the inputs for NaN/Inf, or resume from the last checkpoint."
        )
        logger.error(message)
        if self.raise_error:
            raise NonFiniteLossError(message)
        engine.terminate()
