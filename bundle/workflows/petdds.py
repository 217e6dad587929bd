"""PET-DDS-δ reconstruction and evaluation workflows on a ``petdds`` dataset (``python -m bundle.data build petdds``).

Forward model rebuilt from the stored factors (:func:`load_petdds_case`)
-----------------------------------------------------------------------

The builder simulated ȳ_full = c · n ⊙ a ⊙ A(G x) + s_full (``bundle.data.simulate``; c = ``count_scale_full``,
s_full = ``background_full.npy`` in count units of the full scan) and drew the low-count realisations from
f · ȳ_full (f = ``low_count_fraction``).  The rebuilt model therefore is::

    ȳ = (f c n ⊙ a) ⊙ A(G x) + f s_full        (f = 1 for the full-count sinogram)

with A the ``SinogramProjector`` of the manifest's ``config.scanner_preset``, G the ``GaussianResolution`` with the
manifest's ``config.fwhm_mm``, and f·c·(n ⊙ a) passed as ``PETForwardModel(normalisation=...)`` (attenuation
``None``: the stored factors already hold a).  So x is in the activity units of ``activity.nii.gz`` /
``reference.nii.gz`` and every reconstruction (OSEM, MAP-EM, PET-DDS-δ) is directly comparable with the reference.

Evaluation conventions (:func:`evaluate_petdds`)
------------------------------------------------

- Reference: the dataset's full-count OSEM ``reference.nii.gz``.  Mask M: the head, μ > 0 in ``mu_map.nii.gz``.
  (The reference is > 0 in every voxel of the field of view, OSEM leaves small positive values outside the head, so
  "reference > 0 or μ > 0" would be the whole image; μ > 0 is the head outline including skull and scalp.)
- NRMSE = ‖x − r‖₂,M / ‖r‖₂,M in %; PSNR with L = max_M r in dB; SSIM (3D, Gaussian σ = 1.5, L = max_M r,
  averaged over window centres in M) in %; the window has min(11, largest odd number <= the smallest image
  dimension) taps (7 for the 8-slice ``small_3d`` image).  NRMSE and SSIM in % as in the paper's Table I.
- Table values are mean ± sample std (ddof 1; ddof 0 for a single value) over all (test subject, realisation)
  pairs.
- OSEM: ``osem = (subsets, iterations)``, default 21 × 2 (paper baseline), initial image ones.
- MAP-EM: one-step-late MAP-EM with the 3D ``RelativeDifferencePrior`` (γ = 2, 26 neighbours) on the same subsets.
  ``map_em_beta`` is *relative*: β = map_em_beta × mean_M(Aᵀ1) (full-data sensitivity of the rebuilt model), so one
  value transfers across count levels and scanners; the absolute β is recorded in the JSON.  The one-step-late
  update fails (``ValueError`` from :func:`bundle.physics.map_em`) once β∇R outweighs the subset sensitivity in some
  voxel: on the tiny ``small_3d`` dataset 0.03 fails with 21 subsets, 0.01 runs; the default is 0.005.
- PET-DDS-δ: :class:`~bundle.inferers.PETDDSInferer` (default: DDIM with 1000 training steps and the paper's
  defaults, ``num_subsets`` = the OSEM subsets); its slice scale c_z comes from the OSEM image above
  (``initial_osem``).  Realisation r of every subject uses ``torch.Generator().manual_seed(seed + r)``.
- Timings: wall-clock seconds per reconstruction (``time.perf_counter``; CUDA synchronised after network calls).
  For PET-DDS-δ ``network_s`` is the time inside the network calls (inputs moved to ``device``, outputs moved back),
  ``projector_s`` the time inside the subset log-likelihood gradients A_kᵀ(y_k/ȳ_k − 1) (forward + back projection
  with the resolution model; :attr:`PETDDSInferer.timings`) and ``other_s`` = total − network − projector (RDP,
  proximity, preconditioner, DDIM updates, all on the CPU tensors of the data).  The OSEM image used for c_z is
  timed as the OSEM row, not again under PET-DDS-δ.
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
from typing import Any, NamedTuple

import numpy as np
import torch

from bundle.data.io import load_image, save_image
from bundle.inferers.petdds import PETDDSInferer, reconstruct_many, uncertainty_from_samples
from bundle.metrics import DataRange, bias_variance, metrics_table, nrmse, psnr, ssim, summarise
from bundle.physics import (
    GaussianResolution,
    ImageGeometry,
    Neighbourhood,
    PETForwardModel,
    PoissonDataModel,
    RelativeDifferencePrior,
    ScannerPreset,
    SinogramProjector,
    map_em,
    preset,
    select_views,
    view_subsets,
)
from bundle.physics import osem as osem_reconstruction

from .._checks import check_int as _check_int

__all__ = [
    "METHODS",
    "METRICS",
    "PETDDSCase",
    "bias_variance_study",
    "default_inferer",
    "evaluate_petdds",
    "image_metrics",
    "load_petdds_case",
    "reconstruct_petdds_file",
    "uncertainty_study",
]

METHODS: tuple[str, ...] = ("OSEM", "MAP-EM", "PET-DDS-δ")
"""Method names, exactly as they appear in tables, CSV and JSON."""
METRICS: tuple[str, ...] = ("NRMSE", "PSNR", "SSIM")
"""Metric columns of the table (NRMSE and SSIM in %, PSNR in dB)."""
_SLUG = {"OSEM": "osem", "MAP-EM": "map_em", "PET-DDS-δ": "pet_dds_delta"}
_CSV_FIELDS = ("subject", "realisation", "method", *METRICS, "time_s", "network_s", "projector_s", "other_s")

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class PETDDSCase(NamedTuple):
    """One sinogram of a petdds dataset with its rebuilt forward model, reference and evaluation mask."""

    counts: torch.Tensor
    """Measured counts, ``(n_planes, n_views, n_radial)``, float32."""
    model: PETForwardModel
    """ȳ = (f c n ⊙ a) ⊙ A(G x) + f s_full, x in activity units (module docstring)."""
    reference: torch.Tensor
    """Full-count OSEM reference, ``(n_z, n_y, n_x)``, activity units."""
    mask: torch.Tensor
    """Head mask μ > 0, ``torch.bool``, image shape."""


# ----------------------------------------------------------------------------------------------- argument checks


def _check_nonnegative(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number >= 0, got {value!r}")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_sequence(values: object, name: str, check: Callable[[object, str], Any]) -> list:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"{name} must be a non-empty sequence, got {values!r}")
    return [check(v, f"{name}[{i}]") for i, v in enumerate(values)]


def _check_osem(value: object) -> tuple[int, int]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"osem must be a (subsets, iterations) pair of ints, got {value!r}")
    return _check_int(value[0], "osem[0] (subsets)", minimum=1), _check_int(value[1], "osem[1] (iterations)", minimum=1)


def _check_methods(methods: object, network: object) -> tuple[str, ...]:
    if methods is None:
        return METHODS if network is not None else METHODS[:2]
    if isinstance(methods, str | bytes) or not isinstance(methods, Sequence) or len(methods) == 0:
        raise TypeError(f"methods must be a non-empty sequence of names from {METHODS}, got {methods!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be names from {METHODS}, got unknown {unknown}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods has repeated names: {list(methods)}")
    if "PET-DDS-δ" in methods and network is None:
        raise ValueError("methods includes 'PET-DDS-δ' but no network was given")
    return tuple(m for m in METHODS if m in methods)


def _check_network(network: object) -> Network | None:
    if network is not None and not callable(network):
        raise TypeError(f"network must be callable(x, t) -> eps (e.g. DiffusionModelUNet) or None, got {network!r}")
    return network  # type: ignore[return-value]


def _check_inferer(inferer: object) -> PETDDSInferer | None:
    if inferer is not None and not isinstance(inferer, PETDDSInferer):
        raise TypeError(f"inferer must be a PETDDSInferer or None, got {type(inferer).__name__}")
    return inferer


# ----------------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class _Dataset:
    root: Path
    manifest: dict
    datalist: dict
    scanner: ScannerPreset
    projector: SinogramProjector

    @property
    def image(self) -> ImageGeometry:
        return self.scanner.image

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.scanner.layout.shape


def _open_dataset(dataset_dir: object) -> _Dataset:
    if not isinstance(dataset_dir, str | Path):
        raise TypeError(f"dataset_dir must be a str or Path, got {type(dataset_dir).__name__}")
    root = Path(dataset_dir)
    paths = {name: root / f"{name}.json" for name in ("manifest", "datalist")}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist; build the dataset first: python -m bundle.data build petdds --output {root}"
            )
    manifest = json.loads(paths["manifest"].read_text(encoding="utf-8"))
    if manifest.get("kind") != "petdds":
        raise ValueError(f"{root} holds a {manifest.get('kind')!r} dataset, expected 'petdds'")
    if not manifest.get("complete", False):
        raise ValueError(f"{root} holds an unfinished build (manifest 'complete' is false); rerun the build")
    scanner = preset(manifest["config"]["scanner_preset"])
    stored = manifest.get("sinogram_layout", {}).get("shape_planes_views_radial")
    if stored is not None and tuple(stored) != scanner.layout.shape:
        raise ValueError(
            f"manifest sinogram shape {tuple(stored)} differs from preset {scanner.name!r} shape {scanner.layout.shape}"
        )
    projector = SinogramProjector(layout=scanner.layout, image=scanner.image)
    return _Dataset(root, manifest, json.loads(paths["datalist"].read_text(encoding="utf-8")), scanner, projector)


def _find_entry(ds: _Dataset, entry: object) -> dict:
    if isinstance(entry, Mapping):
        return dict(entry)
    if not isinstance(entry, str):
        raise TypeError(f"entry must be a datalist entry (mapping) or a sample id (str), got {type(entry).__name__}")
    for items in ds.datalist.values():
        for item in items:
            if item.get("id") == entry:
                return item
    ids = [item.get("id") for items in ds.datalist.values() for item in items]
    raise ValueError(f"no sample with id {entry!r} in {ds.root / 'datalist.json'}; ids are {ids}")


def _load_array(ds: _Dataset, relative: str, what: str) -> torch.Tensor:
    path = ds.root / relative
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    array = np.load(path, allow_pickle=False)
    if tuple(array.shape) != ds.shape:
        raise ValueError(
            f"{what} {path} has shape {tuple(array.shape)}, but the dataset's sinogram layout "
            f"({ds.scanner.name}: planes, views, radial) has shape {ds.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _model(ds: _Dataset, entry: Mapping, fraction: float) -> PETForwardModel:
    factors = _load_array(ds, entry["multiplicative_factors"], "multiplicative factors (n ⊙ a)")
    background = _load_array(ds, entry["background_full"], "background")
    scale = float(entry["count_scale_full"]) * fraction
    fwhm_mm = float(ds.manifest["config"]["fwhm_mm"])
    resolution = GaussianResolution(image_shape=ds.image.shape, fwhm_mm=fwhm_mm, voxel_size_mm=ds.image.voxel_size_mm)
    return PETForwardModel(
        projector=ds.projector, normalisation=factors * scale, resolution=resolution, background=background * fraction
    )


def _reference_and_mask(ds: _Dataset, entry: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    reference, _ = load_image(ds.root / entry["reference"])
    mu, _ = load_image(ds.root / entry["mu_map"])
    for name, image in (("reference", reference), ("mu_map", mu)):
        if tuple(image.shape) != ds.image.shape:
            raise ValueError(f"{name} of {entry.get('id')} has shape {tuple(image.shape)}, expected {ds.image.shape}")
    mask = mu > 0
    if not bool(mask.any()):
        raise ValueError(f"the μ-map of {entry.get('id')} has no voxel > 0: empty head mask")
    return reference, mask


def _low_fraction(entry: Mapping, low_index: int | None) -> tuple[str, float]:
    if low_index is None:
        return entry["sinogram_high"], 1.0
    lows = entry["sinogram_low"]
    index = _check_int(low_index, "low_index", minimum=0)
    if index >= len(lows):
        raise ValueError(f"low_index must be < {len(lows)} (realisations of {entry.get('id')}), got {index}")
    return lows[index], float(entry["low_count_fraction"])


def _case(ds: _Dataset, entry: Mapping, low_index: int | None) -> PETDDSCase:
    sinogram, fraction = _low_fraction(entry, low_index)
    counts = _load_array(ds, sinogram, "sinogram")
    reference, mask = _reference_and_mask(ds, entry)
    return PETDDSCase(counts, _model(ds, entry, fraction), reference, mask)


def load_petdds_case(dataset_dir: str | Path, entry: Mapping | str, *, low_index: int | None = None) -> PETDDSCase:
    """Load one sinogram of a petdds dataset and rebuild its forward model (module docstring).

    Args:
        dataset_dir: the dataset folder (``manifest.json``, ``datalist.json``, ``samples/``).
        entry: a datalist entry (as in ``datalist.json``) or its sample id.
        low_index: index of the low-count realisation (``sinogram_low_XX.npy``); ``None`` = the full-count sinogram.

    Returns:
        :class:`PETDDSCase` ``(counts, model, reference, mask)``.

    Raises:
        ValueError: a sinogram, factor or background file whose shape is not the layout's (both shapes named), an
            unknown id, ``low_index`` out of range, a dataset of another kind or an unfinished build.
        TypeError: ``low_index`` not an int or ``None``, ``entry`` neither a mapping nor a str.
    """
    ds = _open_dataset(dataset_dir)
    return _case(ds, _find_entry(ds, entry), low_index)


# ------------------------------------------------------------------------------------------------ reconstruction


def _subsets(case: PETDDSCase, n_subsets: int) -> tuple[list[PoissonDataModel], list[torch.Tensor]]:
    if n_subsets > case.model.n_views:
        raise ValueError(f"number of subsets ({n_subsets}) must be <= the number of views ({case.model.n_views})")
    indices = view_subsets(case.model.n_views, n_subsets)
    return [case.model.subset(i) for i in indices], [select_views(case.counts, i) for i in indices]


def _absolute_beta(models: Sequence[PoissonDataModel], mask: torch.Tensor, relative: float) -> float:
    sensitivity = torch.stack([m.sensitivity(dtype=torch.float32, device=torch.device("cpu")) for m in models]).sum(0)
    return relative * float(sensitivity[mask].mean())


def _rdp(geometry: ImageGeometry) -> RelativeDifferencePrior:
    """3D RDP, 26 neighbours with inverse-distance weights, γ = 2 (the MAP-EM baseline)."""
    return RelativeDifferencePrior(neighbourhood=Neighbourhood.FULL, voxel_size_mm=geometry.voxel_size_mm)


def default_inferer(*, num_subsets: int = 21, num_train_timesteps: int = 1000, **options: Any) -> PETDDSInferer:
    """A :class:`PETDDSInferer` with a MONAI ``DDIMScheduler(num_train_timesteps)`` (linear β schedule, as the
    training config's ``DDPMScheduler``) and the paper's defaults; ``options`` are further constructor arguments."""
    from monai.networks.schedulers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=_check_int(num_train_timesteps, "num_train_timesteps", minimum=1))
    return PETDDSInferer(scheduler=scheduler, num_subsets=num_subsets, **options)


class _TimedNetwork:
    """``network(x, t)`` on ``device`` with the time spent inside it accumulated in :attr:`seconds`."""

    def __init__(self, network: Network, device: torch.device) -> None:
        self.network = network
        self.device = device
        self.seconds = 0.0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.network(x.to(self.device), t.to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = out.to(x.device)
        self.seconds += time.perf_counter() - start
        return out


def _prepare_network(network: Network | None, device: torch.device) -> _TimedNetwork | None:
    if network is None:
        return None
    if isinstance(network, torch.nn.Module):
        network.to(device).eval()
    return _TimedNetwork(network, device)


# --------------------------------------------------------------------------------------------------------- metrics


def _ssim_kernel(shape: Sequence[int]) -> int:
    size = min(11, min(shape))
    return size if size % 2 == 1 else size - 1


def image_metrics(image: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``{"NRMSE": %, "PSNR": dB, "SSIM": %}`` of ``image`` against ``reference`` in ``mask`` (all ``(n_z, n_y, n_x)``).

    NRMSE = 100 ‖x − r‖_M / ‖r‖_M, PSNR and 3D SSIM with L = max_M r (module docstring, "Evaluation conventions").
    """
    image, reference = image.double(), reference.double()
    return {
        "NRMSE": 100.0 * float(nrmse(image, reference, mask=mask)),
        "PSNR": float(psnr(image, reference, data_range=DataRange.REFERENCE_MAX, mask=mask)),
        "SSIM": 100.0 * float(ssim(image, reference, data_range=DataRange.REFERENCE_MAX, spatial_dims=3, mask=mask,
                                   kernel_size=_ssim_kernel(image.shape))),
    }


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return summarise(list(values), correction=1 if len(values) > 1 else 0)


# --------------------------------------------------------------------------------------------------------- figures


def _panel(images: Mapping[str, torch.Tensor], path: Path, *, geometry: ImageGeometry, title: str,
           vmax: float | None = None, cmaps: Mapping[str, str] | None = None) -> Path:
    """Transverse (middle slice, top row) and coronal (middle row, bottom row) view of each image (Fig. 1 style)."""
    from matplotlib.figure import Figure

    vz, vy, vx = geometry.voxel_size_mm
    figure = Figure(figsize=(2.6 * len(images), 5.4), layout="constrained")
    axes = figure.subplots(2, len(images), squeeze=False)
    for column, (name, volume) in enumerate(images.items()):
        volume = volume.detach().cpu().float()
        top = float(volume.max()) if vmax is None or (cmaps and name in cmaps) else vmax
        cmap = (cmaps or {}).get(name, "gray_r")
        views = (volume[volume.shape[0] // 2], volume[:, volume.shape[1] // 2, :])
        for row, (view, aspect) in enumerate(zip(views, (vy / vx, vz / vx), strict=True)):
            ax = axes[row][column]
            ax.imshow(view.numpy(), cmap=cmap, vmin=0.0, vmax=max(top, 1e-12), aspect=aspect,
                      origin="upper" if row == 0 else "lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][column].set_title(name)
    axes[0][0].set_ylabel("transverse")
    axes[1][0].set_ylabel("coronal")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _bias_variance_figure(points: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.0, 4.5), layout="constrained")
    ax = figure.subplots()
    # one MAP-EM curve per β over the passes (labelled with the pass count), one PET-DDS-δ curve over δ
    curves = [(f"MAP-EM β={b:g}", "o", [p for p in points if p["method"] == "MAP-EM" and p["beta"] == b], "iterations")
              for b in dict.fromkeys(p["beta"] for p in points if p["method"] == "MAP-EM")]
    curves.append(("PET-DDS-δ (δ)", "s", [p for p in points if p["method"] == "PET-DDS-δ"], "delta"))
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
    ax.set_title(title + "\n(numbers: MAP-EM passes, PET-DDS-δ δ)", fontsize=9)
    ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


# ------------------------------------------------------------------------------------------------------ workflows


def _output_dir(output_dir: object) -> Path:
    if not isinstance(output_dir, str | Path):
        raise TypeError(f"output_dir must be a str or Path, got {type(output_dir).__name__}")
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _realisation_count(entry: Mapping, realisations: int | None) -> int:
    available = len(entry["sinogram_low"])
    if realisations is None:
        return available
    count = _check_int(realisations, "realisations", minimum=1)
    if count > available:
        raise ValueError(f"realisations must be <= {available} (stored for {entry.get('id')}), got {count}")
    return count


def _write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def evaluate_petdds(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    network: Network | None = None,
    inferer: PETDDSInferer | None = None,
    methods: Sequence[str] | None = None,
    osem: Sequence[int] = (21, 2),
    map_em_beta: float = 0.005,
    map_em_iterations: int = 2,
    realisations: int | None = None,
    split: str = "test",
    seed: int = 0,
    device: str | torch.device = "cpu",
    save_images: bool = True,
    figures: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """OSEM / MAP-EM / PET-DDS-δ on every low-count realisation of every ``split`` subject, against the reference.

    Args:
        dataset_dir: a petdds dataset.
        output_dir: folder for ``per_case.csv``, ``summary.json``, ``table.md``, ``reconstructions/*.nii.gz`` and
            ``figures/*.png`` (created).
        network: ε-predictor for PET-DDS-δ (e.g. a trained ``DiffusionModelUNet``); ``None`` = baselines only.
        inferer: the PET-DDS-δ sampler; ``None`` = :func:`default_inferer` with ``num_subsets = osem[0]``.
        methods: names from :data:`METHODS`; ``None`` = all three with a network, OSEM and MAP-EM without.
        osem: (subsets, iterations) of OSEM, also the subsets of MAP-EM (21 × 2, the paper's baseline).
        map_em_beta: relative RDP weight (β = map_em_beta × mean_M Aᵀ1, module docstring), >= 0.
        map_em_iterations: MAP-EM passes over the subsets (>= 1).
        realisations: the first this many low-count realisations per subject; ``None`` = all stored.
        split: datalist split to evaluate (``"test"``).
        seed: PET-DDS-δ uses ``torch.Generator().manual_seed(seed + realisation)``.
        device: where the network runs (the physics stays on the CPU).
        save_images: write every reconstruction as NIfTI.
        figures: write one transverse + coronal panel per subject (first realisation).
        progress: tqdm bar over (subject, realisation).

    Returns:
        ``{"rows": [per reconstruction], "summary": {method: {metric: {"mean", "std"}, "time_s": ...}},
        "table": markdown, "files": {...}, "settings": {...}}``.
    """
    network = _check_network(network)
    inferer = _check_inferer(inferer)
    chosen = _check_methods(methods, network)
    n_subsets, n_iterations = _check_osem(osem)
    beta_relative = _check_nonnegative(map_em_beta, "map_em_beta")
    map_iterations = _check_int(map_em_iterations, "map_em_iterations", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    out = _output_dir(output_dir)
    ds = _open_dataset(dataset_dir)
    if split not in ds.datalist or not ds.datalist[split]:
        raise ValueError(f"split {split!r} of {ds.root} holds no subjects (splits: {sorted(ds.datalist)})")
    entries = ds.datalist[split]
    counts = {e["id"]: _realisation_count(e, realisations) for e in entries}
    device = torch.device(device)
    timed_network = _prepare_network(network, device)
    if "PET-DDS-δ" in chosen and inferer is None:
        inferer = default_inferer(num_subsets=n_subsets)

    rows: list[dict[str, Any]] = []
    files: dict[str, Any] = {"reconstructions": [], "figures": []}
    betas: dict[str, float] = {}
    pairs = [(e, r) for e in entries for r in range(counts[e["id"]])]
    from tqdm.auto import tqdm

    for entry, r in tqdm(pairs, disable=not progress, desc="evaluate petdds"):
        case = _case(ds, entry, r)
        models, data = _subsets(case, n_subsets)
        images: dict[str, torch.Tensor] = {}
        timings: dict[str, dict[str, float]] = {}
        start = time.perf_counter()
        osem_image = osem_reconstruction(models, data, num_iterations=n_iterations)
        if "OSEM" in chosen:
            images["OSEM"], timings["OSEM"] = osem_image, {"time_s": time.perf_counter() - start}
        if "MAP-EM" in chosen:
            beta = _absolute_beta(models, case.mask, beta_relative)
            betas[f"{entry['id']}/{r}"] = beta
            start = time.perf_counter()
            images["MAP-EM"] = map_em(models, data, prior=_rdp(ds.image), beta=beta, num_iterations=map_iterations)
            timings["MAP-EM"] = {"time_s": time.perf_counter() - start}
        if "PET-DDS-δ" in chosen:
            assert inferer is not None and timed_network is not None
            timed_network.seconds = 0.0
            generator = torch.Generator().manual_seed(seed + r)
            start = time.perf_counter()
            images["PET-DDS-δ"] = inferer(case.counts, timed_network, models=case.model, initial_osem=osem_image,
                                          generator=generator)
            seconds = time.perf_counter() - start
            split_s = inferer.timings  # network / projector (A_kᵀ(y_k/ȳ_k − 1)) / rest, from the sampler's clocks
            timings["PET-DDS-δ"] = {"time_s": seconds, "network_s": timed_network.seconds,
                                    "projector_s": split_s["projector_s"],
                                    "other_s": seconds - timed_network.seconds - split_s["projector_s"]}
        for method, recon in images.items():
            row = {"subject": entry["id"], "realisation": r, "method": method,
                   **image_metrics(recon, case.reference, case.mask), **timings[method]}
            rows.append(row)
            if save_images:
                path = out / "reconstructions" / f"{entry['id']}_r{r:02d}_{_SLUG[method]}.nii.gz"
                save_image(path, recon, ds.image)
                files["reconstructions"].append(str(path))
        if figures and r == 0:
            path = _panel({"reference": case.reference, **images}, out / "figures" / f"{entry['id']}_r00.png",
                          geometry=ds.image, vmax=float(case.reference[case.mask].max()),
                          title=f"{entry['id']}, low-count realisation 0")
            files["figures"].append(str(path))

    summary: dict[str, Any] = {}
    for method in chosen:
        chosen_rows = [row for row in rows if row["method"] == method]
        summary[method] = {"n": len(chosen_rows)}
        for key in (*METRICS, "time_s", "network_s", "projector_s", "other_s"):
            values = [row[key] for row in chosen_rows if key in row]
            if values:
                mean, std = _mean_std(values)
                summary[method][key] = {"mean": mean, "std": std}
    table = metrics_table({m: {k: (summary[m][k]["mean"], summary[m][k]["std"]) for k in METRICS} for m in chosen},
                          METRICS, digits=2)
    settings = {
        "dataset_dir": str(ds.root), "split": split, "scanner_preset": ds.scanner.name, "methods": list(chosen),
        "osem": [n_subsets, n_iterations], "map_em_beta_relative": beta_relative, "map_em_beta_absolute": betas,
        "map_em_iterations": map_iterations, "realisations": counts, "seed": seed, "device": str(device),
        "units": {"NRMSE": "%", "PSNR": "dB", "SSIM": "%", "time_s": "s"},
        "mask": "mu_map > 0 (head)", "data_range": "max of the reference in the mask",
        "ssim_kernel_size": _ssim_kernel(ds.image.shape),
        "pet_dds": None if inferer is None or "PET-DDS-δ" not in chosen else {
            k: getattr(inferer, k) for k in ("num_inference_steps", "num_subsets", "steps_per_diffusion_step",
                                             "delta", "lambda_rdp", "lambda_dds", "eta")},
    }
    with (out / "per_case.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    _write_json(out / "summary.json", {"summary": summary, "settings": settings})
    (out / "table.md").write_text(
        table + "\n\nNRMSE and SSIM in %, PSNR in dB; mean ± std over (test subject, realisation); mask μ > 0.\n",
        encoding="utf-8",
    )
    files.update({"csv": str(out / "per_case.csv"), "summary": str(out / "summary.json"),
                  "table": str(out / "table.md")})
    return {"rows": rows, "summary": summary, "table": table, "files": files, "settings": settings}


def _first_test_entry(ds: _Dataset, case: Mapping | str | None) -> dict:
    if case is not None:
        return _find_entry(ds, case)
    if not ds.datalist.get("test"):
        raise ValueError(f"{ds.root} has no test subjects; pass case=")
    return ds.datalist["test"][0]


def bias_variance_study(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    case: Mapping | str | None = None,
    betas: Sequence[float] = (0.001, 0.003, 0.01),
    map_em_iterations: Sequence[int] = (2,),
    num_subsets: int = 21,
    network: Network | None = None,
    inferer: PETDDSInferer | None = None,
    deltas: Sequence[float] = (0.1, 0.2, 0.5),
    realisations: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Normalised bias against normalised std over the low-count realisations of one subject (paper's Fig. 2).

    MAP-EM (RDP, ``num_subsets`` subsets) for every relative β in ``betas`` (as ``map_em_beta`` of
    :func:`evaluate_petdds`) and every iteration count in ``map_em_iterations`` (one run per β and realisation,
    read out after each requested pass); PET-DDS-δ for every δ in ``deltas`` when a network is given (``inferer`` a
    template, default :func:`default_inferer`; realisation r uses seed ``seed + r``).  Each setting gives one point
    of :func:`bundle.metrics.bias_variance` against the full-count reference in the head mask (μ > 0).

    Returns:
        ``{"points": [{"method", "beta" | "delta", ..., "normalised_bias", "normalised_std"}], "files": {...}}``;
        writes ``bias_variance.json`` and ``bias_variance.png`` into ``output_dir``.
    """
    beta_list = _check_sequence(betas, "betas", _check_nonnegative)
    iteration_list = sorted(set(_check_sequence(map_em_iterations, "map_em_iterations",
                                                lambda v, n: _check_int(v, n, minimum=1))))
    delta_list = _check_sequence(deltas, "deltas", _check_nonnegative)
    if any(d == 0 for d in delta_list):
        raise ValueError(f"deltas must be > 0, got {list(deltas)}")
    num_subsets = _check_int(num_subsets, "num_subsets", minimum=1)
    network = _check_network(network)
    inferer = _check_inferer(inferer)
    seed = _check_int(seed, "seed", minimum=0)
    out = _output_dir(output_dir)
    ds = _open_dataset(dataset_dir)
    entry = _first_test_entry(ds, case)
    n_real = _realisation_count(entry, realisations)
    if n_real < 2:
        raise ValueError(f"bias_variance_study needs >= 2 realisations, got {n_real}")
    timed_network = _prepare_network(network, torch.device(device))
    template = (inferer or default_inferer(num_subsets=num_subsets)) if network is not None else None

    map_images: dict[tuple[float, int], list[torch.Tensor]] = {(b, i): [] for b in beta_list for i in iteration_list}
    dds_images: dict[float, list[torch.Tensor]] = {d: [] for d in delta_list} if template is not None else {}
    absolute: dict[float, list[float]] = {b: [] for b in beta_list}
    reference = mask = None
    from tqdm.auto import tqdm

    for r in tqdm(range(n_real), disable=not progress, desc="bias-variance"):
        loaded = _case(ds, entry, r)
        reference, mask = loaded.reference, loaded.mask
        models, data = _subsets(loaded, num_subsets)
        unit = _absolute_beta(models, loaded.mask, 1.0)  # mean_M Aᵀ1, once per realisation
        for beta in beta_list:
            beta_abs = beta * unit
            absolute[beta].append(beta_abs)

            def keep(iteration: int, image: torch.Tensor, beta: float = beta) -> None:
                if iteration in iteration_list:
                    map_images[(beta, iteration)].append(image)

            map_em(models, data, prior=_rdp(ds.image), beta=beta_abs, num_iterations=iteration_list[-1], callback=keep)
        if template is not None:
            t_models, t_data = _subsets(loaded, template.num_subsets)
            initial = osem_reconstruction(t_models, t_data, num_iterations=template.osem_iterations)
            for delta in delta_list:
                sampler = copy.copy(template)
                sampler.delta = delta
                generator = torch.Generator().manual_seed(seed + r)
                dds_images[delta].append(sampler(loaded.counts, timed_network, models=loaded.model,
                                                 initial_osem=initial, generator=generator))
    assert reference is not None and mask is not None

    def point(images: list[torch.Tensor]) -> dict[str, float]:
        result = bias_variance(torch.stack(images).double(), reference.double(), mask=mask)
        return {"normalised_bias": result["normalised_bias"], "normalised_std": result["normalised_std"]}

    points = [{"method": "MAP-EM", "beta": b, "beta_absolute_mean": float(np.mean(absolute[b])), "iterations": i,
               **point(map_images[(b, i)])} for b in beta_list for i in iteration_list]
    points += [{"method": "PET-DDS-δ", "delta": d, **point(images)} for d, images in dds_images.items()]
    json_path = _write_json(out / "bias_variance.json", {
        "subject": entry["id"], "realisations": n_real, "num_subsets": num_subsets, "mask": "mu_map > 0 (head)",
        "definitions": "bundle.metrics.bias_variance (NB = ‖mean − r‖/‖r‖, NSD = sqrt(mean σ²)/mean r, over M)",
        "points": points,
    })
    figure = _bias_variance_figure(points, out / "bias_variance.png",
                                   title=f"{entry['id']}: {n_real} low-count realisations")
    return {"points": points, "files": {"json": str(json_path), "figure": str(figure)}}


def uncertainty_study(
    dataset_dir: str | Path,
    *,
    network: Network,
    output_dir: str | Path,
    inferer: PETDDSInferer | None = None,
    case: Mapping | str | None = None,
    low_index: int = 0,
    seeds: int | Sequence[int] = 25,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """K sampler seeds of PET-DDS-δ on one low-count sinogram -> mean and voxel-wise CV images (paper: 25 seeds).

    ``seeds`` an int K means seeds 0 … K − 1.  Writes ``uncertainty_mean.nii.gz``, ``uncertainty_cv.nii.gz`` and
    ``uncertainty.png`` (transverse + coronal of reference, mean and CV) into ``output_dir``.

    Returns:
        ``{"seeds": [...], "mean_cv_in_mask": float, "files": {...}}``.
    """
    if network is None:
        raise ValueError("uncertainty_study needs a network (PET-DDS-δ samples)")
    network = _check_network(network)
    inferer = _check_inferer(inferer)
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        seed_list = list(range(_check_int(seeds, "seeds", minimum=2)))
    else:
        seed_list = _check_sequence(seeds, "seeds", lambda v, n: _check_int(v, n, minimum=0))
        if len(seed_list) < 2:
            raise ValueError(f"seeds must hold >= 2 seeds, got {seed_list}")
    out = _output_dir(output_dir)
    ds = _open_dataset(dataset_dir)
    entry = _first_test_entry(ds, case)
    loaded = _case(ds, entry, low_index)
    sampler = inferer or default_inferer()
    samples = reconstruct_many(sampler, loaded.counts, _prepare_network(network, torch.device(device)),
                               models=loaded.model, seeds=seed_list)
    mean, cv = uncertainty_from_samples(samples)
    files = {"mean": out / "uncertainty_mean.nii.gz", "cv": out / "uncertainty_cv.nii.gz"}
    save_image(files["mean"], mean, ds.image)
    save_image(files["cv"], cv, ds.image)
    # display: CV inside the head (outside it the mean is ~0 and the CV explodes), clipped at its 99th percentile
    top = float(torch.quantile(cv[loaded.mask].double(), 0.99))
    cv_head = torch.where(loaded.mask, cv.clamp(max=top), torch.zeros_like(cv))
    files["figure"] = _panel({"reference": loaded.reference, "mean": mean, "CV (head)": cv_head},
                             out / "uncertainty.png", geometry=ds.image,
                             vmax=float(loaded.reference[loaded.mask].max()), cmaps={"CV (head)": "magma"},
                             title=f"{entry['id']}: {len(seed_list)} seeds; CV shown in [0, {top:.2f}] (99th pct.)")
    return {"seeds": seed_list, "mean_cv_in_mask": float(cv[loaded.mask].mean()),
            "files": {k: str(v) for k, v in files.items()}}


def reconstruct_petdds_file(
    dataset_dir: str | Path,
    *,
    case: Mapping | str,
    sinogram: str | Path,
    network: Network,
    output_file: str | Path,
    inferer: PETDDSInferer | None = None,
    count_fraction: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Path:
    """PET-DDS-δ of one sinogram file with the forward model of dataset sample ``case``; writes a NIfTI.

    ``count_fraction`` (f in the module docstring) scales c·n⊙a and the background; ``None`` = taken from the
    file: 1 for the sample's full-count sinogram, ``low_count_fraction`` for one of its low-count realisations
    (a ``ValueError`` for any other file).  A sinogram whose shape differs from the layout raises ``ValueError``.
    """
    network = _check_network(network)
    if network is None:
        raise ValueError("reconstruct_petdds_file needs a network")
    inferer = _check_inferer(inferer)
    seed = _check_int(seed, "seed", minimum=0)
    ds = _open_dataset(dataset_dir)
    entry = _find_entry(ds, case)
    path = Path(sinogram)
    if count_fraction is None:
        resolved = path.resolve()
        if resolved == (ds.root / entry["sinogram_high"]).resolve():
            count_fraction = 1.0
        elif resolved in {(ds.root / p).resolve() for p in entry["sinogram_low"]}:
            count_fraction = float(entry["low_count_fraction"])
        else:
            raise ValueError(f"{path} is not a sinogram of sample {entry.get('id')}; pass count_fraction")
    fraction = _check_nonnegative(count_fraction, "count_fraction")
    if fraction == 0:
        raise ValueError("count_fraction must be > 0")
    counts = _load_array(ds, str(path.resolve()), "sinogram")
    model = _model(ds, entry, fraction)
    sampler = inferer or default_inferer()
    image = sampler(counts, _prepare_network(network, torch.device(device)), models=model,
                    generator=torch.Generator().manual_seed(seed))
    output = Path(output_file)
    save_image(output, image, ds.image)
    return output
