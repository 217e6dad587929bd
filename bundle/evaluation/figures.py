"""Figure writers of the evaluations: image panels and metric curves (one function per figure kind).

Outputs are PNG files; every function returns the path it wrote.  2D panels and curves use pyplot with the Agg
backend, volume panels a bare :class:`matplotlib.figure.Figure`.  Importing runs nothing (matplotlib is imported
when a figure is drawn).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from bundle.physics import ImageGeometry

__all__ = [
    "bias_variance_figure",
    "denoising_loss_figure",
    "dose_figure",
    "metric_curves",
    "monai_volume_panel",
    "slice_figure",
    "volume_panel",
]


def slice_figure(counts: torch.Tensor, reference: torch.Tensor, images: Mapping[str, torch.Tensor], path: Path, *,
                 scores: Mapping[str, Mapping[str, float]], name: str) -> Path:
    """Sinogram ``counts`` (views, bins), ``reference`` and every image (all ``(h, w)``, titled PSNR dB / SSIM from
    ``scores[image name]``) over their squared errors on one colour scale (the LegoPET evaluation's figure); ``name``
    starts the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(images)
    ref = reference
    vmax = float(ref.max())
    errors = {n: (images[n] - ref) ** 2 for n in names}
    emax = max(float(e.max()) for e in errors.values()) or 1.0
    cols = 2 + len(names)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.6), squeeze=False)
    axes[0, 0].imshow(counts.numpy(), cmap="gray_r", aspect="auto")
    axes[0, 0].set_title("input sinogram", fontsize=8)
    axes[0, 1].imshow(ref.numpy(), cmap="gray_r", vmin=0, vmax=vmax)
    axes[0, 1].set_title("reference", fontsize=8)
    for j, n in enumerate(names, start=2):
        axes[0, j].imshow(images[n].numpy(), cmap="gray_r", vmin=0, vmax=vmax)
        axes[0, j].set_title(f"{n}\n{scores[n]['PSNR']:.2f} dB / {scores[n]['SSIM']:.3f}", fontsize=8)
        axes[1, j].imshow(errors[n].numpy(), cmap="inferno", vmin=0, vmax=emax)
        axes[1, j].set_title(f"{n} squared error", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 0].axis("off")
    axes[1, 1].axis("off")
    fig.suptitle(f"{name} (errors on one scale, 0 … {emax:.3g})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def uncertainty_figure(reference: torch.Tensor, means: Mapping[str, torch.Tensor], stds: Mapping[str, torch.Tensor],
                       path: Path, *, name: str) -> Path:
    """The reference, then per method the mean of its samples and their per-pixel standard deviation (all ``(h, w)``,
    activity units; means on the reference's scale, standard deviations on one scale of their own), with colour bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(means)
    vmax = float(reference.max())
    smax = max(float(stds[n].max()) for n in names) or 1.0
    fig, axes = plt.subplots(2, 1 + len(names), figsize=(2.6 * (1 + len(names)), 4.8), squeeze=False)
    im = axes[0, 0].imshow(reference.numpy(), cmap="gray_r", vmin=0, vmax=vmax)
    axes[0, 0].set_title("reference", fontsize=8)
    fig.colorbar(im, ax=axes[0, 0], fraction=0.046)
    axes[1, 0].axis("off")
    for j, n in enumerate(names, start=1):
        im = axes[0, j].imshow(means[n].numpy(), cmap="gray_r", vmin=0, vmax=vmax)
        axes[0, j].set_title(n, fontsize=8)
        fig.colorbar(im, ax=axes[0, j], fraction=0.046)
        im = axes[1, j].imshow(stds[n].numpy(), cmap="magma", vmin=0, vmax=smax)
        axes[1, j].set_title("per-pixel std", fontsize=8)
        fig.colorbar(im, ax=axes[1, j], fraction=0.046)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{name}: mean and standard deviation of the samples (activity units)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_curves(rows: Sequence[Mapping[str, Any]], path: Path, *, x_key: str, x_label: str) -> Path:
    """PSNR and SSIM (``rows[i]["PSNR"]`` ± ``rows[i]["PSNR_std"]``, same for SSIM) of every ``rows[i]["method"]``
    against ``rows[i][x_key]``, one panel per metric, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        for ax, k in zip(axes, ("PSNR", "SSIM"), strict=True):
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


