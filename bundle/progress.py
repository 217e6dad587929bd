"""Progress bars: the one switch and the one bar factory of the package.

Every long loop (the reverse-diffusion loop of :mod:`bundle.diffusion.sampler`, trainings through
:class:`bundle.handlers.progress_bar.TrainingProgressBar`, evaluations, calibration, app steps) draws its bar with
:func:`progress_bar`.  Whether bars show is decided here, once:

* environment variable ``BUNDLE_PROGRESS`` (:class:`ProgressMode`): ``auto`` (default, also when unset): bars only when
  standard error is a terminal (a log file or a pipe stays clean); ``on``: always (e.g. to follow a job's log);
  ``off``: never.
* the ``progress`` argument of a loop (and the ``progress`` config key, ``--progress false``): ``False`` turns that
  loop's bar off whatever the environment says.

Bars go to standard error.  Importing this module runs nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from tqdm.auto import tqdm

__all__ = ["PROGRESS_ENV", "ProgressMode", "progress_bar", "progress_enabled", "progress_mode"]

PROGRESS_ENV = "BUNDLE_PROGRESS"
"""The environment variable that switches every progress bar of the package (module docstring)."""


class ProgressMode(StrEnum):
    """Values of ``BUNDLE_PROGRESS``."""

    AUTO = "auto"  # bars when standard error is a terminal
    ON = "on"
    OFF = "off"


_ALIASES = {"1": ProgressMode.ON, "true": ProgressMode.ON, "yes": ProgressMode.ON,
            "0": ProgressMode.OFF, "false": ProgressMode.OFF, "no": ProgressMode.OFF, "": ProgressMode.AUTO}


def progress_mode() -> ProgressMode:
    """``BUNDLE_PROGRESS`` as a :class:`ProgressMode` (unset: ``auto``; ``1``/``true``/``yes`` = on, ``0``/``false``/
    ``no`` = off).

    Raises:
        ValueError: any other value, naming the variable and the accepted ones.
    """
    value = os.environ.get(PROGRESS_ENV, "auto").strip().lower()
    if value in _ALIASES:
        return _ALIASES[value]
    try:
        return ProgressMode(value)
    except ValueError:
        raise ValueError(
            f"environment variable {PROGRESS_ENV} must be one of {[m.value for m in ProgressMode]} (or 1/0), got "
            f"{os.environ[PROGRESS_ENV]!r}"
        ) from None


def progress_enabled(progress: bool = True) -> bool:
    """Whether a bar shows: ``progress`` and (``BUNDLE_PROGRESS`` on, or auto and standard error is a terminal)."""
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be true or false, got {progress!r}")
    if not progress:
        return False
    mode = progress_mode()
    if mode is ProgressMode.AUTO:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty is not None and isatty())
    return mode is ProgressMode.ON


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    progress: bool = True,
    leave: bool = True,
) -> tqdm:
    """A tqdm bar on standard error over ``iterable`` (or a manual one of ``total`` steps, ``bar.update()``), shown
    when :func:`progress_enabled` (``progress``); otherwise a silent pass-through with the same interface.

    Args:
        iterable: what the loop runs over; ``None`` for a manually updated bar.
        desc: the bar's label, e.g. ``"PET-DDS"`` or ``"calibration"``.
        total: number of steps (default ``len(iterable)`` where defined).
        unit: the step's name (``"step"``, ``"slice"``, ``"it"``).
        progress: ``False`` hides this bar whatever ``BUNDLE_PROGRESS`` says.
        leave: keep the finished bar on screen (``False`` for inner loops, e.g. the sampling steps of one image).
    """
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, file=sys.stderr, dynamic_ncols=True,
                disable=not progress_enabled(progress))
