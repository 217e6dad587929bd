"""The id of one training run as a checkpoint entry (:class:`RunId`), so a resume can tell which checkpoints of a
folder belong together.

A fresh training draws a new id (``uuid4().hex``, from the operating system's entropy: it draws nothing from torch's,
NumPy's or Python's generators, so it changes no seeded result); every checkpoint its savers write (interval, final,
best) stores it under ``"run_id"``; a resume loads it back, so the resumed run keeps writing the same id.
:func:`stored_run_id` reads it from a loaded checkpoint (``None`` for a checkpoint written before run ids were
recorded).  Importing this module runs nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["RUN_ID_KEY", "RunId", "stored_run_id"]

RUN_ID_KEY = "run_id"
"""The checkpoint entry (and the key inside it) that holds the run id."""


def _check_run_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string (a training run id, e.g. {uuid.uuid4().hex!r}), got "
                         f"{value!r}")
    return value.strip()


class RunId:
    """One training run's id as a checkpoint entry: ``state_dict()`` = ``{"run_id": "<32 hex digits>"}``.

    Put it into every checkpoint saver's ``save_dict`` under ``"run_id"`` (the training configs: ``"run_id":
    "@training_run_id"``, defined once in ``configs/common.json``).  Loading a checkpoint (``load_state_dict``)
    adopts its id, so a resumed run continues to write the id of the run it continues.

    Args:
        value: the id; ``None`` draws a new one (``uuid.uuid4().hex``).
    """

    def __init__(self, value: str | None = None) -> None:
        self.value = uuid.uuid4().hex if value is None else _check_run_id(value, "value")

    def __repr__(self) -> str:
        return f"RunId({self.value!r})"

    def state_dict(self) -> dict[str, str]:
        """``{"run_id": self.value}``."""
        return {RUN_ID_KEY: self.value}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Adopt the stored id (``state_dict["run_id"]``, a non-empty string)."""
        if not isinstance(state_dict, Mapping) or RUN_ID_KEY not in state_dict:
            raise ValueError(f"state_dict must be a mapping with a {RUN_ID_KEY!r} string, got {state_dict!r}")
        self.value = _check_run_id(state_dict[RUN_ID_KEY], f"state_dict[{RUN_ID_KEY!r}]")


def stored_run_id(checkpoint: Mapping[str, Any], key: str = RUN_ID_KEY) -> str | None:
    """The run id of a loaded checkpoint (entry ``key`` as written by :class:`RunId`); ``None`` when it has none."""
    entry = checkpoint.get(key)
    value = entry.get(RUN_ID_KEY) if isinstance(entry, Mapping) else None
    return value if isinstance(value, str) and value else None
