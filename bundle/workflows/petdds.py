"""PET-DDS-δ evaluation study on a ``petdds`` dataset (``python -m bundle.data build petdds``): the OSEM / MAP-EM /
PET-DDS-δ table.  The bias-variance and uncertainty studies are in :mod:`bundle.workflows.petdds_studies`; one
sinogram file is reconstructed by :func:`bundle.app.petdds.reconstruct_petdds_file`.

Cases (counts, forward model rebuilt from the stored factors, reference, head mask) are read by
:class:`bundle.data.petdds.PETDDSDataset` (module docstring there: ȳ = (f c n ⊙ a) ⊙ A(G x) + f s_full, x in the
activity units of the reference, so every reconstruction is directly comparable with it).

Evaluation conventions (:func:`evaluate_petdds`)
------------------------------------------------

- Reference: the dataset's full-count OSEM ``reference.nii.gz``.  Mask M: the head, μ > 0 in ``mu_map.nii.gz``.
  (The reference is > 0 in every voxel of the field of view, OSEM leaves small positive values outside the head, so
  "reference > 0 or μ > 0" would be the whole image; μ > 0 is the head outline including skull and scalp.)
- Scores: :func:`bundle.metrics.image_metrics` (the project's convention, ``docs/metrics.md``): NRMSE =
  ‖x − r‖₂,M / ‖r‖₂,M; PSNR with L = max_M r in dB; SSIM (3D, Gaussian σ = 1.5, L = max_M r, averaged over window
  centres in M); the window has min(11, largest odd number <= the smallest image dimension) taps (7 for the
  8-slice ``small_3d`` image).  NRMSE and SSIM as fractions; ``metric_convention="petdds"`` gives them in % as in
  the paper's Table I (and the tables in ``docs/petdds.md``).
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
- Samples (``samples`` = N > 1): N PET-DDS-δ reconstructions of every low-count sinogram, sample k of realisation r
  with seed ``seed + r + SAMPLE_SEED_STRIDE · k`` (:func:`sample_seeds`; k = 0 is the single-sample seed above, so
  the "PET-DDS-δ" row, sample 0, stays comparable with single-sample runs), all sharing one OSEM image for c_z.  The
  row "PET-DDS-δ (mean of N)" scores the voxel-wise mean; the voxel-wise CV = std / mean (population std,
  :func:`bundle.inferers.petdds.uncertainty_from_samples`, 0 where the mean is 0) is saved per case, next to the
  mean and every sample.  The mean row's times are the sums over the N samples; the per-sample times are in
  ``summary.json`` (``sample_timings``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bundle.data.brain import FDG_ACTIVITY_UNIT
from bundle.data.io import save_image
from bundle.data.petdds import PETDDSCase, PETDDSDataset
from bundle.evaluation import mean_std, metrics_table, output_folder, volume_panel, write_csv, write_json
from bundle.inferers.petdds import (
    Network,
    PETDDSInferer,
    TimedNetwork,
    check_inferer,
    default_inferer,
    timed_network,
    uncertainty_from_samples,
)
from bundle.metrics import MetricConvention, image_metrics, ssim_kernel_size, units
from bundle.physics import ImageGeometry, Neighbourhood, PoissonDataModel, RelativeDifferencePrior, map_em
from bundle.physics import osem as osem_reconstruction
from bundle.progress import progress_bar

from .._checks import check_choice, check_nonnegative
from .._checks import check_int as _check_int

__all__ = [
    "METHODS",
    "METRICS",
    "SAMPLE_SEED_STRIDE",
    "CaseReconstructions",
    "absolute_beta",
    "cv_display",
    "evaluate_petdds",
    "mean_label",
    "rdp_prior",
    "reconstruct_case",
    "sample_seeds",
    "summarise_rows",
]

METHODS: tuple[str, ...] = ("OSEM", "MAP-EM", "PET-DDS-δ")
"""Method names, exactly as they appear in tables, CSV and JSON."""
METRICS: tuple[str, ...] = ("NRMSE", "PSNR", "SSIM")
"""Metric columns of the table (NRMSE and SSIM in %, PSNR in dB)."""
SAMPLE_SEED_STRIDE = 100_000
"""Seed offset between the samples of one realisation (:func:`sample_seeds`); > any realisation count."""
_SLUG = {"OSEM": "osem", "MAP-EM": "map_em", "PET-DDS-δ": "pet_dds_delta"}
_TIME_KEYS = ("time_s", "network_s", "projector_s", "other_s")
_CSV_FIELDS = ("subject", "realisation", "method", *METRICS, "time_s", "network_s", "projector_s", "other_s")


# ----------------------------------------------------------------------------------------------- argument checks


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


# ------------------------------------------------------------------------------------------- MAP-EM baseline


def absolute_beta(models: Sequence[PoissonDataModel], mask: torch.Tensor, relative: float) -> float:
    """β = ``relative`` × mean_M Aᵀ1: the RDP weight of MAP-EM relative to the full-data sensitivity Σ_k A_kᵀ1 of
    ``models`` averaged over the mask M (module docstring)."""
    sensitivity = torch.stack([m.sensitivity(dtype=torch.float32, device=torch.device("cpu")) for m in models]).sum(0)
    return relative * float(sensitivity[mask].mean())


def rdp_prior(geometry: ImageGeometry) -> RelativeDifferencePrior:
    """3D RDP, 26 neighbours with inverse-distance weights, γ = 2 (the MAP-EM baseline)."""
    return RelativeDifferencePrior(neighbourhood=Neighbourhood.FULL, voxel_size_mm=geometry.voxel_size_mm)


# ------------------------------------------------------------------------------------------ one case, N samples


def sample_seeds(seed: int, realisation: int, samples: int) -> list[int]:
    """Seeds of the ``samples`` PET-DDS-δ samples of low-count realisation ``realisation``:
    ``seed + realisation + SAMPLE_SEED_STRIDE · k`` for k = 0 … samples − 1 (k = 0: the single-sample seed)."""
    seed = _check_int(seed, "seed", minimum=0)
    realisation = _check_int(realisation, "realisation", minimum=0)
    if realisation >= SAMPLE_SEED_STRIDE:
        raise ValueError(f"realisation must be < SAMPLE_SEED_STRIDE ({SAMPLE_SEED_STRIDE}), got {realisation}")
    return [seed + realisation + SAMPLE_SEED_STRIDE * k
            for k in range(_check_int(samples, "samples", minimum=1))]


def mean_label(samples: int) -> str:
    """Table name of the mean of ``samples`` PET-DDS-δ samples: ``"PET-DDS-δ (mean of N)"``."""
    return f"PET-DDS-δ (mean of {samples})"


def cv_display(cv: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The CV image for display: inside the head mask (outside it the mean is ~0 and the CV explodes), clipped at
    its 99th percentile there -> ``(image, clip value)``."""
    top = float(torch.quantile(cv[mask].double(), 0.99))
    return torch.where(mask, cv.clamp(max=top), torch.zeros_like(cv)), top


