"""LegoPET evaluation workflows on a ``legopet`` dataset (``python -m bundle.data build legopet``): the method table
(OSEM, DeepPET, cGAN, Pix2Pix, cDPM, LegoPET; the GAN rows optional), the training-progress curve (cDPM vs LegoPET,
the paper's Fig. 3 ablation), the DDIM-vs-DDPM sampling cost and the guidance-weight (λ2) sweep.

Conventions
-----------

- Samples: the entries of one datalist split (default ``test``, subjects held out of training).  The network input
  is the measured sinogram s ``(1, views, radial)`` in network units (s / k_s, k_s = :func:`manifest_counts_per_bin`)
  zero-padded to ``pad_size × pad_size`` (:class:`~bundle.transforms.legopet.PadToSquared`), exactly as in training.
- Predictions come back in network units on the unpadded ``(h, w)`` image and are converted to activity units with
  the training scaling x = x' · k_x, k_x = ``image_scale / c`` (c = the entry's ``count_scale``;
  :class:`~bundle.transforms.legopet.ImageToNetworkUnitsd`).  Nothing is clipped (diffusion samples may hold small
  negative values; they count as they are).
- Reference r: the entry's ``reference`` (OSEM of the high-count sinogram); OSEM row: the entry's ``osem`` (OSEM of
  the measured sinogram, made by the dataset builder with the manifest's subsets × iterations).
- PSNR = 10 log10(L² / MSE) and SSIM (Gaussian σ = 1.5, 11 taps, k1 = 0.01, k2 = 0.03) from :mod:`bundle.metrics`
  with L = max r per slice (``DataRange.REFERENCE_MAX``, "reference-normalised"), over the whole unpadded image
  (no mask).  Table values: mean ± sample std (ddof 1) over the slices.
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
import csv
import json
import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bundle.checkpoint import list_checkpoints, load_weights
from bundle.inferers.legopet import LegoPETInferer
from bundle.keys import Keys
from bundle.metrics import DataRange, metrics_table, psnr, ssim, summarise
from bundle.transforms.legopet import (
    CountsToNetworkUnitsd,
    LoadImageZYXd,
    LoadSinogramd,
    PadToSquared,
    crop_box,
    manifest_counts_per_bin,
    padding_offsets,
    reference_max,
)

from .._checks import check_int

__all__ = [
    "GAN_METHODS",
    "METHODS",
    "METRICS",
    "CountingNetwork",
    "DiffusionPredictor",
    "LegoPETSample",
    "RegressionPredictor",
    "default_crop",
    "evaluate_legopet",
    "gan_predictors",
    "guidance_sweep",
    "load_samples",
    "markdown_table",
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


# ---------------------------------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class LegoPETSample:
    """One evaluation slice."""

    id: str
    sinogram: torch.Tensor
    """Network input: ``(1, S, S)`` measured sinogram / k_s, zero-padded to the square grid."""
    counts: torch.Tensor
    """Measured counts ``(views, radial)`` (for the figure)."""
    reference: torch.Tensor
    """High-count OSEM reference ``(h, w)``, activity units."""
    osem: torch.Tensor | None
    """OSEM of the measured sinogram ``(h, w)``, activity units (``None`` when the entry has none)."""
    image_divisor: float
    """k_x: activity = network units · k_x."""


def _datalist(dataset_dir: Path, split: str) -> list[dict]:
    path = dataset_dir / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; build the dataset first: "
            f"python -m bundle.data build legopet --output {dataset_dir}"
        )
    entries = json.loads(path.read_text(encoding="utf-8")).get(split)
    if not entries:
        raise ValueError(f"split must name a non-empty split of {path}, got {split!r}")
    return entries


def load_samples(
    dataset_dir: str | Path,
    *,
    split: str = "test",
    pad_size: int = 256,
    limit: int | None = None,
    count_scale_key: str | None = Keys.COUNT_SCALE,
) -> list[LegoPETSample]:
    """The slices of ``split`` with network inputs prepared as in training (module docstring).

    Args:
        dataset_dir: a legopet dataset folder (``datalist.json``, ``manifest.json``).
        split: datalist split.
        pad_size: side of the square grid S (≥ every sinogram/image side; 256 as the paper).
        limit: first ``limit`` entries only (``None`` = all).
        count_scale_key: entry key of c in k_x = image_scale / c (``None``: k_x = image_scale).
    """
    root = Path(dataset_dir)
    pad_size = check_int(pad_size, "pad_size", minimum=1)
    entries = _datalist(root, split)
    if limit is not None:
        entries = entries[: check_int(limit, "limit", minimum=1)]
    image_scale = reference_max(root, count_scale_key=count_scale_key)
    load = LoadSinogramd(keys=Keys.SINOGRAM)
    to_units = CountsToNetworkUnitsd(keys=Keys.SINOGRAM, scale=manifest_counts_per_bin(root))
    pad = PadToSquared(keys=Keys.SINOGRAM, size=pad_size)
    images = LoadImageZYXd(keys=[Keys.REFERENCE, Keys.OSEM], allow_missing_keys=True)
    samples = []
    for index, entry in enumerate(entries):
        d = {k: (str(root / v) if k in (Keys.SINOGRAM, Keys.REFERENCE, Keys.OSEM) else v) for k, v in entry.items()}
        d = load(d)
        counts = d[Keys.SINOGRAM][0].clone()
        d = pad(to_units(d))
        d = images(d)
        c = 1.0 if count_scale_key is None else float(entry[count_scale_key])
        osem = d.get(Keys.OSEM)
        samples.append(LegoPETSample(
            id=str(entry.get("id", index)),
            sinogram=torch.as_tensor(d[Keys.SINOGRAM]).float(),
            counts=counts,
            reference=torch.as_tensor(d[Keys.REFERENCE])[0].float(),
            osem=None if osem is None else torch.as_tensor(osem)[0].float(),
            image_divisor=image_scale / c,
        ))
    return samples


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


def _scores(image: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    return {
        "PSNR": float(psnr(image, reference, data_range=DataRange.REFERENCE_MAX, spatial_dims=2)),
        "SSIM": float(ssim(image, reference, data_range=DataRange.REFERENCE_MAX, spatial_dims=2)),
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return summarise(values, correction=1 if len(values) > 1 else 0)


def _write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _write_csv(path: Path, fields: Sequence[str], rows: Sequence[Mapping[str, object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _check_predictors(predictors: object) -> dict[str, Predictor]:
    if not isinstance(predictors, Mapping):
        raise TypeError(f"predictors must be a mapping {{method: predictor}}, got {type(predictors).__name__}")
    for name, p in predictors.items():
        if name not in METHODS or name == "OSEM":
            raise ValueError(f"predictors keys must be among {list(METHODS[1:])}, got {name!r}")
        if not callable(p):
            raise TypeError(f"predictors[{name!r}] must be callable, got {type(p).__name__}")
    return dict(predictors)


def _figure(sample: LegoPETSample, images: Mapping[str, torch.Tensor], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    ref = sample.reference
    vmax = float(ref.max())
    errors = {n: (images[n] - ref) ** 2 for n in names}
    emax = max(float(e.max()) for e in errors.values()) or 1.0
    cols = 2 + len(names)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.6), squeeze=False)
    axes[0, 0].imshow(sample.counts.numpy(), cmap="gray_r", aspect="auto")
    axes[0, 0].set_title("input sinogram", fontsize=8)
    axes[0, 1].imshow(ref.numpy(), cmap="gray_r", vmin=0, vmax=vmax)
    axes[0, 1].set_title("reference", fontsize=8)
    for j, n in enumerate(names, start=2):
        scores = _scores(images[n], ref)
        axes[0, j].imshow(images[n].numpy(), cmap="gray_r", vmin=0, vmax=vmax)
        axes[0, j].set_title(f"{n}\n{scores['PSNR']:.2f} dB / {scores['SSIM']:.3f}", fontsize=8)
        axes[1, j].imshow(errors[n].numpy(), cmap="inferno", vmin=0, vmax=emax)
        axes[1, j].set_title(f"{n} squared error", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 0].axis("off")
    axes[1, 1].axis("off")
    fig.suptitle(f"slice {sample.id} (errors on one scale, 0 … {emax:.3g})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown_table(summary: Mapping[str, Mapping[str, tuple[float, float]]]) -> str:
    """:func:`bundle.metrics.metrics_table` with the first column titled ``Method`` (PSNR 2, SSIM 3 decimals)."""
    table = metrics_table(summary, list(METRICS), digits={"PSNR": 2, "SSIM": 3})
    header, rest = table.split("\n", 1)
    return header.replace("| method |", "| Method |", 1) + "\n" + rest


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
        split, pad_size, limit: as :func:`load_samples`.
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
        per_slice = [_scores(img, s.reference) for img, s in zip(images, samples, strict=True)]
        for i, (s, sc) in enumerate(zip(samples, per_slice, strict=True)):
            rows.append({"id": s.id, "method": name, **{k: f"{sc[k]:.6f}" for k in METRICS},
                         "time_s": f"{seconds[name][i]:.6f}" if name in seconds else ""})
        summary_rows[name] = {k: _mean_std([sc[k] for sc in per_slice]) for k in METRICS}
        methods[name] = {k: {"mean": m, "std": sd} for k, (m, sd) in summary_rows[name].items()}
        if name in seconds:
            methods[name]["time_s_per_slice"] = sum(seconds[name]) / len(seconds[name])
        if name in nfe:
            methods[name]["nfe_per_slice"] = nfe[name]

    _write_csv(out / "metrics.csv", ("id", "method", *METRICS, "time_s"), rows)
    table = markdown_table(summary_rows)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    summary = {
        "split": split,
        "slices": len(samples),
        "conventions": "PSNR/SSIM with L = max(reference) per slice on the unpadded image, no mask, no clipping; "
        "mean ± sample std over slices (bundle.workflows.legopet)",
        "methods": methods,
        "table": table,
    }
    _write_json(out / "summary.json", summary)
    _figure(samples[figure_index], {n: p[figure_index] for n, p in predictions.items()}, out / "figure.png")
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
            scores = [_scores(img, s.reference) for img, s in zip(images, samples, strict=True)]
            row: dict[str, Any] = {"method": name, "epoch": epoch, "iteration": epoch * iterations_per_epoch}
            for k in METRICS:
                row[k], row[f"{k}_std"] = _mean_std([sc[k] for sc in scores])
            rows.append(row)
    _write_csv(out / "progress.csv", list(rows[0]), rows)
    _write_json(out / "progress.json", {"split": split, "slices": len(samples), "use_ema": use_ema, "rows": rows})
    _metric_curves(rows, out / "progress.png", x_key="iteration", x_label="training iterations")
    return rows


def _metric_curves(rows: Sequence[Mapping[str, Any]], path: Path, *, x_key: str, x_label: str) -> Path:
    """PSNR and SSIM (mean ± std) of every method in ``rows`` against ``rows[i][x_key]``, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        for ax, k in zip(axes, METRICS, strict=True):
            ax.errorbar([r[x_key] for r in mine], [r[k] for r in mine], yerr=[r[f"{k}_std"] for r in mine],
                        marker="o", capsize=2, label=name)
    for ax, k in zip(axes, ("PSNR [dB]", "SSIM"), strict=True):
        ax.set_xlabel(x_label)
        ax.set_ylabel(k)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
        scores = [_scores(img, s.reference) for img, s in zip(images, samples, strict=True)]
        steps = len(inferer.scheduler.timesteps)
        rows.append({
            "sampler": f"{type(inferer.scheduler).__name__.removesuffix('Scheduler')} {steps}",
            "steps": steps,
            "nfe_per_slice": predictor.network.images / len(samples),
            "seconds_per_slice": sum(seconds) / len(seconds),
            **{k: _mean_std([sc[k] for sc in scores])[0] for k in METRICS},
        })
    _write_csv(out / "sampling_cost.csv", list(rows[0]), rows)
    _write_json(out / "sampling_cost.json", {"split": split, "slices": len(samples), "device": str(device),
                                             "rows": rows})
    lines = ["| Sampler | steps | NFE / slice | s / slice | PSNR | SSIM |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['sampler']} | {r['steps']} | {r['nfe_per_slice']:.0f} | {r['seconds_per_slice']:.3f} | "
              f"{r['PSNR']:.2f} | {r['SSIM']:.3f} |" for r in rows]
    (out / "sampling_cost.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows


def _with_guidance(inferer: LegoPETInferer, guidance_scale: object, name: str) -> LegoPETInferer:
    """A shallow copy of ``inferer`` with λ2 = ``guidance_scale`` (same scheduler, steps, PnPNet, crop, η)."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {guidance_scale!r}")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"{name} (λ2) must be finite and >= 0, got {guidance_scale}")
    copied = copy.copy(inferer)
    copied.guidance_scale = float(guidance_scale)
    return copied


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
        name: [_with_guidance(inferer, g, f"guidance_scales[{i}]") for i, g in enumerate(guidance_scales)]
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
            scores = [_scores(img, s.reference) for img, s in zip(images, samples, strict=True)]
            row: dict[str, Any] = {
                "method": name,
                "guidance_scale": inferer.guidance_scale,
                "nfe_per_slice": predictor.network.images / len(samples),
                "seconds_per_slice": sum(seconds) / len(seconds),
            }
            for k in METRICS:
                row[k], row[f"{k}_std"] = _mean_std([sc[k] for sc in scores])
            rows.append(row)
    best = {name: max((r for r in rows if r["method"] == name), key=lambda r: r["PSNR"])["guidance_scale"]
            for name in runs}
    _write_csv(out / "guidance_sweep.csv", list(rows[0]), rows)
    _write_json(out / "guidance_sweep.json", {"split": split, "slices": len(samples), "seed": seed,
                                              "best_by_psnr": best, "rows": rows})
    lines = ["| Method | λ2 | NFE / slice | PSNR | SSIM |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['guidance_scale']:g} | {r['nfe_per_slice']:.0f} | {r['PSNR']:.2f} ± "
              f"{r['PSNR_std']:.2f} | {r['SSIM']:.3f} ± {r['SSIM_std']:.3f} |" for r in rows]
    (out / "guidance_sweep.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _metric_curves(rows, out / "guidance_sweep.png", x_key="guidance_scale", x_label="guidance weight λ2")
    return rows


def default_crop(image_shape: Sequence[int], pad_size: int) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of the unpadded image in the padded grid (:func:`padding_offsets`)."""
    return tuple(padding_offsets(image_shape, pad_size))  # type: ignore[return-value]
