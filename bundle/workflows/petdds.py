"""PET-DDS-δ reconstruction and evaluation workflows on a ``petdds`` dataset (``python -m bundle.data build petdds``).

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
"""

from __future__ import annotations

import copy
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bundle.data.io import save_image
from bundle.data.petdds import PETDDSCase, PETDDSDataset
from bundle.evaluation import bias_variance_figure, mean_std, metrics_table, volume_panel, write_csv, write_json
from bundle.inferers.petdds import PETDDSInferer, default_inferer, reconstruct_many, uncertainty_from_samples
from bundle.metrics import MetricConvention, bias_variance, image_metrics, ssim_kernel_size, units
from bundle.physics import (
    ImageGeometry,
    Neighbourhood,
    PoissonDataModel,
    RelativeDifferencePrior,
    map_em,
    select_views,
    view_subsets,
)
from bundle.physics import osem as osem_reconstruction

from .._checks import check_choice, check_nonnegative, check_sequence
from .._checks import check_int as _check_int

__all__ = [
    "METHODS",
    "METRICS",
    "bias_variance_study",
    "evaluate_petdds",
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


def _check_network(network: object) -> Network | None:
    if network is not None and not callable(network):
        raise TypeError(f"network must be callable(x, t) -> eps (e.g. DiffusionModelUNet) or None, got {network!r}")
    return network  # type: ignore[return-value]


def _check_inferer(inferer: object) -> PETDDSInferer | None:
    if inferer is not None and not isinstance(inferer, PETDDSInferer):
        raise TypeError(f"inferer must be a PETDDSInferer or None, got {type(inferer).__name__}")
    return inferer


# ----------------------------------------------------------------------------------------------------- dataset


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
        split: datalist split to evaluate (``"test"``).
        seed: PET-DDS-δ uses ``torch.Generator().manual_seed(seed + realisation)``.
        device: where the network runs (the physics stays on the CPU).
        save_images: write every reconstruction as NIfTI.
        figures: write one transverse + coronal panel per subject (first realisation).
        progress: tqdm bar over (subject, realisation).
        metric_convention: :class:`~bundle.metrics.MetricConvention` of the scores (``"petdds"``: the paper's
            NRMSE and SSIM in %, as the tables in ``docs/petdds.md``).

    Returns:
        ``{"rows": [per reconstruction], "summary": {method: {metric: {"mean", "std"}, "time_s": ...}},
        "table": markdown, "files": {...}, "settings": {...}}``.
    """
    network = _check_network(network)
    inferer = _check_inferer(inferer)
    chosen = _check_methods(methods, network)
    n_subsets, n_iterations = _check_osem(osem)
    beta_relative = check_nonnegative(map_em_beta, "map_em_beta")
    map_iterations = _check_int(map_em_iterations, "map_em_iterations", minimum=1)
    seed = _check_int(seed, "seed", minimum=0)
    convention = check_choice(metric_convention, MetricConvention, "metric_convention")
    metric_units = units(convention)
    percent = metric_units["SSIM"] == "%"
    out = _output_dir(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
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
        case = ds.case(entry, r)
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
                   **image_metrics(recon, case.reference, mask=case.mask, convention=convention),
                   **timings[method]}
            rows.append(row)
            if save_images:
                path = out / "reconstructions" / f"{entry['id']}_r{r:02d}_{_SLUG[method]}.nii.gz"
                save_image(path, recon, ds.image)
                files["reconstructions"].append(str(path))
        if figures and r == 0:
            path = volume_panel({"reference": case.reference, **images}, out / "figures" / f"{entry['id']}_r00.png",
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
                mean, std = mean_std(values)
                summary[method][key] = {"mean": mean, "std": std}
    table = metrics_table({m: {k: (summary[m][k]["mean"], summary[m][k]["std"]) for k in METRICS} for m in chosen},
                          METRICS, digits={"PSNR": 2, **dict.fromkeys(("NRMSE", "SSIM"), 2 if percent else 4)})
    settings = {
        "dataset_dir": str(ds.root), "split": split, "scanner_preset": ds.scanner.name, "methods": list(chosen),
        "osem": [n_subsets, n_iterations], "map_em_beta_relative": beta_relative, "map_em_beta_absolute": betas,
        "map_em_iterations": map_iterations, "realisations": counts, "seed": seed, "device": str(device),
        "metric_convention": convention.value, "units": {**metric_units, "time_s": "s"},
        "mask": "mu_map > 0 (head)", "data_range": "max of the reference in the mask",
        "ssim_kernel_size": ssim_kernel_size(tuple(n for n in ds.image.shape if n > 1)),
        "pet_dds": None if inferer is None or "PET-DDS-δ" not in chosen else {
            k: getattr(inferer, k) for k in ("num_inference_steps", "num_subsets", "steps_per_diffusion_step",
                                             "delta", "lambda_rdp", "lambda_dds", "eta")},
    }
    write_csv(out / "per_case.csv", _CSV_FIELDS, rows)
    write_json(out / "summary.json", {"summary": summary, "settings": settings})
    (out / "table.md").write_text(
        table + f"\n\nNRMSE and SSIM {'in %' if percent else 'as fractions'}, PSNR in dB (metric convention "
        f"{convention.value!r}); mean ± std over (test subject, realisation); mask μ > 0.\n",
        encoding="utf-8",
    )
    files.update({"csv": str(out / "per_case.csv"), "summary": str(out / "summary.json"),
                  "table": str(out / "table.md")})
    return {"rows": rows, "summary": summary, "table": table, "files": files, "settings": settings}


def _first_test_entry(ds: PETDDSDataset, case: Mapping | str | None) -> dict:
    if case is not None:
        return ds.find_entry(case)
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
    beta_list = check_sequence(betas, "betas", check_nonnegative)
    iteration_list = sorted(set(check_sequence(map_em_iterations, "map_em_iterations",
                                                lambda v, n: _check_int(v, n, minimum=1))))
    delta_list = check_sequence(deltas, "deltas", check_nonnegative)
    if any(d == 0 for d in delta_list):
        raise ValueError(f"deltas must be > 0, got {list(deltas)}")
    num_subsets = _check_int(num_subsets, "num_subsets", minimum=1)
    network = _check_network(network)
    inferer = _check_inferer(inferer)
    seed = _check_int(seed, "seed", minimum=0)
    out = _output_dir(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
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
        loaded = ds.case(entry, r)
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
    json_path = write_json(out / "bias_variance.json", {
        "subject": entry["id"], "realisations": n_real, "num_subsets": num_subsets, "mask": "mu_map > 0 (head)",
        "definitions": "bundle.metrics.bias_variance (NB = ‖mean − r‖/‖r‖, NSD = sqrt(mean σ²)/mean r, over M)",
        "points": points,
    })
    figure = bias_variance_figure(points, out / "bias_variance.png",
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
        seed_list = check_sequence(seeds, "seeds", lambda v, n: _check_int(v, n, minimum=0))
        if len(seed_list) < 2:
            raise ValueError(f"seeds must hold >= 2 seeds, got {seed_list}")
    out = _output_dir(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
    entry = _first_test_entry(ds, case)
    loaded = ds.case(entry, low_index)
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
    files["figure"] = volume_panel({"reference": loaded.reference, "mean": mean, "CV (head)": cv_head},
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
    image = sampler(counts, _prepare_network(network, torch.device(device)), models=model,
                    generator=torch.Generator().manual_seed(seed))
    output = Path(output_file)
    save_image(output, image, ds.image)
    return output
