"""LegoPET evaluation workflows on a ``legopet`` dataset (``python -m bundle.data build legopet``): the method table
(OSEM, DeepPET, cGAN, Pix2Pix, cDPM, LegoPET; the GAN rows optional), the training-progress curve (cDPM vs LegoPET,
the paper's Fig. 3 ablation), the DDIM-vs-DDPM sampling cost and the guidance-weight (λ2) sweep.

Conventions
-----------

- Samples (:func:`bundle.data.legopet.load_samples`): the entries of one datalist split (default ``test``, subjects
  held out of training).  The network input is the measured sinogram s ``(1, views, radial)`` in network units
  (s / k_s, k_s = :func:`~bundle.transforms.legopet.manifest_counts_per_bin`) zero-padded to ``pad_size × pad_size``
  (:class:`~bundle.transforms.legopet.PadToSquared`), exactly as in training.
- Predictions come back in network units on the unpadded ``(h, w)`` image and are converted to activity units with
  the training scaling x = x' · k_x, k_x = ``image_scale / c`` (c = the entry's ``count_scale``;
  :class:`~bundle.transforms.scaling.ToNetworkUnitsd`).  Nothing is clipped (diffusion samples may hold small
  negative values; they count as they are).
- Reference r: the entry's ``reference`` (OSEM of the high-count sinogram); OSEM row: the entry's ``osem`` (OSEM of
  the measured sinogram, made by the dataset builder with the manifest's subsets × iterations).
- PSNR = 10 log10(L² / MSE) and SSIM (Gaussian σ = 1.5, 11 taps, k1 = 0.01, k2 = 0.03): the project's default
  convention (:func:`bundle.metrics.image_metrics`, ``docs/metrics.md``) with L = max r per slice
  ("reference-normalised"), over the whole unpadded image (no mask).  Table values: mean ± sample std (ddof 1)
  over the slices.
- GAN rows (:func:`gan_predictors`): the generator of the cGAN / Pix2Pix trainings (``configs/legopet/gan.json``)
  with the ``network`` weights of its checkpoint, one forward pass per slice, like DeepPET.
- Diffusion rows: one ``torch.Generator`` seeded with ``seed`` per method on the inputs' device, so cDPM and LegoPET
  start from the same x_T for every slice.  Timings: wall-clock seconds per slice (batch time / batch size;
  ``time.perf_counter``, CUDA synchronised).
- NFE (network function evaluations) per image: counted by wrapping the denoiser (:class:`CountingNetwork`), i.e.
  (images passed through the network) / (images sampled); with guidance λ2 > 0 every step costs 2.

Outputs of :func:`evaluate_legopet` in ``output_dir``: ``metrics.csv`` (per slice and method), ``summary.json``
(mean ± std, conventions), ``table.md`` (first column ``Method``), ``figure.png`` (paper Fig. 2 style: input
sinogram, reference, each method, squared-error maps).  Importing this module runs nothing.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle.checkpoint import list_checkpoints, load_weights
from bundle.data.legopet import LegoPETSample, load_samples
from bundle.evaluation import mean_std, metric_curves, metrics_table, slice_figure, write_csv, write_json
from bundle.inferers.legopet import LegoPETInferer
from bundle.metrics import image_metrics
from bundle.transforms.legopet import (
    crop_box,
)

from .._checks import check_int

__all__ = [
    "GAN_METHODS",
    "METHODS",
    "METRICS",
    "CountingNetwork",
    "DiffusionPredictor",
    "RegressionPredictor",
    "evaluate_legopet",
    "gan_predictors",
    "guidance_sweep",
    "sampling_cost",
    "training_progress",
]

METHODS: tuple[str, ...] = ("OSEM", "DeepPET", "cGAN", "Pix2Pix", "cDPM", "LegoPET")
"""Row names, in table order (the paper's Table 1), exactly as they appear in tables, CSV and JSON."""
GAN_METHODS: tuple[str, ...] = ("cGAN", "Pix2Pix")
"""The optional GAN rows (:func:`gan_predictors`)."""
METRICS: tuple[str, ...] = ("PSNR", "SSIM")
"""Metric columns (PSNR in dB, SSIM as a fraction)."""

Predictor = Callable[[torch.Tensor], torch.Tensor]
"""``(B, 1, S, S)`` padded sinograms in network units → ``(B, 1, h, w)`` unpadded images in network units."""




# ---------------------------------------------------------------------------------------------------- predictors
class CountingNetwork(torch.nn.Module):
    """Wraps a network and counts its calls and the images passed through it (for NFE)."""

    def __init__(self, network: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network).__name__}")
        self.network = network
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        self.images += int(x.shape[0])
        return self.network(x, *args, **kwargs)