def denoising_loss_figure(means: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """``eps_mse_mean_over_t`` against ``iteration`` (log scale), one line per (``method``, ``split``), test solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for method, split in dict.fromkeys((m["method"], m["split"]) for m in means):
        mine = [m for m in means if (m["method"], m["split"]) == (method, split)]
        ax.plot([m["iteration"] for m in mine], [m["eps_mse_mean_over_t"] for m in mine], marker="o",
                linestyle="-" if split == "test" else "--", label=f"{method} {split}")
    ax.set_xlabel("training iterations")
    ax.set_ylabel("ε-MSE (mean over the t grid)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def volume_panel(images: Mapping[str, torch.Tensor], path: Path, *, geometry: ImageGeometry, title: str, unit: str,
                 vmax: float | None = None, cmaps: Mapping[str, str] | None = None) -> Path:
    """Axial, coronal and sagittal views (rows; middle slices) of each ``(n_z, n_y, n_x)`` image (columns), drawn in
    mm at the voxel aspect ratio of ``geometry`` (PET-DDS Fig. 1 style, with the sagittal view added).

    The images share one grey scale [0, ``vmax``] (default: the largest image maximum) and one colour bar labelled
    ``unit`` (the activity unit, e.g. ``"kBq/ml"``); an image given a colour map in ``cmaps`` (e.g. a CV map) gets
    its own scale [0, its maximum] and a colour bar labelled with its name.  Orientation of the (z, y, x) arrays:
    axial = slice z (y down), coronal = slice y (z up), sagittal = slice x (z up).
    """
    from matplotlib.figure import Figure

    if not images:
        raise ValueError("images must hold at least one volume, got an empty mapping")
    volumes = {name: volume.detach().cpu().float() for name, volume in images.items()}
    for name, volume in volumes.items():
        if tuple(volume.shape) != geometry.shape:
            raise ValueError(f"images[{name!r}] must have shape geometry.shape = {geometry.shape}, "
                             f"got {tuple(volume.shape)}")
    own = dict(cmaps or {})
    shared = [name for name in volumes if name not in own]
    top = vmax if vmax is not None else max((float(volumes[n].max()) for n in shared), default=1.0)
    nz, ny, nx = geometry.shape
    vz, vy, vx = geometry.voxel_size_mm
    # (view, extent [left, right, bottom, top] in mm, origin) per row; heights proportional to the physical extents
    rows = (("axial", lambda v: v[nz // 2], (0.0, nx * vx, ny * vy, 0.0), "upper"),
            ("coronal", lambda v: v[:, ny // 2, :], (0.0, nx * vx, 0.0, nz * vz), "lower"),
            ("sagittal", lambda v: v[:, :, nx // 2], (0.0, ny * vy, 0.0, nz * vz), "lower"))
    heights = [abs(extent[2] - extent[3]) for _, _, extent, _ in rows]
    width = max(nx * vx, ny * vy)
    column_in = 2.4
    figure = Figure(figsize=(column_in * len(volumes) + 1.2,
                             column_in * sum(heights) / width + 1.0 + 0.6 * bool(own)), layout="constrained")
    axes = figure.subplots(3, len(volumes), squeeze=False, gridspec_kw={"height_ratios": heights})
    shared_image = None
    for column, (name, volume) in enumerate(volumes.items()):
        high = max(float(volume.max()) if name in own else top, 1e-12)
        for row, (view, cut, extent, origin) in enumerate(rows):
            ax = axes[row][column]
            drawn = ax.imshow(cut(volume).numpy(), cmap=own.get(name, "gray_r"), vmin=0.0, vmax=high,
                              extent=extent, origin=origin, aspect="equal", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(view, rotation=0, horizontalalignment="right", verticalalignment="center", fontsize=9)
        axes[0][column].set_title(name, fontsize=9)
        if name in own:
            figure.colorbar(drawn, ax=list(axes[:, column]), location="bottom", label=name, shrink=0.9)
        elif shared_image is None:
            shared_image = drawn
    if shared_image is not None:
        shared_axes = [axes[r][c] for r in range(3) for c, n in enumerate(volumes) if n not in own]
        figure.colorbar(shared_image, ax=shared_axes, location="right", label=unit, shrink=0.9)
    figure.suptitle(f"{title}\n(voxel {vz:g} × {vy:g} × {vx:g} mm, z × y × x)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def bias_variance_figure(points: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> Path:
    """Normalised bias against normalised std (%): one MAP-EM curve per β over its passes, one PET-DDS-δ curve over
    δ and one over λ_RDP (``points`` as :func:`bundle.workflows.petdds_studies.bias_variance_study` writes them)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = figure.subplots()
    # one MAP-EM curve per β over the passes (labelled with the pass count), one PET-DDS-δ curve over δ
    curves = [(f"MAP-EM β={b:g}", "o", [p for p in points if p["method"] == "MAP-EM" and p["beta"] == b], "iterations")
              for b in dict.fromkeys(p["beta"] for p in points if p["method"] == "MAP-EM")]
    for key, marker in (("delta", "s"), ("lambda_rdp", "^")):
        curves.append((f"PET-DDS-δ ({'δ' if key == 'delta' else 'λ_RDP'})", marker,
                       [p for p in points if p["method"] == "PET-DDS-δ" and p.get("varied", "delta") == key], key))
    for label, marker, chosen, key in curves:
        if not chosen:
            continue
        xs = [100 * p["normalised_std"] for p in chosen]
        ys = [100 * p["normalised_bias"] for p in chosen]
        ax.plot(xs, ys, marker=marker, linestyle="-", label=label, markersize=4)
        for p, x, y in zip(chosen, xs, ys, strict=True):
            ax.annotate(f"{p[key]:g}", (x, y), fontsize=6, textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("normalised standard deviation (%)")
    ax.set_ylabel("normalised bias (%)")
    ax.set_title(title + "\n(numbers: MAP-EM passes, PET-DDS-δ δ or λ_RDP)", fontsize=9)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def monai_volume_panel(images: Mapping[str, torch.Tensor], path: Path, *, title: str, vmax: float, unit: str,
                       voxel_size_mm: Sequence[float]) -> Path:
    """:func:`volume_panel` of ``(1, 1, X, Y, Z)`` volumes (MONAI layout, as uPETe's Fig. 3) with voxel size
    ``voxel_size_mm`` = (X, Y, Z) in mm."""
    from bundle.physics import ImageGeometry

    volumes = {name: v.detach().cpu().float()[0, 0].permute(2, 1, 0) for name, v in images.items()}
    shape = tuple(next(iter(volumes.values())).shape)
    sx, sy, sz = (float(s) for s in voxel_size_mm)
    geometry = ImageGeometry(shape=shape, voxel_size_mm=(sz, sy, sx))
    return volume_panel(volumes, path, geometry=geometry, title=title, unit=unit, vmax=vmax)


def dose_figure(curves: Mapping[str, Mapping[float, float]], path: Path) -> Path:
    """PSNR against dose (log axis, % of standard), one line per method: ``curves = {method: {dose: PSNR}}``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.subplots()
    for name, curve in curves.items():
        doses = sorted(curve)
        ax.plot([100 * d for d in doses], [curve[d] for d in doses], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("dose [% of standard]")
    ax.set_ylabel("PSNR [dB]")
    ax.set_title("Generalisation to dose (no retraining)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
