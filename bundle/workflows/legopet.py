"""LegoPET evaluation on a ``legopet`` dataset (``python -m bundle.data build legopet``): the method table (OSEM,
DeepPET, cGAN, Pix2Pix, cDPM, LegoPET; the GAN rows optional).  The training-progress curve, the DDIM-vs-DDPM
sampling cost and the guidance-weight (λ2) sweep are in :mod:`bundle.workflows.legopet_studies`, the predictors of
the rows in :mod:`bundle.workflows.legopet_predictors`; all share the conventions below.

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
- GAN rows (:func:`.gan_predictors`): the generator of the cGAN / Pix2Pix trainings (``configs/legopet/gan.json``)
  with the ``network`` weights of its checkpoint, one forward pass per slice, like DeepPET.
- Diffusion rows: one ``torch.Generator`` seeded with ``seed`` per method on the inputs' device, so cDPM and LegoPET
  start from the same x_T for every slice.  Timings: wall-clock seconds per slice (batch time / batch size;
  ``time.perf_counter``, CUDA synchronised).
- NFE (network function evaluations) per image: counted by wrapping the denoiser (:class:`.CountingNetwork`), i.e.
  (images passed through the network) / (images sampled); with guidance λ2 > 0 every step costs 2.

Outputs of :func:`evaluate_legopet` in ``output_dir``: ``metrics.csv`` (per slice and method), ``summary.json``
(mean ± std, conventions, paired per-slice PSNR wins against OSEM, DeepPET and cDPM), ``table.md`` (first column
``Method``, then the wins table), ``figure.png`` (paper Fig. 2 style: input sinogram, reference, each method,
squared-error maps) and, for diffusion predictors with N > 1 samples, ``uncertainty.png`` (reference, mean of N and
per-pixel standard deviation of the N samples, in activity units with colour bars).  Importing this module runs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from bundle.data.legopet import load_samples
from bundle.evaluation import mean_std, metrics_table, slice_figure, uncertainty_figure, write_csv, write_json
from bundle.metrics import image_metrics

from .._checks import check_int
from .legopet_predictors import IMAGE_CONDITION_METHODS, CountingNetwork, Predictor, predict

__all__ = ["METHODS", "METRICS", "evaluate_legopet"]

METHODS: tuple[str, ...] = ("OSEM", "DeepPET", "cGAN", "Pix2Pix", "cDPM", "LegoPET", *IMAGE_CONDITION_METHODS)
"""Predictor names, in table order (the paper's Table 1, then the image-condition extension), exactly as they appear
in tables, CSV and JSON; a diffusion predictor with N > 1 samples adds the row ``"<name> (mean of N)"`` after its
own."""
METRICS: tuple[str, ...] = ("PSNR", "SSIM")
"""Metric columns (PSNR in dB, SSIM as a fraction)."""


def _check_predictors(predictors: object) -> dict[str, Predictor]:
    if not isinstance(predictors, Mapping):
        raise TypeError(f"predictors must be a mapping {{method: predictor}}, got {type(predictors).__name__}")
    for name, p in predictors.items():
        if name not in METHODS or name == "OSEM":
            raise ValueError(f"predictors keys must be among {list(METHODS[1:])}, got {name!r}")
        if not callable(p):
            raise TypeError(f"predictors[{name!r}] must be callable, got {type(p).__name__}")
    return dict(predictors)


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
    sinogram_scale: float | None = None,
    image_scale: float | None = None,
) -> dict[str, Any]:
    """The method table: OSEM (from the dataset) and each predictor on the ``split`` slices (module docstring).

    Args:
        dataset_dir: legopet dataset folder.
        output_dir: where ``metrics.csv``, ``summary.json``, ``table.md`` and ``figure.png`` go (created).
        predictors: ``{"DeepPET"|"cGAN"|"Pix2Pix"|"cDPM"|"LegoPET": predictor}`` (:class:`.RegressionPredictor`,
            :class:`.DiffusionPredictor` or any callable with the :data:`.Predictor` contract); rows follow
            :data:`METHODS` order.
        include_osem: add the OSEM row (needs ``osem`` in every entry).
        split, pad_size, limit: as :func:`bundle.data.legopet.load_samples`.
        batch_size: slices per predictor call.
        figure_index: which slice the figure shows.
        device: where predictors run (``None``: CPU).
        sinogram_scale, image_scale: the predictors' network units (:func:`bundle.data.legopet.load_samples`;
            ``None``: the dataset's own, those of a model trained on it).

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
    samples = load_samples(dataset_dir, split=split, pad_size=pad_size, limit=limit, sinogram_scale=sinogram_scale,
                           image_scale=image_scale)
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
    spread: dict[str, list[torch.Tensor]] = {}
    for name in METHODS:
        if name in predictors:
            images, times = predict(predictors[name], samples, batch_size=batch_size, device=device)
            counter = getattr(predictors[name], "network", None)
            count = images[0].shape[0] if images[0].ndim == 3 else 1
            predictions[name] = [image[0] for image in images] if count > 1 else images
            seconds[name] = [t / count for t in times]
            if isinstance(counter, CountingNetwork):
                nfe[name] = counter.images / len(samples) / count
            if count > 1:  # N samples per slice: sample 0 is the single-sample row; their mean and std
                mean_name = f"{name} (mean of {count})"
                predictions[mean_name] = [image.mean(dim=0) for image in images]
                spread[mean_name] = [image.std(dim=0) for image in images]
                seconds[mean_name] = times
                if name in nfe:
                    nfe[mean_name] = nfe[name] * count

    rows, summary_rows, methods, psnr = [], {}, {}, {}
    for name, images in predictions.items():
        per_slice = [image_metrics(img, s.reference) for img, s in zip(images, samples, strict=True)]
        psnr[name] = [sc["PSNR"] for sc in per_slice]
        for i, (s, sc) in enumerate(zip(samples, per_slice, strict=True)):
            rows.append({"id": s.id, "method": name, **{k: f"{sc[k]:.6f}" for k in METRICS},
                         "time_s": f"{seconds[name][i]:.6f}" if name in seconds else ""})
        summary_rows[name] = {k: mean_std([sc[k] for sc in per_slice]) for k in METRICS}
        methods[name] = {k: {"mean": m, "std": sd} for k, (m, sd) in summary_rows[name].items()}
        if name in seconds:
            methods[name]["time_s_per_slice"] = sum(seconds[name]) / len(seconds[name])
        if name in nfe:
            methods[name]["nfe_per_slice"] = nfe[name]
    wins = _paired_wins(psnr)
    for name, counts in wins.items():
        methods[name]["psnr_wins"] = counts

    write_csv(out / "metrics.csv", ("id", "method", *METRICS, "time_s"), rows)
    table = metrics_table(summary_rows, METRICS, digits={"PSNR": 2, "SSIM": 3}, first_column="Method")
    if wins:
        table += "\n\nPaired per-slice PSNR wins (slices where the row beats the baseline, of " + str(len(samples))
        table += "):\n\n| Method | " + " | ".join(f"vs {b}" for b in _WIN_BASELINES) + " |\n"
        table += "| --- | " + " | ".join("---" for _ in _WIN_BASELINES) + " |\n"
        table += "\n".join(f"| {n} | " + " | ".join(str(c.get(b, "")) for b in _WIN_BASELINES) + " |"
                           for n, c in wins.items())
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
    if spread:
        uncertainty_figure(sample.reference, {n: predictions[n][figure_index] for n in spread},
                           {n: spread[n][figure_index] for n in spread}, out / "uncertainty.png",
                           name=f"slice {sample.id}")
    return summary


_WIN_BASELINES: tuple[str, ...] = ("OSEM", "DeepPET", "cDPM")
"""The rows every other row is compared with, slice by slice, in the wins table (when present)."""


def _paired_wins(psnr: Mapping[str, list[float]]) -> dict[str, dict[str, int]]:
    """``{row: {baseline: number of slices where the row's PSNR > the baseline's}}``; a "(mean of N)" row is
    compared with the cDPM row of the same kind, i.e. "cDPM (mean of N)"."""
    wins: dict[str, dict[str, int]] = {}
    for name, values in psnr.items():
        suffix = name[name.index(" (mean of"):] if " (mean of" in name else ""
        counts = {}
        for base in _WIN_BASELINES:
            other = f"{base}{suffix}" if base == "cDPM" else base
            if other in psnr and other != name and not name.startswith(base + " ("):
                counts[base] = sum(a > b for a, b in zip(values, psnr[other], strict=True))
        if counts and name != "OSEM":
            wins[name] = counts
    return wins
