"""Diagnostics of the LegoPET / cDPM ε-predictors: the held-out denoising loss over training (does the model that fits
the training slices also denoise unseen ones?) and restarts from the noised reference (at which noise levels does a
trained model fail?, :func:`restart_from_reference`).

For every interval checkpoint (``checkpoint_epoch=N.pt``, EMA weights by default) of every run, and every split::

    L_split(t) = mean over slices i and draws k of mean_pixels (ε_θ(x_t, t, C_i) − ε_ik)²,
    x_t = sqrt(ᾱ_t) x_0,i + sqrt(1 − ᾱ_t) ε_ik                       (paper eq. (3); the training objective at t)

with x_0,i the reference on the padded grid in the model's units (network units put through the inferer's
``standardisation``, as in training), ε_θ the ε implied by the network output (v- and x_0-predictors are converted
with the scheduler's ``prediction_type``), C_i = {s_i, b_d, b_m} the full
condition (the conditional branch, no guidance), and ε_ik drawn once from a generator seeded with ``seed``, so every
checkpoint, run and split sees the same noise for the same slice (common random numbers; differences between
checkpoints are not sampling noise).  A training-split loss that keeps falling while the test-split loss rises is
overfitting; both rising, or jumping between checkpoints, points at the optimisation.

Outputs in ``output_dir``: ``denoising_loss.csv`` (one row per run, checkpoint, split and t), ``denoising_loss.json``
(the rows plus the mean over the t grid per run, checkpoint and split) and ``denoising_loss.png`` (mean over t
against training iterations, one line per run and split).  Importing this module runs nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle._checks import check_int
from bundle.checkpoint import list_checkpoints, load_weights
from bundle.data.legopet import load_samples
from bundle.diffusion.ddim import DDIMStep, split_prediction
from bundle.evaluation import denoising_loss_figure, write_csv, write_json
from bundle.inferers.legopet import LegoPETInferer, slice_condition
from bundle.transforms.legopet import padding_offsets

__all__ = ["DEFAULT_START_STEPS", "DEFAULT_TIMESTEPS", "denoising_loss", "restart_from_reference"]

DEFAULT_TIMESTEPS: tuple[int, ...] = (10, 50, 100, 250, 500, 750, 950)
"""The t grid (of T = 1000): from nearly clean to nearly pure noise."""


def _padded_references(samples: Sequence[Any], pad_size: int) -> torch.Tensor:
    """x_0 in network units, ``(n, 1, S, S)``: reference / k_x, zero-padded as :class:`PadToSquared`."""
    images = []
    for sample in samples:
        top, left, height, width = padding_offsets(tuple(sample.reference.shape), pad_size)
        grid = torch.zeros((1, pad_size, pad_size), dtype=torch.float32)
        grid[0, top : top + height, left : left + width] = sample.reference / sample.image_divisor
        images.append(grid)
    return torch.stack(images)


def denoising_loss(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    runs: Mapping[str, tuple[torch.nn.Module, LegoPETInferer, str | Path]],
    iterations_per_epoch: int,
    splits: Sequence[str] = ("training", "test"),
    timesteps: Sequence[int] = DEFAULT_TIMESTEPS,
    noise_draws: int = 2,
    use_ema: bool = True,
    pad_size: int = 256,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """L_split(t) for every checkpoint of every run (module docstring).

    Args:
        dataset_dir: legopet dataset folder.
        output_dir: where the CSV, JSON and PNG go (created).
        runs: ``{name: (network, inferer, ckpt_dir)}`` as for :func:`.training_progress`:
            the network is copied and loaded with each interval checkpoint; the inferer supplies the scheduler
            (ᾱ_t) and the condition (its PnPNet, or none for the cDPM); its guidance and sampler settings are unused.
        iterations_per_epoch: optimiser steps per epoch (x axis = epoch × this).
        splits: datalist splits to score (default training and test).
        timesteps: the t grid, each in [0, T).
        noise_draws: ε draws per slice and t.
        use_ema, pad_size, limit, batch_size, seed, device: as in :func:`.training_progress`.

    Returns:
        ``{"rows": [...], "means": [...]}`` as written to ``denoising_loss.json``.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {name: (network, inferer, ckpt_dir)}")
    iterations_per_epoch = check_int(iterations_per_epoch, "iterations_per_epoch", minimum=1)
    noise_draws = check_int(noise_draws, "noise_draws", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if isinstance(splits, str) or not splits:
        raise ValueError(f"splits must be a non-empty sequence of datalist splits, got {splits!r}")
    if isinstance(timesteps, str) or not timesteps:
        raise ValueError(f"timesteps must be a non-empty sequence of ints, got {timesteps!r}")
    device = torch.device("cpu" if device is None else device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)

    data = {}
    for split in splits:
        samples = load_samples(dataset_dir, split=split, pad_size=pad_size, limit=limit)
        generator = torch.Generator().manual_seed(seed)
        x0 = _padded_references(samples, pad_size)  # network units; each run standardises it as its training did
        noise = torch.randn((len(timesteps), noise_draws, *x0.shape), generator=generator)
        data[split] = (torch.stack([s.sinogram for s in samples]), x0, noise)

    rows: list[dict[str, Any]] = []
    for name, (network, inferer, ckpt_dir) in runs.items():
        if not isinstance(inferer, LegoPETInferer):
            raise TypeError(f"runs[{name!r}] must hold a LegoPETInferer, got {type(inferer).__name__}")
        total = int(inferer.scheduler.num_train_timesteps)
        grid = [check_int(t, "timesteps entries", minimum=0) for t in timesteps]
        if max(grid) >= total:
            raise ValueError(f"timesteps must be < num_train_timesteps ({total}), got {max(grid)}")
        conditional = inferer.with_guidance(0.0)  # ε_θ(x_t, t, C): the conditional branch only
        checkpoints = list_checkpoints(ckpt_dir)
        if not checkpoints:
            raise ValueError(f"runs[{name!r}]: no checkpoint_epoch=N.pt in {ckpt_dir} (set ckpt_interval/ckpt_keep)")
        conditions = {split: conditional.condition(s.to(device)) for split, (s, _, _) in data.items()}
        for epoch, path in checkpoints:
            net = load_weights(copy.deepcopy(network), path, use_ema=use_ema).to(device)
            for split, (_, x0, noise) in data.items():
                condition = conditions[split]
                for ti, t in enumerate(grid):
                    abar = inferer.scheduler.alphas_cumprod[t].to(device)
                    sq_err = 0.0
                    for k in range(noise_draws):
                        for start in range(0, x0.shape[0], batch_size):
                            stop = start + batch_size
                            eps = noise[ti, k, start:stop].to(device)
                            z0 = inferer.standardisation.forward(x0[start:stop].to(device))
                            x_t = abar.sqrt() * z0 + (1 - abar).sqrt() * eps
                            part = slice_condition(condition, start, stop)
                            with torch.no_grad():
                                output = conditional.guided_noise(net, x_t, t, part)
                            _, eps_hat = split_prediction(output, x_t, abar, inferer.scheduler.prediction_type)
                            sq_err += float(((eps_hat - eps) ** 2).mean(dim=(1, 2, 3)).sum())
                    rows.append({"method": name, "epoch": epoch, "iteration": epoch * iterations_per_epoch,
                                 "split": split, "t": t, "eps_mse": sq_err / (noise_draws * x0.shape[0])})
    means = []
    for key in dict.fromkeys((r["method"], r["epoch"], r["split"]) for r in rows):
        mine = [r for r in rows if (r["method"], r["epoch"], r["split"]) == key]
        means.append({"method": key[0], "epoch": key[1], "iteration": mine[0]["iteration"], "split": key[2],
                      "eps_mse_mean_over_t": sum(r["eps_mse"] for r in mine) / len(mine)})
    result = {"splits": list(splits), "timesteps": list(timesteps), "noise_draws": noise_draws, "use_ema": use_ema,
              "rows": rows, "means": means}
    write_csv(out / "denoising_loss.csv", list(rows[0]), rows)
    write_json(out / "denoising_loss.json", result)
    denoising_loss_figure(means, out / "denoising_loss.png")
    return result


DEFAULT_START_STEPS: tuple[int, ...] = (50, 200, 400, 600, 999)
"""Restart levels t0 of :func:`restart_from_reference` (999 = ordinary sampling from noise, as x_999 ≈ N(0, I))."""


def restart_from_reference(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    runs: Mapping[str, tuple[torch.nn.Module, LegoPETInferer]],
    start_steps: Sequence[int] = DEFAULT_START_STEPS,
    num_inference_steps: int = 20,
    guidance_scale: float = 0.0,
    split: str = "test",
    pad_size: int = 256,
    limit: int | None = None,
    head_fraction: float = 0.05,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[dict[str, Any]]:
    """Which noise levels does a trained model fail at?  Noise the true x_0 to t0 and sample back.

    For every t0 in ``start_steps``: x_t0 = sqrt(ᾱ_t0) x_0 + sqrt(1 − ᾱ_t0) ε (ε from a generator seeded with
    ``seed``, the same for every run and t0), then ``num_inference_steps`` DDIM steps (η = 0) on
    ``linspace(t0, 0, k).round()`` with t_prev taken from that list (:mod:`bundle.diffusion.ddim`), ε̃ with λ2 =
    ``guidance_scale``, x̂_0 clipped as the scheduler's ``clip_sample`` says.  Scores per slice, in network units on
    the padded grid, then averaged:

    * ``intensity_ratio`` = mean of the result over the head / mean of x_0 over the head, head = x_0 >
      ``head_fraction`` · max x_0 (1 = intensity kept);
    * ``rmse`` = sqrt(mean (result − x_0)²) over the whole grid.

    A model that keeps the ratio near 1 from small t0 but not from t0 = 999 denoises well and fails to produce the
    image from the condition at high noise.  Writes ``restart.{csv,json,md}``; returns the rows.

    Args:
        runs: ``{name: (network, inferer)}`` (trained weights loaded; the inferer gives the scheduler and the
            condition, e.g. ``sweep_runs`` of ``configs/legopet/evaluate.json``).
        Others: as :func:`denoising_loss`.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError("runs must be a non-empty mapping {name: (network, inferer)}")
    steps = check_int(num_inference_steps, "num_inference_steps", minimum=1)
    if isinstance(start_steps, str) or not start_steps:
        raise ValueError(f"start_steps must be a non-empty sequence of ints, got {start_steps!r}")
    if not 0.0 < float(head_fraction) < 1.0:
        raise ValueError(f"head_fraction must be in (0, 1), got {head_fraction!r}")
    device = torch.device("cpu" if device is None else device)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = load_samples(dataset_dir, split=split, pad_size=pad_size, limit=limit)
    x0 = _padded_references(samples, pad_size).to(device)
    head = x0 > head_fraction * x0.amax(dim=(1, 2, 3), keepdim=True)
    sinogram = torch.stack([s.sinogram for s in samples]).to(device)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(check_int(seed, "seed", minimum=0)))
    rows: list[dict[str, Any]] = []
    for name, (network, inferer) in runs.items():
        if not isinstance(inferer, LegoPETInferer):
            raise TypeError(f"runs[{name!r}] must hold a LegoPETInferer, got {type(inferer).__name__}")
        sampler = inferer.with_guidance(guidance_scale, name="guidance_scale")
        scheduler = sampler.scheduler
        total = int(scheduler.num_train_timesteps)
        condition = sampler.condition(sinogram)
        for t0 in start_steps:
            t0 = check_int(t0, "start_steps entries", minimum=0)
            if t0 >= total:
                raise ValueError(f"start_steps must be < num_train_timesteps ({total}), got {t0}")
            times = torch.linspace(t0, 0, min(steps, t0 + 1)).round().long().tolist()
            times = list(dict.fromkeys(int(t) for t in times))
            abar = scheduler.alphas_cumprod[t0].to(device)
            x = abar.sqrt() * sampler.standardisation.forward(x0) + (1 - abar).sqrt() * noise.to(device)
            with torch.no_grad():
                x, _ = sampler.sample(x, network, condition, times,
                                      step_rule=DDIMStep(scheduler=scheduler, timesteps=times))
            x = sampler.standardisation.inverse(x)
            ratios = [float(x[i][head[i]].mean() / x0[i][head[i]].mean()) for i in range(x0.shape[0])]
            rmse = ((x - x0) ** 2).mean(dim=(1, 2, 3)).sqrt()
            rows.append({"method": name, "t0": t0, "steps": len(times),
                         "intensity_ratio": sum(ratios) / len(ratios), "rmse": float(rmse.mean())})
    write_csv(out / "restart.csv", list(rows[0]), rows)
    write_json(out / "restart.json", {"split": split, "slices": len(samples), "guidance_scale": float(guidance_scale),
                                      "head_fraction": float(head_fraction), "rows": rows})
    lines = ["| Method | t0 | steps | intensity ratio | RMSE (network units) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['method']} | {r['t0']} | {r['steps']} | {r['intensity_ratio']:.3f} | {r['rmse']:.3f} |"
              for r in rows]
    (out / "restart.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows
