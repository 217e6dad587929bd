"""The infer tasks inside a MONAI Label app, only when monailabel is installed.

Two shapes, both around a :class:`bundle.app.task.InferTask`:

* :func:`to_basic_infer_task`: a ``monailabel.tasks.infer.basic_infer.BasicInferTask`` subclass, so MONAI Label's
  own ``__call__`` runs the pipeline: ``pre_transforms`` (request check + the task's loading and scaling),
  ``inferer`` / ``run_inferer`` (the method's MONAI inferer, sampling), ``post_transforms`` (back to physical
  units) and ``writer`` (NIfTI + result JSON); MONAI Label adds its latencies and callbacks;
* :func:`to_monailabel`: an ``infer_v2.InferTask`` adapter that forwards the request to ``task(request)``.

Inside a MONAI Label app's ``init_infers``::

    from bundle.app import build_task
    from bundle.app.monailabel import register_infers

    infers = register_infers({}, {"petdds": build_task("petdds", checkpoint=...)})  # BasicInferTask subclasses

Without monailabel :func:`register_infers` leaves ``infers`` unchanged and logs why; :func:`to_monailabel` and
:func:`to_basic_infer_task` raise an ``ImportError`` that says how to install it.  Nothing is imported from
monailabel at module import.  monailabel 0.8.5 (PyPI) on Python 3.11: ``pip install --no-deps monailabel==0.8.5
pynrrd expiring_dict expiringdict cachetools`` is enough for these classes (its full dependency set builds sam2
from source); see docs/ecosystem.md.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from .task import InferTask

__all__ = ["monailabel_available", "register_infers", "to_basic_infer_task", "to_monailabel"]

_INSTALL = ("monailabel is not installed: pip install monailabel (or, without its server dependencies, pip install "
            "--no-deps monailabel pynrrd expiring_dict expiringdict cachetools); the tasks also run without it: "
            "task(request) or python -m bundle.app infer")

logger = logging.getLogger(__name__)


def monailabel_available() -> bool:
    """Whether ``monailabel`` can be imported."""
    return importlib.util.find_spec("monailabel") is not None


def to_monailabel(task: InferTask) -> Any:
    """``task`` as a ``monailabel.interfaces.tasks.infer_v2.InferTask`` (type ``others``, 3D, no labels)."""
    if not isinstance(task, InferTask):
        raise TypeError(f"task must be a bundle.app InferTask, got {type(task).__name__}")
    if not monailabel_available():
        raise ImportError(_INSTALL)
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


def to_basic_infer_task(task: InferTask) -> Any:
    """``task`` as an instance of a ``BasicInferTask`` subclass (type ``others``, 3D, no labels) whose
    ``pre_transforms``, ``inferer``, ``run_inferer``, ``post_transforms`` and ``writer`` are the task's; MONAI
    Label's ``__call__(request) -> (file, result JSON)`` drives them.  The request is checked as ``task(request)``
    checks it (unknown keys are left to MONAI Label), and existing outputs are refused unless ``overwrite``."""
    if not isinstance(task, InferTask):
        raise TypeError(f"task must be a bundle.app InferTask, got {type(task).__name__}")
    if not monailabel_available():
        raise ImportError(_INSTALL)
    import torch
    from monailabel.interfaces.tasks.infer_v2 import InferType
    from monailabel.tasks.infer.basic_infer import BasicInferTask

    output_key = "bundle_output_file"

    class BundleBasicInferTask(BasicInferTask):
        """MONAI Label's basic infer pipeline over a bundle.app task."""

        def __init__(self, inner: InferTask) -> None:
            super().__init__(path=None, network=inner.network, type=InferType.OTHERS, labels=None, dimension=3,
                             description=inner.description, config={"device": str(inner.device)})
            self.inner = inner

        def info(self) -> dict:
            return {**super().info(), **self.inner.info()}

        def is_valid(self) -> bool:
            return True

        def _check_request(self, data: dict) -> dict:
            known = {k.name for k in self.inner._keys()}
            checked = self.inner.validate_request({k: v for k, v in data.items() if k in known})
            output = self.inner.output_path(checked)
            return {**{k: v for k, v in data.items() if k not in known}, **checked, output_key: str(output)}

        def pre_transforms(self, data: Any = None) -> list:
            return [self._check_request, *self.inner.pre_transforms(data or {})]

        def inferer(self, data: Any = None) -> Any:
            return self.inner.inferer

        def run_inferer(self, data: dict, convert_to_batch: bool = True, device: str = "cuda") -> dict:
            with torch.no_grad():
                return self.inner.run_inferer(data)

        def post_transforms(self, data: Any = None) -> list:
            return list(self.inner.post_transforms(data or {}))

        def writer(self, data: dict, extension: Any = None, dtype: Any = None) -> tuple[str, dict]:
            output = Path(data[output_key])
            entries = self.inner.write_checked(data, output)
            return str(output), {"method": self.inner.method, "file": str(output), "image": data["image"],
                                 "checkpoint": self.inner.checkpoint, "seed": data["seed"], **entries}

    return BundleBasicInferTask(task)


def register_infers(infers: MutableMapping[str, Any], tasks: Mapping[str, InferTask]) -> MutableMapping[str, Any]:
    """Add ``tasks`` (name -> task) to a MONAI Label ``infers`` dict as :func:`to_basic_infer_task` instances
    when monailabel is installed; return it."""
    if not monailabel_available():
        logger.info("monailabel is not installed; %s not registered", sorted(tasks))
        return infers
    for name, task in tasks.items():
        infers[name] = to_basic_infer_task(task)
    return infers
