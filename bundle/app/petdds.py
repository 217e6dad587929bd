"""PET-DDS-δ infer task: a 3D sinogram (+ its normalisation and background) -> a 3D activity image (NIfTI).

Request keys: ``image`` (counts ``.npy`` of the scanner preset's sinogram shape (planes, views, radial)),
``normalisation`` (``.npy`` of the same shape with n ⊙ a ⊙ calibration, default ones), ``background`` (``.npy``
of the same shape or a number: expected randoms + scatter counts per bin, > 0 wherever counts are > 0),
``scanner_preset`` and ``fwhm_mm`` (defaults from the task), ``samples`` (N >= 1, default the task's), ``output``,
``seed``.  The forward model is ȳ = n ⊙ A(G x) + s as in :mod:`bundle.data.petdds`.  A background whose mean is
at least half the mean counts logs a warning with both numbers: such a background explains most of the counts, so
the image comes out near zero (a plain number such as 0.5 is in counts per bin, which are often below 1 at low
count; the dataset's ``background_full.npy`` × f is the right one for a dataset sinogram).

Instead of the files, ``sample`` (a petdds dataset sample folder ``<dataset>/samples/<id>/``) and ``realisation``
(k: ``sinogram_low_k.npy``, default 0; ``"full"``: the full-count sinogram) take the sinogram and its forward model
from the dataset (:meth:`bundle.data.petdds.PETDDSDataset.forward_model`: normalisation f c n ⊙ a, background
f s_full, the manifest's scanner and resolution), so the image is in the reference's activity units.

Samples: with N > 1 the sampler runs N times, sample k with ``torch.Generator().manual_seed(seed + k)`` (k = 0 … N − 1,
so sample 0 is the single-sample result; one OSEM image for the slice scale,
:func:`bundle.inferers.petdds.reconstruct_many`); the output is the voxel-wise mean and ``<stem>_cv.nii.gz`` next to
it holds the coefficient of variation std / mean (population std, 0 where the mean is 0,
:func:`bundle.inferers.petdds.uncertainty_from_samples`), the paper's uncertainty image.  The JSON result names both.

:func:`reconstruct_petdds_file` reconstructs one sinogram file of a petdds dataset with the forward model stored for
its sample (configs/petdds/inference.json, run id ``inferring``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bundle._checks import check_int, check_nonnegative
from bundle.data.io import load_sinogram, save_image
from bundle.data.petdds import PETDDSDataset
from bundle.inferers.petdds import (
    Network,
    PETDDSInferer,
    check_inferer,
    default_inferer,
    reconstruct_many,
    timed_network,
    uncertainty_from_samples,
)
from bundle.physics import PRESETS, SinogramProjector, forward_model_from_arrays, preset

from .task import InferTask, RequestKey, companion_path, to_device_network

__all__ = ["PETDDSInferTask", "cv_path", "reconstruct_petdds_file"]


def _check_preset(name: object) -> str:
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"scanner_preset must be one of {list(PRESETS)}, got {name!r}")
    return name


def _sinogram_like(value: object, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a .npy file of shape {shape} or a number >= 0, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0 or a .npy file of shape {shape}, got {value!r}")
        return torch.full(shape, float(value), dtype=torch.float32)
    array = load_sinogram(Path(str(value)), expected_shape=shape).to(torch.float32)
    if not bool(torch.isfinite(array).all()) or bool((array < 0).any()):
        raise ValueError(f"{name} {value} must be finite and >= 0 everywhere")
    return array


BACKGROUND_WARNING_RATIO = 0.5
"""A background whose mean is at least this fraction of the mean counts logs a warning (module docstring)."""


def _warn_large_background(background: torch.Tensor, counts: torch.Tensor, given: object) -> None:
    mean_background, mean_counts = float(background.mean()), float(counts.mean())
    if mean_background >= BACKGROUND_WARNING_RATIO * mean_counts:
        logging.getLogger(__name__).warning(
            "background %s: its mean %.4g counts per bin is %.2f x the mean measured counts %.4g, so it explains "
            "most of the data and the image comes out near zero; for a dataset sinogram use --sample DIR "
            "--realisation k (or the sample's background_full.npy scaled by its count fraction)",
            given, mean_background, mean_background / max(mean_counts, 1e-30), mean_counts)


def cv_path(output: str | Path) -> Path:
    """``<stem>_cv.nii.gz`` next to ``output`` (``x.nii.gz`` or ``x.nii`` -> ``x_cv.nii.gz``): the CV of N > 1
    samples."""
    return companion_path(output, "cv")


def _samples(inferer: PETDDSInferer, counts: torch.Tensor, network: Network, *, models: Any, seed: int,
             samples: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(image, CV): the one sample of ``seed``, or the mean and CV of ``samples`` seeds seed … seed + N − 1."""
    if samples == 1:
        return inferer(counts, network, models=models, generator=torch.Generator().manual_seed(seed)), None
    stacked = reconstruct_many(inferer, counts, network, models=models, seeds=[seed + k for k in range(samples)])
    return uncertainty_from_samples(stacked)