class RegressionPredictor:
    """DeepPET / PnPNet: ``network(s)`` cropped to the unpadded image ``crop = (top, left, h, w)``."""

    def __init__(self, *, network: Callable[[torch.Tensor], torch.Tensor], crop: Sequence[int]) -> None:
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network).__name__}")
        self.network = network
        self.crop = tuple(int(c) for c in crop)

    @torch.no_grad()
    def __call__(self, sinogram: torch.Tensor) -> torch.Tensor:
        return crop_box(self.network(sinogram), self.crop)


class DiffusionPredictor:
    """cDPM / LegoPET: ``inferer(s, network, generator=…)`` with one generator per predictor (seeded once, on the
    inputs' device at the first call), so consecutive batches continue one random stream."""

    def __init__(self, *, network: Callable[..., torch.Tensor], inferer: LegoPETInferer, seed: int = 0) -> None:
        if not isinstance(inferer, LegoPETInferer):
            raise TypeError(f"inferer must be a LegoPETInferer, got {type(inferer).__name__}")
        self.network = CountingNetwork(network)
        self.inferer = inferer
        self.seed = check_int(seed, "seed", minimum=0)
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def __call__(self, sinogram: torch.Tensor) -> torch.Tensor:
        if self.generator is None or self.generator.device.type != sinogram.device.type:
            self.generator = torch.Generator(device=sinogram.device).manual_seed(self.seed)
        return self.inferer(sinogram, self.network, generator=self.generator)


def gan_predictors(
    rows: Sequence[str],
    *,
    generator: torch.nn.Module | None,
    checkpoints: Mapping[str, str | Path],
    crop: Sequence[int],
    device: torch.device | str | None = None,
) -> dict[str, RegressionPredictor]:
    """The GAN rows of the table: ``{row: RegressionPredictor}`` for every name in ``rows``, each a copy of
    ``generator`` with the ``network`` weights of ``checkpoints[row]`` (no EMA), in eval mode on ``device``.

    Args:
        rows: names among :data:`GAN_METHODS` (``[]`` = no GAN rows: returns ``{}`` and needs nothing else).
        generator: the generator architecture (``configs/legopet/gan.json``'s ``generator_def``); ``None`` is
            allowed only without rows.
        checkpoints: ``{row: path}``, e.g. ``<output_dir>/cgan/checkpoints/cgan_final.pt``.
        crop: ``(top, left, h, w)`` of the unpadded image, as :class:`RegressionPredictor`.

    Raises:
        TypeError: ``rows`` is no sequence of names, or rows are requested without a generator module.
        ValueError: an unknown or repeated row, or a row without an entry in ``checkpoints``.
        FileNotFoundError: a requested row's checkpoint does not exist (the message names the file and the option
            that sets it).
    """
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise TypeError(f"gan_rows must be a list of names among {list(GAN_METHODS)}, got {rows!r}")
    rows = list(rows)
    unknown = [r for r in rows if r not in GAN_METHODS]
    if unknown or len(set(rows)) != len(rows):
        raise ValueError(f"gan_rows must name distinct rows among {list(GAN_METHODS)}, got {rows!r}")
    if not rows:
        return {}
    if not isinstance(generator, torch.nn.Module):
        raise TypeError(f"gan_rows {rows} need the generator network (generator_def: layer configs/legopet/gan.json "
                        f"after configs/legopet/evaluate.json), got {type(generator).__name__}")
    if not isinstance(checkpoints, Mapping) or any(r not in checkpoints for r in rows):
        raise ValueError(f"checkpoints must map every requested row {rows} to a checkpoint path, got {checkpoints!r}")
    predictors = {}
    for row in rows:
        path = Path(checkpoints[row])
        if not path.is_file():
            raise FileNotFoundError(
                f"gan_rows requests the {row} row, but its checkpoint {path} does not exist: train it "
                f"(configs/legopet/gan.json + configs/legopet/{row.lower()}.json) or set --{row.lower()}_ckpt"
            )
        network = load_weights(copy.deepcopy(generator), path)
        predictors[row] = RegressionPredictor(network=network if device is None else network.to(device), crop=crop)
    return predictors


