"""LegoPET studies beyond the method table (conventions: module docstring of :mod:`bundle.workflows.legopet`): the
training-progress curve (cDPM vs LegoPET, the paper's Fig. 3 ablation), the DDIM-vs-DDPM sampling cost and the
guidance-weight (λ2) sweep.  Importing runs nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle.checkpoint import list_checkpoints, load_weights
from bundle.data.legopet import load_samples
from bundle.evaluation import mean_std, metric_curves, write_csv, write_json
from bundle.inferers.legopet import LegoPETInferer
from bundle.metrics import image_metrics

from .._checks import check_int
from .legopet import METRICS
from .legopet_predictors import DiffusionPredictor, predict

__all__ = ["guidance_sweep", "sampling_cost", "training_progress"]


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
        Others: as :func:`~bundle.workflows.legopet.evaluate_legopet`.

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
            images, _ = predict(predictor, samples, batch_size=batch_size, device=device)
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
        Others: as :func:`~bundle.workflows.legopet.evaluate_legopet`.

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
        images, seconds = predict(predictor, samples, batch_size=batch_size, device=device)
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
        Others: as :func:`~bundle.workflows.legopet.evaluate_legopet`.

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
            images, seconds = predict(predictor, samples, batch_size=batch_size, device=device)
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
