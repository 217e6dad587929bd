"""MONAI Label-style inference tasks (request dict -> result file + result JSON) for LegoPET, PET-DDS-δ and uPETe.

No monailabel import here: :mod:`bundle.app.monailabel` adapts the tasks when monailabel is installed.  The
command line is ``python -m bundle.app infer --method {legopet,petdds,upete} --image ... --output ...``.
Importing this package runs nothing.
"""

from __future__ import annotations

from .registry import METHODS, build_task
from .task import InferTask

__all__ = ["METHODS", "InferTask", "build_task"]