class PETDDSInferTask(InferTask):
    """PET-DDS-δ reconstruction as a MONAI Label-style task (module docstring for the request).

    Args (keyword-only): those of :class:`~bundle.app.task.InferTask` plus
        scanner_preset: default scanner preset (``bundle.physics.PRESETS``) of the sinograms.
        fwhm_mm: default image-space resolution FWHM of the forward model (0 = none).
        samples: default number N >= 1 of samples (module docstring).
    """

    method = "petdds"
    request_keys: Sequence[RequestKey] = (
        RequestKey("image", expected="a .npy sinogram of counts (planes, views, radial) (or 'sample')", path=True),
        RequestKey("normalisation", expected="a .npy of the sinogram's shape (n ⊙ a ⊙ calibration), default ones",
                   path=True),
        RequestKey("background", expected="a .npy of the sinogram's shape or a number >= 0 (randoms + scatter)"),
        RequestKey("sample", expected="a petdds dataset sample folder <dataset>/samples/<id>/ (instead of image, "
                                      "normalisation, background)", path=True),
        RequestKey("realisation", expected="with sample: k >= 0 (sinogram_low_k.npy, default 0) or 'full'"),
        RequestKey("scanner_preset", expected=f"one of {list(PRESETS)}"),
        RequestKey("fwhm_mm", expected="a number >= 0 (resolution FWHM in mm)"),
        RequestKey("samples", expected="an int >= 1: sampler runs; > 1 writes their mean and <stem>_cv.nii.gz"),
    )

    def __init__(self, *, scanner_preset: str = "small_3d", fwhm_mm: float = 4.5, samples: int = 1,
                 **kwargs: Any) -> None:
        from bundle.inferers.petdds import PETDDSInferer

        super().__init__(**kwargs)
        if not isinstance(self.inferer, PETDDSInferer):
            raise TypeError(f"inferer must be a PETDDSInferer, got {type(self.inferer).__name__}")
        self.scanner_preset = _check_preset(scanner_preset)
        self.fwhm_mm = check_nonnegative(fwhm_mm, "fwhm_mm")
        self.samples = check_int(samples, "samples", minimum=1)

    def validate_request(self, request: object) -> dict:
        """The base checks, then either ``sample`` (alone, with ``realisation``) or ``image`` + ``background``; a
        ``sample`` request gets ``image`` = the dataset sinogram it names."""
        data = super().validate_request(request)
        if "sample" not in data:
            for key in ("image", "background"):
                if key not in data:
                    expected = {k.name: k.expected for k in self.request_keys}[key]
                    raise ValueError(f"request[{key!r}] is required for method 'petdds' (or give request['sample'], "
                                     f"a dataset sample folder): {expected}")
            if "realisation" in data:
                raise ValueError("request['realisation'] applies with request['sample'] only (--sample DIR)")
            return data
        given = [k for k in ("image", "normalisation", "background", "scanner_preset", "fwhm_mm") if k in data]
        if given:
            raise ValueError(f"request['sample'] takes the sinogram, normalisation, background, scanner and resolution "
                             f"from the dataset; drop {given} (--{' --'.join(k.replace('_', '-') for k in given)})")
        dataset, entry = PETDDSDataset.open_sample(data["sample"])
        realisation = data.get("realisation", 0)
        if isinstance(realisation, str) and realisation.isdigit():
            realisation = int(realisation)
        if realisation != "full" and (isinstance(realisation, bool) or not isinstance(realisation, int)
                                      or not 0 <= realisation < len(entry["sinogram_low"])):
            raise ValueError(f"realisation must be 'full' or an int in [0, {len(entry['sinogram_low'])}) (the "
                             f"low-count sinograms of sample {entry.get('id')}), got {realisation!r}")
        sinogram, fraction = dataset.sinogram_and_fraction(entry, None if realisation == "full" else realisation)
        data.update(image=str(dataset.root / sinogram), realisation=realisation, count_fraction=fraction)
        return data

    def pre_transforms(self, data: Mapping[str, Any]) -> Sequence:
        return (self._load_sample,) if "sample" in data else (self._load, self._forward_model)

    def _load_sample(self, data: dict) -> dict:
        d = dict(data)
        dataset, entry = PETDDSDataset.open_sample(d["sample"])
        d["geometry"] = dataset.scanner
        d["counts"] = dataset.load_array(d["image"], "sinogram")
        d["model"] = dataset.forward_model(entry, d["count_fraction"])
        return d

    def _load(self, data: dict) -> dict:
        d = dict(data)
        geometry = preset(_check_preset(d.get("scanner_preset", self.scanner_preset)))
        shape = geometry.layout.shape
        d["geometry"] = geometry
        d["counts"] = load_sinogram(Path(d["image"]), expected_shape=shape).to(torch.float32)
        if not bool(torch.isfinite(d["counts"]).all()) or bool((d["counts"] < 0).any()):
            raise ValueError(f"image {d['image']} must hold finite counts >= 0")
        d["normalisation_factors"] = _sinogram_like(d.get("normalisation", 1.0), "normalisation", shape)
        if isinstance(d["background"], str) and not Path(d["background"]).exists():
            try:
                d["background"] = float(d["background"])
            except ValueError:
                raise FileNotFoundError(f"background {d['background']!r} is neither a number nor a file") from None
        d["background_counts"] = _sinogram_like(d["background"], "background", shape)
        _warn_large_background(d["background_counts"], d["counts"], d["background"])
        return d

    def _forward_model(self, data: dict) -> dict:
        d = dict(data)
        geometry = d["geometry"]
        d["model"] = forward_model_from_arrays(
            projector=SinogramProjector(layout=geometry.layout, image=geometry.image),
            fwhm_mm=check_nonnegative(d.get("fwhm_mm", self.fwhm_mm), "fwhm_mm"),
            normalisation=d["normalisation_factors"], background=d["background_counts"])
        return d

    def run_inferer(self, data: dict) -> dict:
        d = dict(data)
        network = to_device_network(self.network, self.device)
        d["samples"] = check_int(d.get("samples", self.samples), "request['samples']", minimum=1)
        image, cv = _samples(self.inferer, d["counts"], network, models=d["model"], seed=d["seed"],
                             samples=d["samples"])
        d["pred"], d["cv"] = image.to("cpu"), None if cv is None else cv.to("cpu")
        return d

    def write(self, data: dict, path: Path) -> dict:
        image = data["pred"].to(torch.float32)
        geometry = data["geometry"].image
        save_image(path, image, geometry)
        entries = {"shape_zyx": list(image.shape), "voxel_size_mm": list(geometry.voxel_size_mm),
                   **({"sample": data["sample"], "realisation": data["realisation"],
                       "count_fraction": data["count_fraction"]} if "sample" in data else {}),
                   "scanner_preset": data["geometry"].name, "units": "activity units of the forward model",
                   "max": float(np.max(image.numpy())), "samples": data["samples"],
                   "sample_seeds": [data["seed"] + k for k in range(data["samples"])]}
        if data.get("cv") is not None:
            cv_file = cv_path(path)
            save_image(cv_file, data["cv"].to(torch.float32), geometry)
            entries.update(image_is="mean of the samples", cv_file=str(cv_file),
                           cv="std / mean over the samples (population std; 0 where the mean is 0)")
        return entries


