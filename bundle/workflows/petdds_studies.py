"""PET-DDS-δ studies beyond the table of :func:`bundle.workflows.petdds.evaluate_petdds` (same dataset, mask and
MAP-EM conventions, module docstring there): the bias-variance trade-off over the low-count realisations of one
subject (paper's Fig. 2), the voxel-wise uncertainty over sampler seeds and the count sweep (OSEM / MAP-EM /
PET-DDS-δ against the count level).  Importing runs nothing.

Count sweep (:func:`count_sweep`)
---------------------------------

The dataset's low-count sinograms are Poisson draws of f · ȳ_full (f = ``low_count_fraction``), and its rebuilt
model at fraction f is ȳ_f = (f c n ⊙ a) ⊙ A(G x) + f s_full (:mod:`bundle.data.petdds`).  The model at another
fraction g is the same with the multiplicative factors and the background scaled by g / f, i.e.
``PETDDSDataset.forward_model(entry, g)``, so ȳ_g(x) = (g / f) ȳ_f(x) for every x.  For every subject and g the sweep
draws ``realisations`` independent realisations y ~ Poisson(ȳ_g(x_true)) of the truth ``activity.nii.gz``
(:func:`sweep_expectation`); subject i, fraction j uses ``torch.Generator().manual_seed(s)`` with s from
``numpy.random.SeedSequence([seed, i, j])`` (:func:`sweep_seed`), its realisations drawn in turn from that one
generator.  Each realisation is reconstructed and scored exactly as in
:func:`bundle.workflows.petdds.evaluate_petdds` (:func:`bundle.workflows.petdds.reconstruct_case`; PET-DDS-δ sample
seeds :func:`bundle.workflows.petdds.sample_seeds` of realisation r), against the full-count reference in the head
mask.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bundle.data.brain import FDG_ACTIVITY_UNIT
from bundle.data.io import load_image, save_image
from bundle.data.petdds import PETDDSCase, PETDDSDataset
from bundle.evaluation import (
    bias_variance_figure,
    format_mean_std,
    output_folder,
    volume_panel,
    write_json,
)
from bundle.inferers.petdds import (
    Network,
    PETDDSInferer,
    check_inferer,
    default_inferer,
    reconstruct_many,
    timed_network,
    uncertainty_from_samples,
)
from bundle.metrics import MetricConvention, bias_variance, image_metrics, units
from bundle.physics import PETForwardModel, map_em, poisson_noise
from bundle.physics import osem as osem_reconstruction
from bundle.progress import progress_bar

from .._checks import check_choice, check_int, check_nonnegative, check_real, check_sequence
from .petdds import (
    METRICS,
    _check_methods,
    _check_osem,
    absolute_beta,
    cv_display,
    mean_label,
    rdp_prior,
    reconstruct_case,
    sample_seeds,
    summarise_rows,
)

__all__ = ["bias_variance_study", "count_sweep", "sweep_expectation", "sweep_seed", "uncertainty_study"]


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
    lambda_rdps: Sequence[float] = (),
    realisations: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Normalised bias against normalised std over the low-count realisations of one subject (paper's Fig. 2).

    MAP-EM (RDP, ``num_subsets`` subsets) for every relative β in ``betas`` (as ``map_em_beta`` of
    :func:`evaluate_petdds`) and every iteration count in ``map_em_iterations`` (one run per β and realisation,
    read out after each requested pass); PET-DDS-δ for every δ in ``deltas`` when a network is given (``inferer`` a
    template, default :func:`default_inferer`; realisation r uses seed ``seed + r``) and for every relative λ_RDP in
    ``lambda_rdps`` at the template's δ (the axial coupling's own trade-off).  Each setting gives one point
    of :func:`bundle.metrics.bias_variance` against the full-count reference in the head mask (μ > 0).

    Returns:
        ``{"points": [{"method", "beta" | "delta", ..., "normalised_bias", "normalised_std"}], "files": {...}}``;
        writes ``bias_variance.json`` and ``bias_variance.png`` into ``output_dir``.
    """
    beta_list = check_sequence(betas, "betas", check_nonnegative)
    iteration_list = sorted(set(check_sequence(map_em_iterations, "map_em_iterations",
                                                lambda v, n: check_int(v, n, minimum=1))))
    delta_list = check_sequence(deltas, "deltas", check_nonnegative)
    rdp_list = check_sequence(lambda_rdps, "lambda_rdps", check_nonnegative) if len(lambda_rdps) else []
    if any(d == 0 for d in delta_list):
        raise ValueError(f"deltas must be > 0, got {list(deltas)}")
    num_subsets = check_int(num_subsets, "num_subsets", minimum=1)
    timed = timed_network(network, device)
    inferer = check_inferer(inferer)
    seed = check_int(seed, "seed", minimum=0)
    out = output_folder(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
    entry = ds.test_entry(case)
    n_real = ds.realisation_count(entry, realisations)
    if n_real < 2:
        raise ValueError(f"bias_variance_study needs >= 2 realisations, got {n_real}")
    template = (inferer or default_inferer(num_subsets=num_subsets)) if network is not None else None

    map_images: dict[tuple[float, int], list[torch.Tensor]] = {(b, i): [] for b in beta_list for i in iteration_list}
    settings = [("delta", d) for d in delta_list] + [("lambda_rdp", v) for v in rdp_list]
    dds_images: dict[tuple[str, float], list[torch.Tensor]] = (
        {k: [] for k in settings} if template is not None else {})
    absolute: dict[float, list[float]] = {b: [] for b in beta_list}
    reference = mask = None
    for r in progress_bar(range(n_real), progress=progress, desc="bias-variance", unit="realisation"):
        loaded = ds.case(entry, r)
        reference, mask = loaded.reference, loaded.mask
        models, data = loaded.subsets(num_subsets)
        unit = absolute_beta(models, loaded.mask, 1.0)  # mean_M Aᵀ1, once per realisation
        for beta in beta_list:
            beta_abs = beta * unit
            absolute[beta].append(beta_abs)

            def keep(iteration: int, image: torch.Tensor, beta: float = beta) -> None:
                if iteration in iteration_list:
                    map_images[(beta, iteration)].append(image)

            map_em(models, data, prior=rdp_prior(ds.image), beta=beta_abs, num_iterations=iteration_list[-1],
                   callback=keep)
        if template is not None:
            t_models, t_data = loaded.subsets(template.num_subsets)
            initial = osem_reconstruction(t_models, t_data, num_iterations=template.osem_iterations)
            for name, value in settings:
                sampler = copy.copy(template)
                setattr(sampler, name, value)
                generator = torch.Generator().manual_seed(seed + r)
                dds_images[(name, value)].append(sampler(loaded.counts, timed, models=loaded.model,
                                                         initial_osem=initial, generator=generator))

    def point(images: list[torch.Tensor]) -> dict[str, float]:
        result = bias_variance(torch.stack(images).double(), reference.double(), mask=mask)
        return {"normalised_bias": result["normalised_bias"], "normalised_std": result["normalised_std"]}

    points = [{"method": "MAP-EM", "beta": b, "beta_absolute_mean": float(np.mean(absolute[b])), "iterations": i,
               **point(map_images[(b, i)])} for b in beta_list for i in iteration_list]
    points += [{"method": "PET-DDS-δ", "delta": template.delta, "lambda_rdp": template.lambda_rdp, name: value,
                "varied": name, **point(images)} for (name, value), images in dds_images.items()]
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
    timed = timed_network(network, device)
    inferer = check_inferer(inferer)
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, bool):
        seed_list = list(range(check_int(seeds, "seeds", minimum=2)))
    else:
        seed_list = check_sequence(seeds, "seeds", lambda v, n: check_int(v, n, minimum=0))
        if len(seed_list) < 2:
            raise ValueError(f"seeds must hold >= 2 seeds, got {seed_list}")
    out = output_folder(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
    entry = ds.test_entry(case)
    loaded = ds.case(entry, low_index)
    sampler = inferer or default_inferer()
    samples = reconstruct_many(sampler, loaded.counts, timed,
                               models=loaded.model, seeds=seed_list)
    mean, cv = uncertainty_from_samples(samples)
    files = {"mean": out / "uncertainty_mean.nii.gz", "cv": out / "uncertainty_cv.nii.gz"}
    save_image(files["mean"], mean, ds.image)
    save_image(files["cv"], cv, ds.image)
    cv_head, top = cv_display(cv, loaded.mask)
    files["figure"] = volume_panel({"reference": loaded.reference, "mean": mean, "CV (head)": cv_head},
                             out / "uncertainty.png", geometry=ds.image,
                             vmax=float(loaded.reference[loaded.mask].max()), cmaps={"CV (head)": "magma"},
                             unit=FDG_ACTIVITY_UNIT,
                             title=f"{entry['id']}: {len(seed_list)} seeds; CV shown in [0, {top:.2f}] (99th pct.)")
    return {"seeds": seed_list, "mean_cv_in_mask": float(cv[loaded.mask].mean()),
            "files": {k: str(v) for k, v in files.items()}}


# ------------------------------------------------------------------------------------------------- count sweep


def sweep_seed(seed: int, subject: int, fraction: int) -> int:
    """Seed of the noise generator of subject index ``subject`` at fraction index ``fraction`` (module docstring)."""
    return int(np.random.SeedSequence([seed, subject, fraction]).generate_state(1)[0])


def sweep_expectation(ds: PETDDSDataset, entry: Mapping, activity: torch.Tensor,
                      fraction: float) -> tuple[PETForwardModel, torch.Tensor]:
    """(model at count fraction g = ``fraction``, its expectation ȳ_g of ``activity`` ``(n_z, n_y, n_x)``) ->
    the model and a sinogram ``(n_planes, n_views, n_radial)`` in counts (module docstring)."""
    model = ds.forward_model(entry, fraction)
    return model, model.expectation(activity.to(torch.float32))


def count_sweep(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    fractions: Sequence[float] = (0.005, 0.01, 0.02, 0.05, 0.1),
    realisations: int = 3,
    network: Network | None = None,
    inferer: PETDDSInferer | None = None,
    methods: Sequence[str] | None = None,
    osem: Sequence[int] = (21, 2),
    map_em_beta: float = 0.005,
    map_em_iterations: int = 2,
    samples: int = 1,
    split: str = "test",
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    metric_convention: MetricConvention | str = MetricConvention.DEFAULT,
) -> dict[str, Any]:
    """OSEM / MAP-EM / PET-DDS-δ against the count level: NRMSE / PSNR / SSIM at every fraction of ``fractions``.

    Args:
        dataset_dir: a petdds dataset (its ``split`` subjects need ``activity.nii.gz``).
        output_dir: folder for ``sweep.json`` (every row, the summary, the settings), ``sweep.md`` (fraction ×
            method, mean ± std) and ``sweep.png`` (NRMSE against the count fraction), created.
        fractions: count fractions g of the full-count scan (0.01 = 1 %), each in (0, 1].
        realisations: independent Poisson realisations per subject and fraction (>= 1; module docstring).
        network, inferer, methods, osem, map_em_beta, map_em_iterations, samples, device, metric_convention: as in
            :func:`bundle.workflows.petdds.evaluate_petdds`.
        split: the datalist split of the subjects (``"test"``).
        seed: the noise seeds (:func:`sweep_seed`) and the PET-DDS-δ sample seeds.
        progress: progress bar (:mod:`bundle.progress`) over (subject, fraction, realisation).

    Returns:
        ``{"rows": [...], "summary": {fraction: {method: {metric: {"mean", "std"}}}}, "table": markdown,
        "files": {...}}``.
    """
    fraction_list = check_sequence(fractions, "fractions", lambda v, n: check_real(v, n, "in (0, 1]",
                                                                                  lambda x: 0 < x <= 1))
    n_real = check_int(realisations, "realisations", minimum=1)
    n_samples = check_int(samples, "samples", minimum=1)
    timed = timed_network(network, device)
    inferer = check_inferer(inferer)
    chosen = _check_methods(methods, timed)
    n_subsets, n_iterations = _check_osem(osem)
    beta = check_nonnegative(map_em_beta, "map_em_beta")
    passes = check_int(map_em_iterations, "map_em_iterations", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    convention = check_choice(metric_convention, MetricConvention, "metric_convention")
    out = output_folder(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
    entries = ds.datalist.get(split) or []
    if not entries:
        raise ValueError(f"split {split!r} of {ds.root} holds no subjects (splits: {sorted(ds.datalist)})")
    if "PET-DDS-δ" in chosen and inferer is None:
        inferer = default_inferer(num_subsets=n_subsets)
    names = [*chosen, *([mean_label(n_samples)] if "PET-DDS-δ" in chosen and n_samples > 1 else [])]

    rows: list[dict[str, Any]] = []
    jobs = [(i, j, r) for i in range(len(entries)) for j in range(len(fraction_list)) for r in range(n_real)]
    generators: dict[tuple[int, int], torch.Generator] = {}
    loaded: dict[int, tuple[torch.Tensor, ...]] = {}  # subject -> (reference, mask, activity), read once
    expectations: dict[tuple[int, int], tuple[PETForwardModel, torch.Tensor]] = {}
    for i, j, r in progress_bar(jobs, progress=progress, desc="count sweep", unit="case"):
        entry, fraction = entries[i], fraction_list[j]
        if i not in loaded:
            loaded.clear()
            expectations.clear()
            loaded[i] = (*ds.reference_and_mask(entry), load_image(ds.root / entry["activity"])[0])
        reference, mask, activity = loaded[i]
        if (i, j) not in expectations:
            expectations[(i, j)] = sweep_expectation(ds, entry, activity, fraction)
        model, expected = expectations[(i, j)]
        generator = generators.setdefault((i, j), torch.Generator().manual_seed(sweep_seed(seed, i, j)))
        case = PETDDSCase(poisson_noise(expected, generator=generator), model, reference, mask)
        result = reconstruct_case(case, methods=chosen, osem=(n_subsets, n_iterations), map_em_beta=beta,
                                  map_em_iterations=passes, geometry=ds.image, network=timed, inferer=inferer,
                                  seeds=sample_seeds(seed, r, n_samples))
        for method, image in result.images.items():
            rows.append({"subject": entry["id"], "fraction": fraction, "realisation": r, "method": method,
                         **image_metrics(image, reference, mask=mask, convention=convention),
                         **result.timings[method]})

    summary = {f"{g:g}": summarise_rows([row for row in rows if row["fraction"] == g], names)
               for g in fraction_list}
    percent = units(convention)["SSIM"] == "%"
    digits = {"NRMSE": 2 if percent else 4, "PSNR": 2, "SSIM": 2 if percent else 4}
    lines = ["| counts | method | " + " | ".join(METRICS) + " |", "| --- | --- |" + " --- |" * len(METRICS)]
    for g in fraction_list:
        for name in names:
            cells = [format_mean_std(summary[f"{g:g}"][name][m]["mean"], summary[f"{g:g}"][name][m]["std"],
                                     digits[m]) for m in METRICS]
            lines.append(f"| {100 * g:g} % | {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    settings = {"dataset_dir": str(ds.root), "split": split, "fractions": fraction_list, "realisations": n_real,
                "low_count_fraction_stored": [float(e["low_count_fraction"]) for e in entries],
                "methods": names, "osem": [n_subsets, n_iterations], "map_em_beta_relative": beta,
                "map_em_iterations": passes, "samples": n_samples, "seed": seed,
                "noise_seeds": "numpy.random.SeedSequence([seed, subject_index, fraction_index])",
                "metric_convention": convention.value, "units": units(convention), "mask": "mu_map > 0 (head)",
                "pet_dds": None if inferer is None or "PET-DDS-δ" not in chosen else {
                    k: getattr(inferer, k) for k in ("num_inference_steps", "num_subsets", "steps_per_diffusion_step",
                                                     "delta", "lambda_rdp", "lambda_dds", "eta")}}
    json_path = write_json(out / "sweep.json", {"rows": rows, "summary": summary, "settings": settings})
    md_path = out / "sweep.md"
    md_path.write_text(table + f"\n\nmean ± std over (subject, realisation); {n_real} realisations per subject and "
                       f"count level; metric convention {convention.value!r}; mask μ > 0.\n", encoding="utf-8")
    figure = _sweep_figure(summary, fraction_list, names, out / "sweep.png",
                           unit="%" if percent else "fraction")
    return {"rows": rows, "summary": summary, "table": table,
            "files": {"json": str(json_path), "table": str(md_path), "figure": str(figure)}}


def _sweep_figure(summary: Mapping, fractions: Sequence[float], names: Sequence[str], path: Path, *,
                  unit: str) -> Path:
    """NRMSE (mean ± std) of every method against the count fraction (in %, log axis)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = figure.subplots()
    x = [100 * g for g in fractions]
    for name in names:
        mean = [summary[f"{g:g}"][name]["NRMSE"]["mean"] for g in fractions]
        std = [summary[f"{g:g}"][name]["NRMSE"]["std"] for g in fractions]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=2, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("counts [% of the full-count scan]")
    ax.set_ylabel(f"NRMSE [{unit}] in the head")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.savefig(path, dpi=110)
    return path
