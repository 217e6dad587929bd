"""RNG states as checkpoint content: :class:`RandomStates` stores explicit ``torch.Generator`` states, torch's global
RNG and the NumPy ``RandomState`` of every MONAI random transform of a dataset (:func:`numpy_random_states`) as one
checkpoint entry, so that a resumed training draws exactly what the uninterrupted one would have drawn
(:class:`bundle.handlers.resume.ResumeTraining` loads it with the other entries).

Importing this module runs nothing.
"""

from __future__ import annotations

import logging
import numbers
import types
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["RandomStates", "numpy_random_states"]

logger = logging.getLogger(__name__)


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