def reconstruct_petdds_file(
    dataset_dir: str | Path,
    *,
    case: Mapping | str,
    sinogram: str | Path,
    network: Network,
    output_file: str | Path,
    inferer: PETDDSInferer | None = None,
    count_fraction: float | None = None,
    samples: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Path:
    """PET-DDS-δ of one sinogram file with the forward model of dataset sample ``case``; writes a NIfTI.

    ``samples`` N > 1: ``output_file`` is the mean of N samples (seeds ``seed + k``) and :func:`cv_path` of it their
    CV (module docstring); N = 1 (default): the one sample of ``seed``.  Returns ``output_file``.

    ``count_fraction`` (f of :mod:`bundle.data.petdds`) scales c·n⊙a and the background; ``None`` = taken from the
    file: 1 for the sample's full-count sinogram, ``low_count_fraction`` for one of its low-count realisations
    (a ``ValueError`` for any other file).  A sinogram whose shape differs from the layout raises ``ValueError``.
    """
    timed = timed_network(network, device)
    if timed is None:
        raise ValueError("reconstruct_petdds_file needs a network")
    inferer = check_inferer(inferer)
    seed = check_int(seed, "seed", minimum=0)
    samples = check_int(samples, "samples", minimum=1)
    ds = PETDDSDataset.open(dataset_dir)
    entry = ds.find_entry(case)
    path = Path(sinogram)
    if count_fraction is None:
        resolved = path.resolve()
        if resolved == (ds.root / entry["sinogram_high"]).resolve():
            count_fraction = 1.0
        elif resolved in {(ds.root / p).resolve() for p in entry["sinogram_low"]}:
            count_fraction = float(entry["low_count_fraction"])
        else:
            raise ValueError(f"{path} is not a sinogram of sample {entry.get('id')}; pass count_fraction")
    fraction = check_nonnegative(count_fraction, "count_fraction")
    if fraction == 0:
        raise ValueError("count_fraction must be > 0")
    counts = ds.load_array(str(path.resolve()), "sinogram")
    model = ds.forward_model(entry, fraction)
    sampler = inferer or default_inferer()
    image, cv = _samples(sampler, counts, timed, models=model, seed=seed, samples=samples)
    output = Path(output_file)
    save_image(output, image, ds.image)
    if cv is not None:
        save_image(cv_path(output), cv, ds.image)
    return output
