"""Register the infer tasks with a MONAI Label app, only when monailabel is installed.

Inside a MONAI Label app's ``init_infers``::

    from bundle.app import build_task
    from bundle.app.monailabel import register_infers

    infers = register_infers({}, {"petdds": build_task("petdds", checkpoint=...)})

Without monailabel :func:`register_infers` leaves ``infers`` unchanged and logs why; :func:`to_monailabel` raises an
``ImportError`` that says how to install it.  Nothing is imported from monailabel at module import.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from .task import InferTask

__all__ = ["monailabel_available", "register_infers", "to_monailabel"]

logger = logging.getLogger(__name__)


def monailabel_available() -> bool:
    """Whether ``monailabel`` can be imported."""
    return importlib.util.find_spec("monailabel") is not None


def to_monailabel(task: InferTask) -> Any:
    """``task`` as a ``monailabel.interfaces.tasks.infer_v2.InferTask`` (type ``others``, 3D, no labels)."""
    if not isinstance(task, InferTask):
        raise TypeError(f"task must be a bundle.app InferTask, got {type(task).__name__}")
    if not monailabel_available():
        raise ImportError("monailabel is not installed: pip install monailabel (the tasks also run without it: "
                          "task(request) or python -m bundle.app infer)")
    from monailabel.interfaces.tasks.infer_v2 import InferTask as MONAILabelInferTask
    from monailabel.interfaces.tasks.infer_v2 import InferType

    class _Adapter(MONAILabelInferTask):
        """Forwards MONAI Label requests to the bundle task."""

        def __init__(self, inner: InferTask) -> None:
            super().__init__(type=InferType.OTHERS, labels=None, dimension=3, description=inner.description,
                             config={})
            self.inner = inner

        def info(self) -> dict:
            return {**super().info(), **self.inner.info()}

        def is_valid(self) -> bool:
            return True

        def __call__(self, request: Mapping[str, Any], *args: Any, **kwargs: Any) -> tuple[str, dict]:
            keys = {k.name for k in self.inner._keys()}
            return self.inner({k: v for k, v in request.items() if k in keys})

    return _Adapter(task)


def register_infers(infers: MutableMapping[str, Any], tasks: Mapping[str, InferTask]) -> MutableMapping[str, Any]:
    """Add ``tasks`` (name -> task) to a MONAI Label ``infers`` dict when monailabel is installed; return it."""
    if not monailabel_available():
        logger.info("monailabel is not installed; %s not registered", sorted(tasks))
        return infers
    for name, task in tasks.items():
        infers[name] = to_monailabel(task)
    return infers
