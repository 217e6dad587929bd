"""Stop training at the first NaN / Inf loss: :class:`StopOnNonFiniteLoss` logs the iteration and epoch and, by
default, raises :class:`NonFiniteLossError` (ignite's ``TerminateOnNan`` only logs a warning and terminates
silently).  Importing this module runs nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


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