# ---------------------------------------------------------------------------------------------------- core loop
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _predict(
    predictor: Predictor, samples: Sequence[LegoPETSample], *, batch_size: int, device: torch.device
) -> tuple[list[torch.Tensor], list[float]]:
    """Activity-unit predictions ``(h, w)`` (CPU) and seconds per slice."""
    images, seconds = [], []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        s = torch.stack([b.sinogram for b in batch]).to(device)
        _sync(device)
        t0 = time.perf_counter()
        out = predictor(s)
        _sync(device)
        elapsed = (time.perf_counter() - t0) / len(batch)
        h, w = batch[0].reference.shape
        if out.shape != (len(batch), 1, h, w):
            raise ValueError(f"predictor must return (B, 1, {h}, {w}) images, got {tuple(out.shape)}")
        for b, image in zip(batch, out[:, 0].float().cpu(), strict=True):
            images.append(image * b.image_divisor)
            seconds.append(elapsed)
    return images, seconds


def _check_predictors(predictors: object) -> dict[str, Predictor]:
    if not isinstance(predictors, Mapping):
        raise TypeError(f"predictors must be a mapping {{method: predictor}}, got {type(predictors).__name__}")
    for name, p in predictors.items():
        if name not in METHODS or name == "OSEM":
            raise ValueError(f"predictors keys must be among {list(METHODS[1:])}, got {name!r}")
        if not callable(p):
            raise TypeError(f"predictors[{name!r}] must be callable, got {type(p).__name__}")
    return dict(predictors)


