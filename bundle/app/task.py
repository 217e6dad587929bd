"""The MONAI Label task shape without monailabel: pre-transforms → inferer → post-transforms → writer.

``task(request) -> (result_file, result_json)`` as MONAI Label's ``BasicInferTask.__call__``.  A request is a dict
with ``image`` (a path) plus the method's keys (``ct`` for uPETe; see each task's ``request_keys``); ``output``
(a ``.nii``/``.nii.gz`` file or an existing folder) is optional and defaults to a temporary file, as MONAI
Label's writer does.  Unknown keys, missing required keys and missing files raise errors that name the key and
the expected value.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "InferTask", "RequestKey", "companion_path", "input_name", "resolve_output", "sidecar_path", "to_device_network",
]

Transform = Callable[[dict], dict]


class RequestKey:
    """One request entry: ``name``, whether it is ``required``, whether it is a ``path`` that must exist, and the
    ``expected`` value in words (used in error messages and ``--help``)."""

    def __init__(self, name: str, *, expected: str, required: bool = False, path: bool = False) -> None:
        self.name, self.expected, self.required, self.path = name, expected, required, path


COMMON_KEYS = (
    RequestKey("output", expected="an output .nii/.nii.gz file or an existing folder (default: a temporary file)"),
    RequestKey("seed", expected="an int >= 0 (default 0)"),
    RequestKey("overwrite", expected="true to replace existing output files (default false: an existing output, "
                                     "companion or sidecar file is an error)"),
)


def resolve_output(output: object, *, image: str, method: str) -> Path:
    """The NIfTI path to write: ``output`` itself (``.nii``/``.nii.gz``), ``<folder>/<input name>_<method>.nii.gz``
    for an existing folder (:func:`input_name`), or a new temporary file when ``output`` is ``None``."""
    if output is None:
        handle = tempfile.NamedTemporaryFile(prefix=f"bundle_{method}_", suffix=".nii.gz", delete=False)
        handle.close()
        return Path(handle.name)
    if not isinstance(output, str | Path) or str(output) == "":
        raise ValueError(f"output must be a .nii/.nii.gz path or an existing folder, got {output!r}")
    path = Path(output)
    if path.is_dir():
        return path / f"{input_name(image)}_{method}.nii.gz"
    if not (path.name.endswith(".nii.gz") or path.name.endswith(".nii")):
        what = " (an existing file that is not NIfTI)" if path.exists() else ""
        raise ValueError(f"output must end with .nii or .nii.gz (or be an existing folder), got {str(path)!r}{what}")
    return path


def input_name(image: str | Path) -> str:
    """The output name stem of input ``image``: ``<parent folder>_<file stem>`` (``samples/s00/sinogram.npy`` ->
    ``s00_sinogram``), so the inputs of a dataset, whose files share one name per sample folder, get distinct outputs
    in one folder; a file at the file-system root or a DICOM folder: its own name."""
    path = Path(image).resolve()
    stem = path.name.split(".")[0] or "image"
    parent = path.parent.name
    return f"{parent}_{stem}" if parent else stem


def companion_path(output: str | Path, tag: str) -> Path:
    """``<stem>_<tag>.nii.gz`` next to ``output`` (``x.nii.gz`` or ``x.nii`` -> ``x_<tag>.nii.gz``): the file a task
    writes beside its main output (PET-DDS-δ: ``cv``; LegoPET: ``std``)."""
    output = Path(output)
    name = output.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(f"{name}_{tag}.nii.gz")


def sidecar_path(output: str | Path) -> Path:
    """``<output>.json`` (``x.nii.gz`` -> ``x.nii.gz.json``): the result JSON ``python -m bundle.app infer`` writes
    next to the image; named after the whole output name, so it cannot collide with a user's ``x.json``."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def _existing_outputs(output: Path) -> list[str]:
    """The files a task run would write for ``output`` (image, ``_std`` / ``_cv`` companions, sidecar) that exist."""
    planned = (output, companion_path(output, "std"), companion_path(output, "cv"), sidecar_path(output))
    return [str(p) for p in planned if p.exists()]


def _written_from(output: Path, image: str) -> str:
    """`` (written from another input, X)`` when ``output``'s sidecar names an input other than ``image``."""
    try:
        earlier = json.loads(sidecar_path(output).read_text(encoding="utf-8")).get("image")
    except (OSError, ValueError, AttributeError):
        return ""
    if earlier is None or Path(str(earlier)).resolve() == Path(image).resolve():
        return ""
    return f" (written from another input, {earlier}, whose name maps to the same output)"


def _seed(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"seed must be an int >= 0, got {value!r}")
    return int(value)


