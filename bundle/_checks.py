"""Argument checks shared across the package (one definition, one message format)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, TypeVar

import torch

__all__ = ["check_choice", "check_int", "check_nonnegative", "check_positive", "check_real", "check_sequence"]

E = TypeVar("E", bound=Enum)


def check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum``; ``TypeError`` for non-integers (bool included), ``ValueError`` below it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_choice(value: object, choices: type[E], name: str) -> E:
    """``choices(value)`` (a ``StrEnum`` member); ``ValueError`` listing the allowed values otherwise."""
    try:
        return choices(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {[c.value for c in choices]}, got {value!r}") from None


def check_positive(value: object, name: str) -> float:
    """``value`` (a real number or one-element tensor) as a float, finite and > 0; ``TypeError`` for non-reals
    (bool included), ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | torch.Tensor):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return value


def check_nonnegative(value: object, name: str) -> float:
    """``value`` as a float, finite and >= 0; ``TypeError`` for non-reals (bool included), ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_sequence(values: object, name: str, check: Callable[[object, str], Any]) -> list:
    """``[check(v, f"{name}[i]") for each entry]`` of a non-empty non-string sequence; ``TypeError`` otherwise."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"{name} must be a non-empty sequence, got {values!r}")
    return [check(v, f"{name}[{i}]") for i, v in enumerate(values)]
def check_real(value: object, name: str, expected: str, ok: Callable[[float], bool]) -> float:
    """``value`` as a finite float with ``ok(value)``; ``TypeError`` for non-numbers (bool included), ``ValueError``
    otherwise, both saying "``name`` must be a finite number ``expected``" (e.g. ``"in (0, 1]"``, ``"> 0"``)."""
    message = f"{name} must be a finite number {expected}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(message)
    if not (math.isfinite(float(value)) and ok(float(value))):
        raise ValueError(message)
    return float(value)
