"""A training's progress bar: ignite's ``ProgressBar`` (one bar per epoch, iterations done / per epoch, the loss)
attached only when :func:`bundle.progress.progress_enabled` says bars show (``BUNDLE_PROGRESS``, a terminal, the
``progress`` config key).  Importing this module runs nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from ignite.engine import Engine
from ignite.handlers import ProgressBar

from bundle.progress import progress_enabled

__all__ = ["TrainingProgressBar"]


def _loss_of(output: Any) -> dict[str, float]:
    """``{"loss": float}`` from a MONAI engine output (a dict or a decollated list of dicts); ``{}`` without a loss."""
    first = output[0] if isinstance(output, Sequence) and not isinstance(output, str) and output else output
    if isinstance(first, Mapping) and "loss" in first:
        return {"loss": float(first["loss"])}
    return {}


class TrainingProgressBar:
    """List it among a trainer's ``train_handlers`` (MONAI calls :meth:`attach`): a bar per epoch on standard error,
    ``<desc>epoch [e/E]: [i/I]`` with the loss of the last iteration, when bars show.

    Args (keyword-only):
        progress: ``False`` turns it off (the configs pass ``@progress``); ``True`` follows ``BUNDLE_PROGRESS``
            (:mod:`bundle.progress`).
        desc: prefix of the bar's label (e.g. ``"PET-DDS "``).
    """

    def __init__(self, *, progress: bool = True, desc: str = "") -> None:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be true or false, got {progress!r}")
        if not isinstance(desc, str):
            raise TypeError(f"desc must be a string, got {desc!r}")
        self.progress = progress
        self.desc = desc
        self.bar: ProgressBar | None = None

    def attach(self, engine: Engine) -> None:
        """Attach ignite's ``ProgressBar`` to ``engine`` when bars show (otherwise nothing)."""
        if not progress_enabled(self.progress):
            return
        self.bar = ProgressBar(persist=True, desc=f"{self.desc}epoch", file=sys.stderr, dynamic_ncols=True)
        self.bar.attach(engine, output_transform=_loss_of)
