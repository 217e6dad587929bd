"""Checkpoint I/O: atomic writes, safe loads, the one weight loader, the newest / resumable checkpoint of a folder.

* :func:`save_checkpoint` writes ``torch.save(state)`` to a temporary file in the target folder, ``fsync``s it,
  renames it over the target with ``os.replace`` and ``fsync``s the folder, so a reader (or a resumed run after a
  kill or power loss) sees either the old file or the complete new one, never a truncated file
  (:func:`atomic_torch_save`; :class:`bundle.handlers.checkpoint_saver.AtomicCheckpointSaver` writes the training
  checkpoints the same way).
* :func:`load_checkpoint` reads with ``torch.load(weights_only=True)`` (no pickled code runs) and turns a missing,
  truncated or foreign file, or one without the expected keys, into an error that names the file, the expected keys
  and the keys found.  :func:`load_state_dicts` loads into modules / optimizers / engines and names the entry whose
  architecture does not match.
* :func:`load_weights` is the one way to put trained weights into a network (evaluations, inference, the uPETe
  stages): entry ``key`` of a checkpoint (``"network"`` by default; the EMA entry when asked and present), strict by
  default; every failure, a missing file included, is a :class:`CheckpointError` naming the file, the entry and what
  was expected.
* :func:`scan_checkpoints` reads a folder's checkpoints (trainer iteration, epoch, run id, and the files that cannot
  be read), :func:`choose_checkpoint` picks the newest and refuses checkpoints of different training runs (run ids,
  :mod:`bundle.checkpoint.run_id`) unless told which run to continue; :func:`latest_checkpoint` is the two in one,
  :func:`resumable_checkpoint` the same but a missing one is an error (the resume overlays), :func:`list_checkpoints`
  the interval checkpoints ``checkpoint_epoch=N.pt`` by epoch (training-progress studies).

Importing this module runs nothing.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .run_id import RUN_ID_KEY, stored_run_id

__all__ = [
    "CheckpointError",
    "CheckpointRecord",
    "CheckpointScan",
    "atomic_torch_save",
    "choose_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_state_dicts",
    "load_weights",
    "resumable_checkpoint",
    "save_checkpoint",
    "scan_checkpoints",
]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, truncated, or without the expected entries."""


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


def atomic_torch_save(obj: Any, path: Path, save: Callable[..., None] = torch.save, **kwargs: Any) -> None:
    """``save(obj, handle, **kwargs)`` into a temporary file of ``path``'s folder, fsync, ``os.replace`` onto
    ``path``, fsync the folder (module docstring); ``save`` is ``torch.save`` or ignite's save function."""
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
    atomic_torch_save(dict(state), path)
    return path


# ---------------------------------------------------------------------------------------------------- reading
def _describe_keys(keys: Sequence[str] | None) -> str:
    return "a mapping" if not keys else f"a mapping with keys {sorted(keys)}"


def _unwrap(obj: Any) -> Any:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (savers store it without ``module.``)."""
    if isinstance(obj, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        return obj.module
    return obj


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
    except Exception as error:  # any failure of torch.load on garbage (an IndexError too) means unreadable
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

    A ``DistributedDataParallel`` / ``DataParallel`` module loads into its ``module`` (ignite's and MONAI's savers
    store the unwrapped state dict, without ``module.`` prefixes).  A state dict of another architecture raises
    :class:`CheckpointError` naming the file, the entry and torch's list of missing / unexpected / mismatched
    parameters.  Returns the checkpoint.
    """
    if not isinstance(objects, Mapping) or not objects:
        raise TypeError(f"objects must be a non-empty mapping name -> object with load_state_dict, got {objects!r}")
    for name, obj in objects.items():
        if not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(f"objects[{name!r}] must have a load_state_dict method, got {type(obj).__name__}")
    state = load_checkpoint(path, expected_keys=list(objects), map_location=map_location)
    for name, obj in objects.items():
        obj = _unwrap(obj)
        try:
            if isinstance(obj, torch.nn.Module):
                obj.load_state_dict(state[name], strict=strict)
            else:
                obj.load_state_dict(state[name])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            detail = _mismatch_summary(obj, state[name]) if isinstance(obj, torch.nn.Module) else None
            raise CheckpointError(
                f"checkpoint {path}: entry {name!r} does not fit the configured {type(obj).__name__} (wrong "
                f"architecture or settings, or a checkpoint of another method?): {detail or error}"
            ) from error
    return state