class _DeviceNetwork:
    """Calls ``network`` on ``device`` and returns its output on the inputs' device (the samplers keep their data
    on the CPU)."""

    def __init__(self, network: Callable[..., torch.Tensor], device: torch.device) -> None:
        self.network, self.device = network, device

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        back = next((a.device for a in args if isinstance(a, torch.Tensor)), self.device)

        def move(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(self.device)
            if isinstance(x, list | tuple):
                return type(x)(move(v) for v in x)
            return x

        out = self.network(*move(args), **{k: move(v) for k, v in kwargs.items()})
        return out.to(back)


def to_device_network(network: torch.nn.Module, device: str | torch.device) -> _DeviceNetwork:
    """``network`` in eval mode on ``device``, wrapped so callers may pass CPU tensors."""
    device = torch.device(device)
    return _DeviceNetwork(network.to(device).eval(), device)


class InferTask:
    """Base class: subclasses define ``method``, ``request_keys``, :meth:`pre_transforms`, :meth:`run_inferer`,
    :meth:`post_transforms` and :meth:`write`.

    Args (keyword-only):
        network: the trained network (its weights already loaded).
        inferer: the method's MONAI ``Inferer``.
        device: where the network runs.
        description: one line for MONAI Label's ``info()``.
        checkpoint: the weights file, reported in the result JSON.
    """

    method: str = ""
    request_keys: Sequence[RequestKey] = ()

    def __init__(
        self,
        *,
        network: torch.nn.Module,
        inferer: Any,
        device: str | torch.device = "cpu",
        description: str = "",
        checkpoint: str | Path | None = None,
    ) -> None:
        if not isinstance(network, torch.nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if not callable(inferer):
            raise TypeError(f"inferer must be a callable MONAI Inferer, got {type(inferer).__name__}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from error
        self.network = network.to(self.device).eval()
        self.inferer = inferer
        self.description = description
        self.checkpoint = None if checkpoint is None else str(checkpoint)

    # ------------------------------------------------------------------ MONAI Label lifecycle
    def pre_transforms(self, data: Mapping[str, Any]) -> Sequence[Transform]:
        """Callables ``dict -> dict`` applied to the request before inference."""
        raise NotImplementedError

    def run_inferer(self, data: dict) -> dict:
        """Run the inferer; store the prediction under ``"pred"``."""
        raise NotImplementedError

    def post_transforms(self, data: Mapping[str, Any]) -> Sequence[Transform]:
        """Callables ``dict -> dict`` applied to the prediction."""
        return ()

    def write(self, data: dict, path: Path) -> dict:
        """Write ``data["pred"]`` to ``path``; return result-JSON entries (shape, voxel size, ...)."""
        raise NotImplementedError

    def info(self) -> dict:
        """Task description for a MONAI Label server."""
        return {
            "method": self.method,
            "description": self.description,
            "request": {k.name: {"required": k.required, "expected": k.expected} for k in self._keys()},
        }

    # ------------------------------------------------------------------ request handling
    def _keys(self) -> list[RequestKey]:
        return [*self.request_keys, *COMMON_KEYS]

    def validate_request(self, request: object) -> dict:
        """A checked copy of ``request``: a mapping with the known keys, required ones present, paths existing."""
        if not isinstance(request, Mapping):
            raise TypeError(f"request must be a dict with at least 'image', got {type(request).__name__}")
        keys = {k.name: k for k in self._keys()}
        unknown = sorted(set(map(str, request)) - set(keys))
        if unknown:
            raise ValueError(f"request has unknown keys {unknown} for method {self.method!r}; allowed: {sorted(keys)}")
        data = {k: v for k, v in request.items() if v is not None}
        for key in keys.values():
            if key.required and key.name not in data:
                raise ValueError(f"request[{key.name!r}] is required for method {self.method!r}: {key.expected}")
            if key.path and key.name in data:
                value = data[key.name]
                if not isinstance(value, str | Path) or not Path(value).exists():
                    raise FileNotFoundError(f"request[{key.name!r}] must be {key.expected}; {value!r} does not exist")
                data[key.name] = str(value)
        data["seed"] = _seed(data.get("seed"))
        return data

    def output_path(self, data: dict) -> Path:
        """The file to write for the checked request ``data`` (pops ``overwrite``): ``ValueError`` when it (or a
        companion / sidecar file) exists and ``overwrite`` is not true."""
        overwrite = data.pop("overwrite", False)
        if not isinstance(overwrite, bool):
            raise ValueError(f"request['overwrite'] must be true or false, got {overwrite!r}")
        output = resolve_output(data.get("output"), image=data["image"], method=self.method)
        existing = _existing_outputs(output) if data.get("output") is not None else []
        if existing and not overwrite:
            raise ValueError(f"output files exist: {existing}{_written_from(output, data['image'])}; nothing was "
                             "written. Choose another --output or pass --overwrite (request['overwrite'] = true) to "
                             "replace them")
        return output

    def write_checked(self, data: dict, output: Path) -> dict:
        """:meth:`write` after checking that ``data["pred"]`` is finite (``RuntimeError`` otherwise)."""
        if not bool(torch.isfinite(torch.as_tensor(data["pred"])).all()):
            raise RuntimeError(f"{self.method}: the prediction holds NaN or Inf; nothing was written to {output}")
        return self.write(data, output)

    def __call__(self, request: Mapping[str, Any]) -> tuple[str, dict]:
        """Run the task on ``request`` -> (result file path, result JSON)."""
        start = time.perf_counter()
        data = self.validate_request(request)
        temporary = data.get("output") is None  # resolve_output creates an empty temporary file for the result
        output = self.output_path(data)
        latencies: dict[str, float] = {}
        try:
            clock = time.perf_counter()
            for transform in self.pre_transforms(data):
                data = transform(data)
            latencies["pre"] = time.perf_counter() - clock
            clock = time.perf_counter()
            with torch.no_grad():
                data = self.run_inferer(data)
            latencies["infer"] = time.perf_counter() - clock
            clock = time.perf_counter()
            for transform in self.post_transforms(data):
                data = transform(data)
            latencies["post"] = time.perf_counter() - clock
            clock = time.perf_counter()
            entries = self.write_checked(data, output)
            latencies["write"] = time.perf_counter() - clock
        except BaseException:
            if temporary:  # a failed request leaves no empty file behind in the temporary folder
                output.unlink(missing_ok=True)
            raise
        latencies["total"] = time.perf_counter() - start
        result = {
            "method": self.method,
            "file": str(output),
            "image": data["image"],
            "checkpoint": self.checkpoint,
            "seed": data["seed"],
            "device": str(self.device),
            **entries,
            "latencies_s": {k: round(v, 4) for k, v in latencies.items()},
        }
        json.dumps(result)  # the result must be JSON-serialisable
        return str(output), result
