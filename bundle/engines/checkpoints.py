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
* Exact resume (the methods' ``resume.json`` overlays) needs more than weights; three checkpoint entries make it
  possible from a config: :class:`TrainerState` (the trainer's iteration / epoch, a proxy because a saver listed in
  the trainer's own ``train_handlers`` cannot reference ``@trainer``), :class:`RandomStates` (explicit
  ``torch.Generator`` states, torch's global RNG that ``DataLoader`` shuffles with, and the NumPy ``RandomState`` of
  every MONAI random transform of a dataset) and the method's own entries.  :class:`ResumeTraining` is the strict
  ``ResumeFromLatest`` of those overlays: no checkpoint in the folder is a ``FileNotFoundError`` naming it
  (:func:`resumable_checkpoint`), never a silent fresh start.  Resuming from a checkpoint written at the end of an
  epoch continues bit for bit.
* :class:`StopOnNonFiniteLoss` stops training at the first NaN/Inf loss with a logged message naming the iteration
  and epoch and, by default, raises :class:`NonFiniteLossError` (ignite's ``TerminateOnNan`` only logs a warning
  and terminates silently).

Importing this module runs nothing.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import pickle
import tempfile
import types
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver

__all__ = [
    "AtomicDiskSaver",
    "CheckpointError",
    "NonFiniteLossError",
    "RandomStates",
    "ResumeFromLatest",
    "ResumeTraining",
    "StopOnNonFiniteLoss",
    "TrainerState",
    "latest_checkpoint",
    "load_checkpoint",
    "load_state_dicts",
    "numpy_random_states",
    "resumable_checkpoint",
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
        if isinstance(obj, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            obj = obj.module
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


# ---------------------------------------------------------------------------------------------------- exact resume
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


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1


_NOT_WALKED = (torch.Tensor, np.ndarray, torch.Generator, torch.nn.Module, str, bytes, numbers.Number, type,
               types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType)


def _random_state_slots(root: Any) -> list[tuple[str, Any, np.random.RandomState | None]]:
    """``(path, owner, state)`` of every NumPy ``RandomState`` attribute reachable from ``root`` (``state`` is the
    object, ``owner`` the object holding it), and ``(path, owner, None)`` for every MONAI ``Randomizable`` that still
    uses the class-level default ``R`` (it gets its own state on its first ``set_random_state``)."""
    slots: list[tuple[str, Any, np.random.RandomState | None]] = []
    seen: set[int] = set()

    def walk(obj: Any, path: str) -> None:
        if obj is None or isinstance(obj, _NOT_WALKED) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, list | tuple):
            for i, item in enumerate(obj):
                walk(item, f"{path}[{i}]")
            return
        if isinstance(obj, Mapping):
            for key, item in list(obj.items()):
                walk(item, f"{path}[{key!r}]")
            return
        attributes = getattr(obj, "__dict__", None)
        if not isinstance(attributes, dict):
            return
        if callable(getattr(obj, "set_random_state", None)) and "R" not in attributes and isinstance(
            getattr(type(obj), "R", None), np.random.RandomState
        ):
            slots.append((f"{path}.R", obj, None))
        for key, item in list(attributes.items()):
            if key.startswith("__"):
                continue
            if isinstance(item, np.random.RandomState):
                if id(item) not in seen:
                    seen.add(id(item))
                    slots.append((f"{path}.{key}", obj, item))
            else:
                walk(item, f"{path}.{key}")

    walk(root, type(root).__name__)
    return slots


def numpy_random_states(root: Any) -> list[tuple[str, np.random.RandomState]]:
    """Every NumPy ``RandomState`` held by an object reachable from ``root`` (a dataset, a ``Compose``, a transform),
    with its attribute path, in a fixed order.  MONAI random transforms draw from their own ``R``, which MONAI's
    ``DataLoader`` seeds once from torch's RNG when it is constructed (``monai.data.utils.set_rnd``); nested ones
    (e.g. ``RandSpatialCropSamplesd``'s cropper, which gets a state at its first call) are included.  The walk
    follows object attributes, lists, tuples and dicts; it does not enter tensors, arrays, torch modules,
    generators, functions, classes or modules, and skips MONAI's shared class-level default state.  A state object
    held twice is listed once."""
    return [(path, state) for path, _, state in _random_state_slots(root) if state is not None]


def _numpy_state(rs: np.random.RandomState) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = rs.get_state(legacy=True)
    if kind != "MT19937":
        raise ValueError(f"only MT19937 RandomStates can be stored, got {kind!r}")
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


class RandomStates:
    """States of explicit ``torch.Generator`` objects, of torch's global RNG and of the NumPy ``RandomState`` of
    MONAI random transforms, as one checkpoint entry.

    ``state_dict()`` = ``{"generators": {name: ByteTensor}, "torch": ByteTensor[, "torch_cuda": [ByteTensor, ...]]
    [, "numpy": {name: [{"path", "keys", "pos", "has_gauss", "cached_gaussian"}, ...]}]}`` (``"torch"`` /
    ``"torch_cuda"`` only with ``include_global``; CUDA states only once CUDA is initialised; ``"numpy"`` only with
    ``randomizables``).  Restoring them at the start of a resumed run makes every later draw equal to the
    uninterrupted run's: the explicit generators (e.g. a ``prepare_batch``'s timesteps and noise), the training
    loader's shuffle order and per-epoch base seed and any ``torch.randn`` in a forward pass (global RNG), and the
    random crops, flips or dose reductions of MONAI transforms (:func:`numpy_random_states`; MONAI's ``DataLoader``
    seeds them once, when it is constructed, so a resumed run would otherwise replay the first epoch's draws).
    NumPy's and Python's global RNGs are not stored: MONAI transforms do not draw from them.

    Under ``torch.distributed`` with several ranks only rank 0 saves, so :meth:`load_state_dict` leaves every rank's
    states as they are (each keeps its own ``seed + rank`` streams; the resumed run is then not bit-identical to an
    uninterrupted one) and logs a warning.

    Args (keyword-only):
        generators: name -> ``torch.Generator`` (e.g. ``{"prepare_batch": prepare_batch.generator}``); ``None`` = none.
        include_global: also store torch's global CPU (and CUDA) RNG state.
        randomizables: name -> object whose NumPy ``RandomState`` objects are stored (the training dataset: its
            transforms' ``R``); ``None`` = none.
    """

    def __init__(
        self,
        *,
        generators: Mapping[str, torch.Generator] | None = None,
        include_global: bool = True,
        randomizables: Mapping[str, Any] | None = None,
    ) -> None:
        if generators is None:
            generators = {}
        if not isinstance(generators, Mapping):
            raise ValueError(f"generators must be a mapping name -> torch.Generator or None, got {generators!r}")
        for name, generator in generators.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"generators keys must be non-empty strings, got {name!r}")
            if not isinstance(generator, torch.Generator):
                raise ValueError(
                    f"generators[{name!r}] must be a torch.Generator, got {type(generator).__name__}"
                )
        if not isinstance(include_global, bool):
            raise ValueError(f"include_global must be a bool, got {include_global!r}")
        if randomizables is None:
            randomizables = {}
        if not isinstance(randomizables, Mapping) or not all(isinstance(k, str) and k for k in randomizables):
            raise ValueError(
                f"randomizables must be a mapping non-empty name -> object (e.g. the training dataset) or None, got "
                f"{randomizables!r}"
            )
        self.generators = dict(generators)
        self.include_global = include_global
        self.randomizables = dict(randomizables)

    def state_dict(self) -> dict[str, Any]:
        """The current states (class docstring)."""
        state: dict[str, Any] = {"generators": {name: g.get_state() for name, g in self.generators.items()}}
        if self.include_global:
            state["torch"] = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                state["torch_cuda"] = torch.cuda.get_rng_state_all()
        if self.randomizables:
            state["numpy"] = {
                name: [{"path": path, **_numpy_state(rs)} for path, rs in numpy_random_states(obj)]
                for name, obj in self.randomizables.items()
            }
        return state

    def _check_numpy(self, saved: Any) -> list[tuple[Any, np.random.RandomState | None, Mapping[str, Any]]]:
        """``(owner, current state or None, stored state)`` for every stored state; raises on a different pipeline.
        A stored state whose owner has no own state yet (a transform that creates it at its first call) is
        restored into a new ``RandomState`` of the owner."""
        if not isinstance(saved, Mapping) or set(saved) != set(self.randomizables):
            found = sorted(saved) if isinstance(saved, Mapping) else saved
            raise ValueError(
                f"state_dict['numpy'] holds the NumPy states of {found}, the configuration has "
                f"{sorted(self.randomizables)} (a checkpoint written before the transforms' states were stored?)"
            )
        triples = []
        for name, obj in self.randomizables.items():
            slots = {path: (owner, state) for path, owner, state in _random_state_slots(obj)}
            stored = {str(s.get("path")) if isinstance(s, Mapping) else repr(s): s for s in saved[name]}
            unknown = [p for p in stored if p not in slots]
            unsaved = [p for p, (_, state) in slots.items() if state is not None and p not in stored]
            if unknown or unsaved:
                raise ValueError(
                    f"state_dict['numpy'][{name!r}] holds the NumPy states {sorted(stored)}, the configured pipeline "
                    f"has {sorted(p for p, (_, state) in slots.items() if state is not None)}: the random transforms "
                    "changed since the checkpoint was written"
                )
            triples += [(slots[path][0], slots[path][1], value) for path, value in stored.items()]
        return triples

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Set the generators (the global RNG, the transforms' states) to ``state_dict``'s states.

        Raises:
            ValueError: ``state_dict`` is not a mapping with ``"generators"``, names other generators than the
                configured ones, lacks the global state while ``include_global`` is set, or holds NumPy states of
                other objects / another transform pipeline than ``randomizables``.
        """
        if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("generators"), Mapping):
            raise ValueError(f"state_dict must be a mapping with a 'generators' mapping, got {state_dict!r}")
        saved = state_dict["generators"]
        if set(saved) != set(self.generators):
            raise ValueError(
                f"state_dict['generators'] holds the generators {sorted(saved)}, the configuration has "
                f"{sorted(self.generators)}"
            )
        if self.include_global and "torch" not in state_dict:
            raise ValueError(f"state_dict lacks the global RNG state 'torch' (keys {sorted(state_dict)})")
        numpy_states = self._check_numpy(state_dict.get("numpy", {})) if self.randomizables else []
        if _distributed_world_size() > 1:
            logger.warning(
                "RandomStates: %d distributed ranks; the checkpoint holds rank 0's random states only, so every "
                "rank keeps its own generators (the resumed run is not bit-identical to an uninterrupted one)",
                _distributed_world_size(),
            )
            return
        for name, generator in self.generators.items():
            generator.set_state(torch.as_tensor(saved[name]).cpu())
        for owner, rs, stored in numpy_states:
            if rs is None:
                rs = owner.R = np.random.RandomState()
            keys = np.asarray(torch.as_tensor(stored["keys"]).cpu().numpy(), dtype=np.uint32)
            rs.set_state(("MT19937", keys, int(stored["pos"]), int(stored["has_gauss"]),
                          float(stored["cached_gaussian"])))
        if self.include_global:
            torch.set_rng_state(torch.as_tensor(state_dict["torch"]).cpu())
            cuda = state_dict.get("torch_cuda")
            if cuda is not None and torch.cuda.is_available():
                if len(cuda) == torch.cuda.device_count():
                    torch.cuda.set_rng_state_all([torch.as_tensor(c).cpu() for c in cuda])
                else:
                    logger.warning(
                        "RandomStates: the checkpoint holds %d CUDA RNG states, this machine has %d devices; the CUDA "
                        "RNG is not restored", len(cuda), torch.cuda.device_count(),
                    )


_RESUME_HINT = ("train first without the resume overlay (the training configs' checkpoint savers store the trainer "
                "state a resume needs), or point the checkpoint folder (ckpt_dir, output_dir / bundle_root) at the "
                "run to resume")


def resumable_checkpoint(checkpoint_dir: str | Path, *, trainer_key: str = "trainer", hint: str | None = None) -> Path:
    """The newest checkpoint of ``checkpoint_dir`` with trainer state (:func:`latest_checkpoint`).

    Args:
        checkpoint_dir: the training's checkpoint folder.
        trainer_key: the entry holding the trainer state.
        hint: what the error message tells the user to do (``None``: a generic hint).

    Raises:
        ValueError: ``checkpoint_dir`` is not a path.
        FileNotFoundError: the folder is missing or holds no checkpoint with ``trainer_key`` state; the message names
            the folder and says how to create one.
    """
    if not isinstance(checkpoint_dir, str | Path) or str(checkpoint_dir) == "":
        raise ValueError(f"checkpoint_dir must be a folder path, got {checkpoint_dir!r}")
    folder = Path(checkpoint_dir)
    hint = _RESUME_HINT if hint is None else hint
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint to resume from: the checkpoint folder {folder} does not exist; {hint}")
    found = latest_checkpoint(folder, trainer_key=trainer_key)
    if found is None:
        raise FileNotFoundError(
            f"no checkpoint to resume from in {folder}: no checkpoint with {trainer_key!r} state there; {hint}"
        )
    return found


class ResumeTraining(ResumeFromLatest):
    """:class:`ResumeFromLatest` that requires a checkpoint (the handler of the methods' ``resume.json`` overlays).

    Construction (config parsing) already raises ``FileNotFoundError`` naming ``checkpoint_dir`` when it holds no
    checkpoint with trainer state (:func:`resumable_checkpoint`), so a mistyped folder never silently starts a fresh
    run.  :meth:`attach` also attaches every not yet attached :class:`TrainerState` of ``load_dict`` (ranks whose
    ``train_handlers`` are empty under DDP).  Same keyword-only arguments as ``ResumeFromLatest``, plus ``hint`` for
    the error message.
    """

    def __init__(
        self,
        *,
        checkpoint_dir: str | Path,
        load_dict: Mapping[str, Any],
        pattern: str = "*.pt",
        trainer_key: str = "trainer",
        strict: bool = True,
        hint: str | None = None,
    ) -> None:
        super().__init__(
            checkpoint_dir=checkpoint_dir, load_dict=load_dict, pattern=pattern, trainer_key=trainer_key, strict=strict
        )
        self.hint = hint
        self.checkpoint = resumable_checkpoint(self.checkpoint_dir, trainer_key=trainer_key, hint=hint)

    def attach(self, engine: Engine) -> None:
        """Attach unattached :class:`TrainerState` entries, then load at ``Events.STARTED``."""
        for value in self.load_dict.values():
            if isinstance(value, TrainerState) and value.engine is None:
                value.attach(engine)
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        resumable_checkpoint(self.checkpoint_dir, trainer_key=self.trainer_key, hint=self.hint)  # still there
        super().__call__(engine)
        state = engine.state
        if state.max_epochs is not None and state.epoch >= state.max_epochs:
            logger.warning(
                "the checkpoint %s is at epoch %d, max_epochs is %d: nothing left to train (raise --max_epochs to "
                "continue)", self.resumed_from, state.epoch, state.max_epochs,
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