def _mismatch_summary(module: torch.nn.Module, state: object, *, examples: int = 3) -> str | None:
    """``"12 of the 40 configured parameters are missing (e.g. a, b, c); ..."``: a few lines' worth instead of torch's
    list of every key (``None`` when ``state`` is not a mapping)."""
    if not isinstance(state, Mapping):
        return None
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: stored {tuple(getattr(state[k], 'shape', ()))}, configured {tuple(own[k].shape)}"
                  for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    parts = [f"{len(items)} {what} (e.g. {', '.join(map(str, items[:examples]))})"
             for items, what in ((missing, f"of the {len(own)} configured entries are missing"),
                                 (unexpected, f"of the {len(state)} stored entries are unexpected"),
                                 (mismatched, "entries have another shape")) if items]
    return "; ".join(parts) or None

def load_weights(
    network: torch.nn.Module,
    path: str | Path,
    *,
    key: str | None = "network",
    use_ema: bool = False,
    ema_key: str = "ema",
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Load trained weights into ``network`` and return it in eval mode (the one weight loader of the package).

    The state dict is ``checkpoint[ema_key]`` when ``use_ema`` and the checkpoint has that entry (the EMA weights of
    the diffusion trainings; a checkpoint without it falls back to ``key``), else ``checkpoint[key]``; ``key=None``
    reads a bare state dict (the whole file).  Read with :func:`load_checkpoint` (``weights_only=True``); a
    ``DistributedDataParallel`` / ``DataParallel`` network loads into its ``module``.

    Args:
        network: the configured architecture.
        path: the checkpoint file (a MONAI ``CheckpointSaver`` file ``{key: state dict, ...}``).
        key: the entry holding the weights (e.g. ``"network"``, ``"autoencoder"``); ``None``: a bare state dict.
        use_ema: prefer the ``ema_key`` entry when present.
        ema_key: the EMA entry's name.
        strict: ``torch.nn.Module.load_state_dict``'s ``strict``.
        map_location: where tensors are loaded.

    Raises:
        TypeError: ``network`` is not a ``torch.nn.Module``.
        CheckpointError (a ``ValueError``): the file does not exist or cannot be read, has no ``key`` entry, or its
            weights do not fit ``network``; the message names the file, the entry and what was expected.
    """
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    if not isinstance(path, str | Path) or str(path) == "":
        raise ValueError(f"path must be a non-empty file path (str or Path), got {path!r}")
    path = Path(path)
    entry = "the whole file (a bare state dict)" if key is None else f"entry {key!r}"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: expected a torch.save file whose {entry} holds the "
                              f"weights of a {type(_unwrap(network)).__name__} (train the model first)")
    state = load_checkpoint(path, map_location=map_location)
    if use_ema and ema_key in state:
        key, entry = ema_key, f"entry {ema_key!r}"
    if key is None:
        weights: Any = state
    elif key in state:
        weights = state[key]
    else:
        raise CheckpointError(f"checkpoint {path} has no {key!r} entry: expected the weights of a "
                              f"{type(_unwrap(network)).__name__} under {key!r}, found keys {sorted(map(str, state))}")
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"checkpoint {path}: {entry} holds a {type(weights).__name__}, expected a state dict")
    module = _unwrap(network)
    try:
        module.load_state_dict(weights, strict=strict)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {path}: {entry} does not fit the configured {type(module).__name__} (wrong architecture or "
            f"settings?): {error}"
        ) from error
    return network.eval()


# ---------------------------------------------------------------------------------------------------- finding
@dataclass(frozen=True)
class CheckpointRecord:
    """One checkpoint of a folder with trainer state: the file, its stored trainer iteration, the epoch that
    iteration ends or falls in (``None`` without ``epoch_length``), its run id (``None``: written before run ids were
    recorded, :mod:`bundle.checkpoint.run_id`) and its modification time (s)."""

    path: Path
    iteration: int
    epoch: int | None
    run_id: str | None
    mtime_s: float


@dataclass(frozen=True)
class CheckpointScan:
    """The checkpoints of ``folder`` with trainer state (``records``, oldest first by (iteration, mtime)), and the
    files that could not be read (``unreadable``: (path, reason)); files that read but hold no trainer state (e.g.
    weights only) are in neither."""

    folder: Path
    records: tuple[CheckpointRecord, ...]
    unreadable: tuple[tuple[Path, str], ...]


def _record(path: Path, trainer_key: str, run_key: str) -> CheckpointRecord | None:
    state = load_checkpoint(path)
    trainer = state.get(trainer_key)
    if not isinstance(trainer, Mapping):
        return None
    try:
        iteration = int(trainer["iteration"])
    except (KeyError, TypeError, ValueError):
        return None
    epoch_length = trainer.get("epoch_length")
    epoch = -(-iteration // int(epoch_length)) if isinstance(epoch_length, int) and epoch_length > 0 else None
    return CheckpointRecord(path=path, iteration=iteration, epoch=epoch, run_id=stored_run_id(state, run_key),
                            mtime_s=path.stat().st_mtime)


def scan_checkpoints(
    folder: str | Path, *, pattern: str = "*.pt", trainer_key: str = "trainer", run_key: str = RUN_ID_KEY
) -> CheckpointScan:
    """Read every file of ``folder`` matching ``pattern`` (hidden files, the temporaries of an interrupted atomic
    write, are ignored) and list those with trainer state (``state[trainer_key]["iteration"]``) and those that cannot
    be read (:class:`CheckpointScan`); a missing folder gives an empty scan."""
    folder = Path(folder)
    records: list[CheckpointRecord] = []
    unreadable: list[tuple[Path, str]] = []
    if folder.is_dir():
        for path in sorted(folder.glob(pattern)):
            if path.name.startswith(".") or not path.is_file():
                continue
            try:
                record = _record(path, trainer_key, run_key)
            except (CheckpointError, OSError) as error:
                unreadable.append((path, str(error)))
                continue
            if record is not None:
                records.append(record)
    records.sort(key=lambda r: (r.iteration, r.mtime_s))
    return CheckpointScan(folder=folder, records=tuple(records), unreadable=tuple(unreadable))


def _describe_records(records: Sequence[CheckpointRecord]) -> str:
    return ", ".join(f"{r.path.name} (run {r.run_id or 'unrecorded'}, iteration {r.iteration})"
                     for r in reversed(records))


def choose_checkpoint(scan: CheckpointScan, *, run_id: str | None = None) -> CheckpointRecord | None:
    """The newest record of ``scan`` (largest iteration, then modification time), of run ``run_id`` when given.

    Without ``run_id`` every record with a run id must belong to the same run (records without one, written before
    run ids were recorded, are allowed beside them).  ``None`` when the scan holds no record.

    Raises:
        ValueError: the records belong to different runs (the message lists every file with its run id and
            iteration, and says how to choose), or no record belongs to ``run_id``.
    """
    records = list(scan.records)
    if run_id is not None:
        if not isinstance(run_id, str) or not run_id.strip():
            raise ValueError(f"run_id must be a non-empty run id string or None, got {run_id!r}")
        chosen = [r for r in records if r.run_id == run_id.strip()]
        if not chosen:
            raise ValueError(
                f"run_id {run_id!r} matches no checkpoint in {scan.folder}; its checkpoints are: "
                f"{_describe_records(records) or 'none'}")
        return chosen[-1]
    runs = sorted({r.run_id for r in records if r.run_id is not None})
    if len(runs) > 1:
        raise ValueError(
            f"the checkpoints in {scan.folder} belong to {len(runs)} different training runs: "
            f"{_describe_records(records)}; resuming from the newest would mix the runs. Choose the run to continue "
            f"with run_id (resume.json: --resume_run_id <id>, e.g. --resume_run_id {records[-1].run_id or runs[0]}) "
            "or move the other run's files out of the folder")
    return records[-1] if records else None


def latest_checkpoint(
    folder: str | Path, *, pattern: str = "*.pt", trainer_key: str = "trainer", run_id: str | None = None
) -> Path | None:
    """The checkpoint in ``folder`` matching ``pattern`` with the largest stored trainer iteration
    (``state[trainer_key]["iteration"]``, :func:`scan_checkpoints`, :func:`choose_checkpoint`: of run ``run_id`` when
    given; checkpoints of different runs are a ``ValueError``); files without a readable trainer state are skipped.
    ``None`` when there is none (a fresh run)."""
    record = choose_checkpoint(scan_checkpoints(folder, pattern=pattern, trainer_key=trainer_key), run_id=run_id)
    return None if record is None else record.path


_RESUME_HINT = ("train first without the resume overlay (the training configs' checkpoint savers store the trainer "
                "state a resume needs), or point the checkpoint folder (ckpt_dir, output_dir / bundle_root) at the "
                "run to resume")


def resumable_checkpoint(
    checkpoint_dir: str | Path,
    *,
    trainer_key: str = "trainer",
    hint: str | None = None,
    pattern: str = "*.pt",
    run_id: str | None = None,
) -> Path:
    """The newest checkpoint of ``checkpoint_dir`` with trainer state (:func:`latest_checkpoint`).

    Args:
        checkpoint_dir: the training's checkpoint folder.
        trainer_key: the entry holding the trainer state.
        hint: what the error message tells the user to do (``None``: a generic hint).
        pattern: file-name glob of the checkpoints to consider.
        run_id: the run to continue when the folder holds checkpoints of several (:func:`choose_checkpoint`).

    Raises:
        ValueError: ``checkpoint_dir`` is not a path; the checkpoints belong to different runs and ``run_id`` does not
            choose one.
        FileNotFoundError: the folder is missing or holds no readable checkpoint with ``trainer_key`` state; the
            message names the folder (and the unreadable files) and says how to create one.
    """
    if not isinstance(checkpoint_dir, str | Path) or str(checkpoint_dir) == "":
        raise ValueError(f"checkpoint_dir must be a folder path, got {checkpoint_dir!r}")
    folder = Path(checkpoint_dir)
    hint = _RESUME_HINT if hint is None else hint
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint to resume from: the checkpoint folder {folder} does not exist; {hint}")
    scan = scan_checkpoints(folder, pattern=pattern, trainer_key=trainer_key)
    found = choose_checkpoint(scan, run_id=run_id)
    if found is None:
        unreadable = (f" ({len(scan.unreadable)} unreadable: {', '.join(p.name for p, _ in scan.unreadable)})"
                      if scan.unreadable else "")
        raise FileNotFoundError(
            f"no checkpoint to resume from in {folder}: no checkpoint with {trainer_key!r} state there{unreadable}; "
            f"{hint}"
        )
    return found.path


_INTERVAL_CHECKPOINT = re.compile(r"(?:^|_)checkpoint_epoch=(\d+)\.pt$")


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(epoch, path), …]`` of MONAI ``CheckpointSaver`` interval checkpoints (``checkpoint_epoch=N.pt``),
    sorted by epoch."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _INTERVAL_CHECKPOINT.search(p.name))]
    return sorted(found)