@dataclass
class CaseReconstructions:
    """What :func:`reconstruct_case` made of one low-count sinogram."""

    images: dict[str, torch.Tensor] = field(default_factory=dict)
    """Method name (:data:`METHODS`, plus :func:`mean_label` for N > 1) -> image ``(n_z, n_y, n_x)``."""
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    """Method name -> seconds (module docstring; the mean row sums its samples)."""
    samples: torch.Tensor | None = None
    """The N PET-DDS-δ samples ``(N, n_z, n_y, n_x)`` (``None`` without PET-DDS-δ)."""
    cv: torch.Tensor | None = None
    """Voxel-wise CV = std / mean of the samples (population std; only for N > 1)."""
    sample_timings: list[dict[str, float]] = field(default_factory=list)
    """Seconds of each sample (``time_s``, ``network_s``, ``projector_s``, ``other_s``)."""
    beta: float | None = None
    """Absolute MAP-EM β used (``None`` without MAP-EM)."""


def reconstruct_case(
    case: PETDDSCase,
    *,
    methods: Sequence[str],
    osem: tuple[int, int],
    map_em_beta: float,
    map_em_iterations: int,
    geometry: ImageGeometry,
    network: TimedNetwork | None = None,
    inferer: PETDDSInferer | None = None,
    seeds: Sequence[int] = (0,),
) -> CaseReconstructions:
    """OSEM / MAP-EM / PET-DDS-δ of one low-count sinogram, the conventions of :func:`evaluate_petdds`.

    The OSEM image (``osem`` = (subsets, iterations)) is always computed: it is the OSEM row and PET-DDS-δ's c_z.
    MAP-EM uses the relative ``map_em_beta`` on the same subsets.  PET-DDS-δ draws one sample per seed in ``seeds``
    (``torch.Generator().manual_seed(s)``); with more than one, the mean (:func:`mean_label`) is added and the CV
    kept.  ``methods`` is a checked subset of :data:`METHODS`; ``network`` a :class:`TimedNetwork` and ``inferer``
    a sampler when PET-DDS-δ is among them.
    """
    n_subsets, n_iterations = osem
    models, data = case.subsets(n_subsets)
    result = CaseReconstructions()
    start = time.perf_counter()
    osem_image = osem_reconstruction(models, data, num_iterations=n_iterations)
    if "OSEM" in methods:
        result.images["OSEM"], result.timings["OSEM"] = osem_image, {"time_s": time.perf_counter() - start}
    if "MAP-EM" in methods:
        result.beta = absolute_beta(models, case.mask, map_em_beta)
        start = time.perf_counter()
        result.images["MAP-EM"] = map_em(models, data, prior=rdp_prior(geometry), beta=result.beta,
                                         num_iterations=map_em_iterations)
        result.timings["MAP-EM"] = {"time_s": time.perf_counter() - start}
    if "PET-DDS-δ" in methods:
        if network is None or inferer is None:
            raise ValueError("reconstruct_case: PET-DDS-δ needs a network and an inferer")
        samples = []
        for seed in seeds:
            network.seconds = 0.0
            start = time.perf_counter()
            samples.append(inferer(case.counts, network, models=case.model, initial_osem=osem_image,
                                   generator=torch.Generator().manual_seed(seed)))
            seconds = time.perf_counter() - start
            projector = inferer.timings["projector_s"]  # A_kᵀ(y_k/ȳ_k − 1), from the sampler's clocks
            result.sample_timings.append({"time_s": seconds, "network_s": network.seconds, "projector_s": projector,
                                          "other_s": seconds - network.seconds - projector})
        result.samples = torch.stack(samples)
        result.images["PET-DDS-δ"], result.timings["PET-DDS-δ"] = samples[0], dict(result.sample_timings[0])
        if len(samples) > 1:
            mean, result.cv = uncertainty_from_samples(result.samples)
            label = mean_label(len(samples))
            result.images[label] = mean
            result.timings[label] = {k: sum(t[k] for t in result.sample_timings) for k in _TIME_KEYS}
    return result


