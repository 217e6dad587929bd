"""Argument checks shared across the package (one definition, one message format)."""

from __future__ import annotations

import numbers

__all__ = ["check_int"]


def check_int(value: object, name: str, *, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum``; ``TypeError`` for non-integers (bool included), ``ValueError`` below it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
