"""What an exported bundle's ``configs/inference.json`` runs: its MONAI workflow ids are built from these.

* :func:`require_own_code`: the first step of the exported ``run``: the imported ``bundle`` package must be the
  bundle's own, hash-verified ``bundle/`` (not another copy earlier on ``sys.path``).  The exported
  ``bundle_root`` defaults to the folder above the imported package, so it does not depend on the working
  directory; ``--bundle_root DIR`` that names another folder is refused here.
* :func:`inference_requests` -> the ``dataset``'s data: one request (``--image``) or one per input file of
  ``--dataset_dir``.
* :func:`task_evaluator` -> the ``evaluator``: a MONAI ``Workflow`` engine that runs the infer task on every item of
  the dataset and prints each result as one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .archive import CHECKSUMS

__all__ = ["INPUT_SUFFIXES", "inference_requests", "require_own_code", "task_evaluator"]

INPUT_SUFFIXES: dict[str, tuple[str, ...]] = {
    "legopet": (".npy",),
    "petdds": (".npy",),
    "upete": (".nii.gz", ".nii"),
}
"""Input files of each method that ``--dataset_dir`` picks up."""


def require_own_code(bundle_root: str | Path) -> str:
    """``ValueError`` unless the imported ``bundle`` package is ``<bundle_root>/bundle``; returns its path.

    MONAI's ``monai.bundle run`` puts the bundle root right after the working directory on ``sys.path``, so a
    ``bundle/`` folder in the working directory (e.g. a source checkout) would shadow the shipped code.
    """
    root = Path(bundle_root).resolve()
    own = root / "bundle" / "__init__.py"
    loaded = Path(sys.modules["bundle"].__file__ or "").resolve()
    if not (root / CHECKSUMS).is_file():
        raise ValueError(f"bundle_root {root} is not an exported bundle (no {CHECKSUMS}); the imported bundle package "
                         f"is {loaded}: run from another working directory (one without a bundle/ folder) or pass "
                         "--bundle_root with the bundle's folder")
    if loaded != own:
        raise ValueError(f"the imported bundle package is {loaded}, not this bundle's own {own}: run from another "
                         "working directory (one without a bundle/ folder), or put the bundle root first on sys.path "
                         f"(PYTHONPATH={Path(bundle_root).resolve()})")
    return str(loaded)


def inference_requests(request: Mapping[str, Any], *, method: str, dataset_dir: str | Path | None) -> list[dict]:
    """The requests to run: ``[request]`` when ``request["image"]`` is set, else one per input file (suffix
    :data:`INPUT_SUFFIXES`) directly in ``dataset_dir``, each written to the folder ``request["output"]`` as
    ``<input folder>_<stem>_<method>.nii.gz`` (:func:`bundle.app.task.resolve_output`).  An ``output`` that is not
    a ``.nii``/``.nii.gz`` name is a folder, created here.

    Raises:
        ValueError: neither an image nor a dataset folder, a dataset folder without inputs, or a dataset folder
            with an ``output`` that is a file name.
    """
    output = Path(str(request.get("output") or ""))
    to_folder = request.get("output") is not None and not output.name.endswith((".nii", ".nii.gz"))
    if request.get("image"):
        if to_folder:
            output.mkdir(parents=True, exist_ok=True)
        return [dict(request)]
    if not dataset_dir:
        raise ValueError("give --image FILE (one input) or --dataset_dir DIR (every input file in DIR), got neither")
    folder = Path(dataset_dir)
    if not folder.is_dir():
        raise ValueError(f"dataset_dir must be an existing folder of {method} inputs, got {str(folder)!r}")
    suffixes = INPUT_SUFFIXES[method]
    inputs = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(suffixes))
    if not inputs:
        raise ValueError(f"dataset_dir {folder} holds no {method} input files (*{', *'.join(suffixes)})")
    if not to_folder:
        raise ValueError(f"output must be a folder when dataset_dir is given ({len(inputs)} inputs), got "
                         f"{request.get('output')!r}")
    output.mkdir(parents=True, exist_ok=True)
    return [{**request, "image": str(path), "output": str(output)} for path in inputs]


def task_evaluator(*, task: Any, dataset: Sequence[Mapping[str, Any]], device: Any) -> Any:
    """A MONAI ``Workflow`` (ignite engine, one epoch) whose iteration is ``task(request)`` for each item of
    ``dataset``; the iteration output is the result JSON, also printed on one line."""
    from monai.engines import Workflow
    from torch.utils.data import DataLoader

    def iteration(engine: Any, request: Mapping[str, Any]) -> dict:
        _, result = task(dict(request))
        print(json.dumps(result), flush=True)
        return result

    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=0)  # one request per iteration
    return Workflow(device=device, max_epochs=1, data_loader=loader, iteration_update=iteration, decollate=False)