def summarise_rows(rows: Sequence[dict[str, Any]], names: Sequence[str],
                   keys: Sequence[str] = (*METRICS, *_TIME_KEYS)) -> dict[str, Any]:
    """``{name: {"n": rows, key: {"mean", "std"}}}`` over the ``rows`` of each method ``name`` (ddof 1)."""
    summary: dict[str, Any] = {}
    for name in names:
        chosen = [row for row in rows if row["method"] == name]
        summary[name] = {"n": len(chosen)}
        for key in keys:
            values = [row[key] for row in chosen if key in row]
            if values:
                mean, std = mean_std(values)
                summary[name][key] = {"mean": mean, "std": std}
    return summary


# -------------------------------------------------------------------------------------------------- evaluation


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
    samples: int = 1,
    split: str = "test",
    seed: int = 0,
    device: str | torch.device = "cpu",
    save_images: bool = True,
    figures: bool = True,
    progress: bool = False,
    metric_convention: MetricConvention | str = MetricConvention.DEFAULT,
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
        samples: N >= 1 PET-DDS-δ samples per sinogram (module docstring, "Samples"): N > 1 adds the row
            ``"PET-DDS-δ (mean of N)"`` and writes ``*_pet_dds_delta_mean.nii.gz`` / ``*_pet_dds_delta_cv.nii.gz``
            (and ``*_pet_dds_delta_sampleKK.nii.gz`` for k >= 1) per case.
        split: datalist split to evaluate (``"test"``).
        seed: sample k of realisation r uses ``torch.Generator().manual_seed(seed + r + SAMPLE_SEED_STRIDE · k)``.
        device: where the network runs (the physics stays on the CPU).
        save_images: write every reconstruction as NIfTI.
        figures: write one transverse + coronal panel per subject (first realisation; with the mean and the CV in
            the head for N > 1).
        progress: progress bar (:mod:`bundle.progress`) over (subject, realisation).
        metric_convention: :class:`~bundle.metrics.MetricConvention` of the scores (``"petdds"``: the paper's
            NRMSE and SSIM in %, as the tables in ``docs/petdds.md``).

    Returns:
        ``{"rows": [per reconstruction], "summary": {method: {metric: {"mean", "std"}, "time_s": ...}},
        "table": markdown, "files": {...}, "settings": {...}}``.
    """
    device = torch.device(device)
    timed = timed_network(network, device)
    inferer = check_inferer(inferer)
    chosen = _check_methods(methods, timed)
    n_subsets, n_iterations = _check_osem(osem)
    beta_relative = check_nonnegative(map_em_beta, "map_em_beta")
    map_iterations = _check_int(map_em_iterations, "map_em_iterations", minimum=1)
    n_samples = _check_int(samples, "samples", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    convention = check_choice(metric_convention, MetricConvention, "metric_convention")
    metric_units = units(convention)
    percent = metric_units["SSIM"] == "%"
    out = output_folder(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
    if split not in ds.datalist or not ds.datalist[split]:
        raise ValueError(f"split {split!r} of {ds.root} holds no subjects (splits: {sorted(ds.datalist)})")
    entries = ds.datalist[split]
    counts = {e["id"]: ds.realisation_count(e, realisations) for e in entries}
    if "PET-DDS-δ" in chosen and inferer is None:
        inferer = default_inferer(num_subsets=n_subsets)
    names = [*chosen, *([mean_label(n_samples)] if "PET-DDS-δ" in chosen and n_samples > 1 else [])]

    rows: list[dict[str, Any]] = []
    files: dict[str, Any] = {"reconstructions": [], "figures": []}
    betas: dict[str, float] = {}
    sample_timings: dict[str, list[dict[str, float]]] = {}
    pairs = [(e, r) for e in entries for r in range(counts[e["id"]])]
    for entry, r in progress_bar(pairs, progress=progress, desc="evaluate petdds", unit="case"):
        case = ds.case(entry, r)
        key = f"{entry['id']}/{r}"
        result = reconstruct_case(case, methods=chosen, osem=(n_subsets, n_iterations), map_em_beta=beta_relative,
                                  map_em_iterations=map_iterations, geometry=ds.image, network=timed,
                                  inferer=inferer, seeds=sample_seeds(seed, r, n_samples))
        if result.beta is not None:
            betas[key] = result.beta
        if result.sample_timings:
            sample_timings[key] = result.sample_timings
        for method, recon in result.images.items():
            rows.append({"subject": entry["id"], "realisation": r, "method": method,
                         **image_metrics(recon, case.reference, mask=case.mask, convention=convention),
                         **result.timings[method]})
        if save_images:
            stem = out / "reconstructions" / f"{entry['id']}_r{r:02d}"
            extra = {}
            if result.cv is not None:
                assert result.samples is not None
                extra = {f"pet_dds_delta_sample{k:02d}": result.samples[k] for k in range(1, n_samples)}
                extra["pet_dds_delta_cv"] = result.cv
            images = {(_SLUG[m] if m in _SLUG else "pet_dds_delta_mean"): v for m, v in result.images.items()}
            for slug, image in {**images, **extra}.items():
                path = Path(f"{stem}_{slug}.nii.gz")
                save_image(path, image, ds.image)
                files["reconstructions"].append(str(path))
        if figures and r == 0:
            panel = {"reference": case.reference, **result.images}
            cmaps = {}
            if result.cv is not None:
                panel["CV (head)"], top = cv_display(result.cv, case.mask)
                cmaps["CV (head)"] = "magma"
            title = f"{entry['id']}, low-count realisation 0"
            path = volume_panel(panel, out / "figures" / f"{entry['id']}_r00.png", geometry=ds.image,
                                vmax=float(case.reference[case.mask].max()), cmaps=cmaps, unit=FDG_ACTIVITY_UNIT,
                                title=title if result.cv is None else f"{title}; CV shown in [0, {top:.2f}]")
            files["figures"].append(str(path))

    summary = summarise_rows(rows, names)
    table = metrics_table({m: {k: (summary[m][k]["mean"], summary[m][k]["std"]) for k in METRICS} for m in names},
                          METRICS, digits={"PSNR": 2, **dict.fromkeys(("NRMSE", "SSIM"), 2 if percent else 4)})
    settings = {
        "dataset_dir": str(ds.root), "split": split, "scanner_preset": ds.scanner.name, "methods": list(chosen),
        "osem": [n_subsets, n_iterations], "map_em_beta_relative": beta_relative, "map_em_beta_absolute": betas,
        "map_em_iterations": map_iterations, "realisations": counts, "seed": seed, "device": str(device),
        "samples": n_samples,
        "sample_seeds": "seed + realisation + SAMPLE_SEED_STRIDE * k" + f" (stride {SAMPLE_SEED_STRIDE})",
        "metric_convention": convention.value, "units": {**metric_units, "time_s": "s"},
        "mask": "mu_map > 0 (head)", "data_range": "max of the reference in the mask",
        "ssim_kernel_size": ssim_kernel_size(tuple(n for n in ds.image.shape if n > 1)),
        "pet_dds": None if inferer is None or "PET-DDS-δ" not in chosen else {
            k: getattr(inferer, k) for k in ("num_inference_steps", "num_subsets", "steps_per_diffusion_step",
                                             "delta", "lambda_rdp", "lambda_dds", "eta")},
    }
    write_csv(out / "per_case.csv", _CSV_FIELDS, rows)
    write_json(out / "summary.json", {"summary": summary, "settings": settings, "sample_timings": sample_timings})
    (out / "table.md").write_text(
        table + f"\n\nNRMSE and SSIM {'in %' if percent else 'as fractions'}, PSNR in dB (metric convention "
        f"{convention.value!r}); mean ± std over (test subject, realisation); mask μ > 0.\n",
        encoding="utf-8",
    )
    files.update({"csv": str(out / "per_case.csv"), "summary": str(out / "summary.json"),
                  "table": str(out / "table.md")})
    return {"rows": rows, "summary": summary, "table": table, "files": files, "settings": settings}