# ---------------------------------------------------------------------------------------------------- workflows
def evaluate_legopet(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    predictors: Mapping[str, Predictor],
    include_osem: bool = True,
    split: str = "test",
    pad_size: int = 256,
    limit: int | None = None,
    batch_size: int = 8,
    figure_index: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """The method table: OSEM (from the dataset) and each predictor on the ``split`` slices (module docstring).

    Args:
        dataset_dir: legopet dataset folder.
        output_dir: where ``metrics.csv``, ``summary.json``, ``table.md`` and ``figure.png`` go (created).
        predictors: ``{"DeepPET"|"cGAN"|"Pix2Pix"|"cDPM"|"LegoPET": predictor}`` (:class:`RegressionPredictor`,
            :class:`DiffusionPredictor` or any callable with the :data:`Predictor` contract); rows follow
            :data:`METHODS` order.
        include_osem: add the OSEM row (needs ``osem`` in every entry).
        split, pad_size, limit: as :func:`bundle.data.legopet.load_samples`.
        batch_size: slices per predictor call.
        figure_index: which slice the figure shows.
        device: where predictors run (``None``: CPU).

    Returns:
        The summary written to ``summary.json``: ``{"methods": {name: {metric: {"mean", "std"}, "time_s": …}}, …}``.
    """
    predictors = _check_predictors(predictors)
    if not include_osem and not predictors:
        raise ValueError("evaluate_legopet needs include_osem=True or at least one predictor")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    device = torch.device("cpu" if device is None else device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(dataset_dir, split=split, pad_size=pad_size, limit=limit)
    figure_index = check_int(figure_index, "figure_index", minimum=0)
    if figure_index >= len(samples):
        raise ValueError(f"figure_index must be < the number of slices ({len(samples)}), got {figure_index}")

    predictions: dict[str, list[torch.Tensor]] = {}
    seconds: dict[str, list[float]] = {}
    nfe: dict[str, float] = {}
    if include_osem:
        missing = [s.id for s in samples if s.osem is None]
        if missing:
            raise ValueError(f"include_osem=True needs an 'osem' image in every entry; missing for {missing}")
        predictions["OSEM"] = [s.osem for s in samples]  # type: ignore[misc]
    for name in METHODS:
        if name in predictors:
            predictions[name], seconds[name] = _predict(predictors[name], samples, batch_size=batch_size, device=device)
            counter = getattr(predictors[name], "network", None)
            if isinstance(counter, CountingNetwork):
                nfe[name] = counter.images / len(samples)

    rows, summary_rows, methods = [], {}, {}
    for name, images in predictions.items():
        per_slice = [image_metrics(img, s.reference) for img, s in zip(images, samples, strict=True)]
        for i, (s, sc) in enumerate(zip(samples, per_slice, strict=True)):
            rows.append({"id": s.id, "method": name, **{k: f"{sc[k]:.6f}" for k in METRICS},
                         "time_s": f"{seconds[name][i]:.6f}" if name in seconds else ""})
        summary_rows[name] = {k: mean_std([sc[k] for sc in per_slice]) for k in METRICS}
        methods[name] = {k: {"mean": m, "std": sd} for k, (m, sd) in summary_rows[name].items()}
        if name in seconds:
            methods[name]["time_s_per_slice"] = sum(seconds[name]) / len(seconds[name])
        if name in nfe:
            methods[name]["nfe_per_slice"] = nfe[name]

    write_csv(out / "metrics.csv", ("id", "method", *METRICS, "time_s"), rows)
    table = metrics_table(summary_rows, METRICS, digits={"PSNR": 2, "SSIM": 3}, first_column="Method")
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    summary = {
        "split": split,
        "slices": len(samples),
        "conventions": "PSNR/SSIM with L = max(reference) per slice on the unpadded image, no mask, no clipping; "
        "mean ± sample std over slices (bundle.workflows.legopet)",
        "methods": methods,
        "table": table,
    }
    write_json(out / "summary.json", summary)
    sample, images = samples[figure_index], {n: p[figure_index] for n, p in predictions.items()}
    slice_figure(sample.counts, sample.reference, images, out / "figure.png", name=f"slice {sample.id}",
                 scores={n: image_metrics(image, sample.reference) for n, image in images.items()})
    return summary


def training_progress(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    runs: Mapping[str, tuple[torch.nn.Module, LegoPETInferer, str | Path]],
    iterations_per_epoch: int,
    use_ema: bool = True,
    split: str = "test",
    pad_size: int = 256,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """PSNR/SSIM versus training progress (paper Fig. 3): every interval checkpoint of every run is sampled on the
    same slices with the same seed.

    Args:
        runs: ``{name: (network, inferer, ckpt_dir)}``; the network is copied and loaded with each
            ``checkpoint_epoch=N.pt`` of ``ckpt_dir`` (:func:`list_checkpoints`, EMA weights when ``use_ema``).
        iterations_per_epoch: optimiser steps per epoch (x axis = epoch × this).
        Others: as :func:`evaluate_legopet`.

    Returns:
        rows ``{"method", "epoch", "iteration", "PSNR", "SSIM", "PSNR_std", "SSIM_std"}``, also written to
        ``progress.csv`` / ``progress.json`` with a two-panel ``progress.png``.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {name: (network, inferer, ckpt_dir)}")
    iterations_per_epoch = check_int(iterations_per_epoch, "iterations_per_epoch", minimum=1)
    device = torch.device("cpu" if device is None else device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(dataset_dir, split=split, pad_size=pad_size, limit=limit)
    rows: list[dict[str, Any]] = []
    for name, (network, inferer, ckpt_dir) in runs.items():
        checkpoints = list_checkpoints(ckpt_dir)
        if not checkpoints:
            raise ValueError(f"runs[{name!r}]: no checkpoint_epoch=N.pt in {ckpt_dir} (set ckpt_interval/ckpt_keep)")
        for epoch, path in checkpoints:
            net = load_weights(copy.deepcopy(network), path, use_ema=use_ema).to(device)
            predictor = DiffusionPredictor(network=net, inferer=inferer, seed=seed)
            images, _ = _predict(predictor, samples, batch_size=batch_size, device=device)
            scores = [image_metrics(img, s.reference) for img, s in zip(images, samples, strict=True)]
            row: dict[str, Any] = {"method": name, "epoch": epoch, "iteration": epoch * iterations_per_epoch}
            for k in METRICS:
                row[k], row[f"{k}_std"] = mean_std([sc[k] for sc in scores])
            rows.append(row)
    write_csv(out / "progress.csv", list(rows[0]), rows)
    write_json(out / "progress.json", {"split": split, "slices": len(samples), "use_ema": use_ema, "rows": rows})
    metric_curves(rows, out / "progress.png", x_key="iteration", x_label="training iterations")
    return rows


def sampling_cost(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    network: torch.nn.Module,
    inferers: Sequence[LegoPETInferer],
    split: str = "test",
    pad_size: int = 256,
    limit: int | None = 2,
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """Wall time, NFE and PSNR/SSIM of one trained denoiser under several samplers (e.g. DDIM k steps vs DDPM T).

    Args:
        network: the trained denoiser (weights loaded).
        inferers: :class:`LegoPETInferer` s, e.g. DDIM with 10 and 50 steps and DDPM with all T steps; each row is
            labelled by its scheduler and step count (``"DDIM 10"``, ``"DDPM 1000"``).
        limit: slices sampled (default 2: DDPM with T = 1000 is the expensive row).
        Others: as :func:`evaluate_legopet`.

    Returns:
        rows ``{"sampler", "steps", "nfe_per_slice", "seconds_per_slice", "PSNR", "SSIM"}`` (mean over slices), also
        in ``sampling_cost.csv`` / ``sampling_cost.json`` / ``sampling_cost.md``.
    """
    if isinstance(inferers, Mapping) or not isinstance(inferers, Sequence) or not inferers:
        raise ValueError(f"inferers must be a non-empty sequence of LegoPETInferer, got {inferers!r}")
    device = torch.device("cpu" if device is None else device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(dataset_dir, split=split, pad_size=pad_size, limit=limit)
    rows = []
    for inferer in inferers:
        predictor = DiffusionPredictor(network=network, inferer=inferer, seed=seed)
        images, seconds = _predict(predictor, samples, batch_size=batch_size, device=device)
        scores = [image_metrics(img, s.reference) for img, s in zip(images, samples, strict=True)]
        steps = len(inferer.scheduler.timesteps)
        rows.append({
            "sampler": f"{type(inferer.scheduler).__name__.removesuffix('Scheduler')} {steps}",
            "steps": steps,
            "nfe_per_slice": predictor.network.images / len(samples),
            "seconds_per_slice": sum(seconds) / len(seconds),
            **{k: mean_std([sc[k] for sc in scores])[0] for k in METRICS},
        })
    write_csv(out / "sampling_cost.csv", list(rows[0]), rows)
    write_json(out / "sampling_cost.json", {"split": split, "slices": len(samples), "device": str(device),
                                             "rows": rows})
    lines = ["| Sampler | steps | NFE / slice | s / slice | PSNR | SSIM |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['nfe_per_slice']:.0f} | {r['seconds_per_slice']:.3f} | "
              f"{r['PSNR']:.2f} | {r['SSIM']:.3f} |" for r in rows]
    (out / "sampling_cost.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def guidance_sweep(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    runs: Mapping[str, tuple[torch.nn.Module, LegoPETInferer]],
    guidance_scales: Sequence[float],
    split: str = "validation",
    pad_size: int = 256,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """PSNR/SSIM of trained diffusion models for several guidance weights λ2 (classifier-free guidance,
    ε̃ = (1 + λ2) ε(x_t, t, C) − λ2 ε(x_t, t, ∅)), by default on the validation split where λ2 is chosen.

    Every (method, λ2) pair samples the same slices from the same x_T (one generator seeded with ``seed`` per pair);
    only λ2 differs from the given inferer (a shallow copy with ``guidance_scale`` replaced).

    Args:
        runs: ``{name: (network, inferer)}``: a trained denoiser (weights loaded) and its sampler.
        guidance_scales: the λ2 values (each finite and ≥ 0; 0 = no guidance, one network pass per step).
        split: datalist split (default ``"validation"``).
        Others: as :func:`evaluate_legopet`.

    Returns:
        rows ``{"method", "guidance_scale", "nfe_per_slice", "seconds_per_slice", "PSNR", "PSNR_std", "SSIM",
        "SSIM_std"}`` (mean ± sample std over the slices), also in ``guidance_sweep.csv`` / ``.json`` (with the λ2 of
        the highest mean PSNR per method under ``"best_by_psnr"``) / ``.md`` and a two-panel ``guidance_sweep.png``.

    Raises:
        ValueError: ``runs`` is empty or ``guidance_scales`` is empty or holds a negative / non-finite value.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {name: (network, inferer)}")
    if isinstance(guidance_scales, str | bytes) or not isinstance(guidance_scales, Sequence) or not guidance_scales:
        raise ValueError(f"guidance_scales must be a non-empty sequence of numbers >= 0, got {guidance_scales!r}")
    for name, run in runs.items():
        if not isinstance(run, Sequence) or len(run) != 2 or not isinstance(run[1], LegoPETInferer):
            raise ValueError(f"runs[{name!r}] must be (network, LegoPETInferer), got {run!r}")
    inferers = {
        name: [inferer.with_guidance(g, name=f"guidance_scales[{i}] (λ2)") for i, g in enumerate(guidance_scales)]
        for name, (_, inferer) in runs.items()
    }
    device = torch.device("cpu" if device is None else device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(dataset_dir, split=split, pad_size=pad_size, limit=limit)
    rows: list[dict[str, Any]] = []
    for name, (network, _) in runs.items():
        for inferer in inferers[name]:
            predictor = DiffusionPredictor(network=network, inferer=inferer, seed=seed)
            images, seconds = _predict(predictor, samples, batch_size=batch_size, device=device)
            scores = [image_metrics(img, s.reference) for img, s in zip(images, samples, strict=True)]
            row: dict[str, Any] = {
                "method": name,
                "guidance_scale": inferer.guidance_scale,
                "nfe_per_slice": predictor.network.images / len(samples),
                "seconds_per_slice": sum(seconds) / len(seconds),
            }
            for k in METRICS:
                row[k], row[f"{k}_std"] = mean_std([sc[k] for sc in scores])
            rows.append(row)
    best = {name: max((r for r in rows if r["method"] == name), key=lambda r: r["PSNR"])["guidance_scale"]
            for name in runs}
    write_csv(out / "guidance_sweep.csv", list(rows[0]), rows)
    write_json(out / "guidance_sweep.json", {"split": split, "slices": len(samples), "seed": seed,
                                              "best_by_psnr": best, "rows": rows})
    lines = ["| Method | λ2 | NFE / slice | PSNR | SSIM |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['guidance_scale']:g} | {r['nfe_per_slice']:.0f} | {r['PSNR']:.2f} ± "
              f"{r['PSNR_std']:.2f} | {r['SSIM']:.3f} ± {r['SSIM_std']:.3f} |" for r in rows]
    (out / "guidance_sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    metric_curves(rows, out / "guidance_sweep.png", x_key="guidance_scale", x_label="guidance weight λ2")
    return rows
