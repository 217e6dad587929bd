"""Ignite event filters for handler options such as MONAI ``StatsHandler(iteration_log=...)``.  Importing runs
nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bundle._checks import check_int

__all__ = ["every_n_events"]


def every_n_events(n: int) -> Callable[[Any, int], bool]:
    """Ignite event filter ``(engine, event_count) -> event_count % n == 0`` (e.g. ``StatsHandler(iteration_log=)``)."""
    n = check_int(n, "n", minimum=1)

    def event_filter(engine: Any, event: int) -> bool:
        return event % n == 0

    return event_filter
