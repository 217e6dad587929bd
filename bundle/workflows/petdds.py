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
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bundle.data.io import save_image
from bundle.data.petdds import PETDDSDataset
from bundle.evaluation import mean_std, metrics_table, output_folder, volume_panel, write_csv, write_json
from bundle.inferers.petdds import Network, PETDDSInferer, check_inferer, default_inferer, timed_network
from bundle.metrics import MetricConvention, image_metrics, ssim_kernel_size, units
from bundle.physics import ImageGeometry, Neighbourhood, PoissonDataModel, RelativeDifferencePrior, map_em
from bundle.physics import osem as osem_reconstruction

from .._checks import check_choice, check_nonnegative
from .._checks import check_int as _check_int

__all__ = [
    "METHODS",
    "METRICS",
    "absolute_beta",
    "evaluate_petdds",
    "rdp_prior",
]

METHODS: tuple[str, ...] = ("OSEM", "MAP-EM", "PET-DDS-δ")
"""Method names, exactly as they appear in tables, CSV and JSON."""
METRICS: tuple[str, ...] = ("NRMSE", "PSNR", "SSIM")
"""Metric columns of the table (NRMSE and SSIM in %, PSNR in dB)."""
_SLUG = {"OSEM": "osem", "MAP-EM": "map_em", "PET-DDS-δ": "pet_dds_delta"}
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
    device = torch.device(device)
    timed = timed_network(network, device)
    inferer = check_inferer(inferer)
    chosen = _check_methods(methods, timed)
    n_subsets, n_iterations = _check_osem(osem)
    beta_relative = check_nonnegative(map_em_beta, "map_em_beta")
    map_iterations = _check_int(map_em_iterations, "map_em_iterations", minimum=1)
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

    rows: list[dict[str, Any]] = []
    files: dict[str, Any] = {"reconstructions": [], "figures": []}
    betas: dict[str, float] = {}
    pairs = [(e, r) for e in entries for r in range(counts[e["id"]])]
    from tqdm.auto import tqdm

    for entry, r in tqdm(pairs, disable=not progress, desc="evaluate petdds"):
        case = ds.case(entry, r)
        models, data = case.subsets(n_subsets)
        images: dict[str, torch.Tensor] = {}
        timings: dict[str, dict[str, float]] = {}
        start = time.perf_counter()
        osem_image = osem_reconstruction(models, data, num_iterations=n_iterations)
        if "OSEM" in chosen:
            images["OSEM"], timings["OSEM"] = osem_image, {"time_s": time.perf_counter() - start}
        if "MAP-EM" in chosen:
            beta = absolute_beta(models, case.mask, beta_relative)
            betas[f"{entry['id']}/{r}"] = beta
            start = time.perf_counter()
            images["MAP-EM"] = map_em(models, data, prior=rdp_prior(ds.image), beta=beta, num_iterations=map_iterations)
            timings["MAP-EM"] = {"time_s": time.perf_counter() - start}
        if "PET-DDS-δ" in chosen:
            assert inferer is not None and timed is not None
            timed.seconds = 0.0
            generator = torch.Generator().manual_seed(seed + r)
            start = time.perf_counter()
            images["PET-DDS-δ"] = inferer(case.counts, timed, models=case.model, initial_osem=osem_image,
                                          generator=generator)
            seconds = time.perf_counter() - start
            split_s = inferer.timings  # network / projector (A_kᵀ(y_k/ȳ_k − 1)) / rest, from the sampler's clocks
            timings["PET-DDS-δ"] = {"time_s": seconds, "network_s": timed.seconds,
                                    "projector_s": split_s["projector_s"],
                                    "other_s": seconds - timed.seconds - split_s["projector_s"]}
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


