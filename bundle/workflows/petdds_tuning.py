"""PET-DDS-δ and MAP-EM tuned on the *validation* subjects of a petdds dataset (never the test split).

:func:`tune_petdds` reconstructs every low-count realisation (the first ``realisations``) of every ``split`` subject
(default ``"validation"``; ``"test"`` is refused) with

- PET-DDS-δ at every point of the grid λ_RDP × λ_DDS × δ × N (``lambda_rdp``, ``lambda_dds`` in the sampler's
  relative units, :class:`bundle.inferers.petdds.WeightUnits`; ``delta``; ``num_inference_steps``), the other sampler
  settings those of ``inferer`` (configs/petdds/network.json).  The OSEM image that fixes the slice scale c_z
  (``osem`` = subsets × iterations, as :func:`bundle.workflows.petdds.evaluate_petdds`) is computed once per case;
  realisation r uses ``torch.Generator().manual_seed(seed + r)`` (sample 0 of the evaluation);
- MAP-EM (3D RDP, one-step-late, the same subsets) at every relative β of ``map_em_betas`` (β = relative × mean_M
  Aᵀ1, :func:`bundle.workflows.petdds.absolute_beta`), read out after every pass count of ``map_em_iterations`` from
  one run per β.  When the one-step-late denominator fails (``ValueError`` of :func:`bundle.physics.map_em`) during
  pass k, the pass counts >= k of that β are recorded with the error.

Every point is scored with :func:`bundle.metrics.image_metrics` against the full-count reference in the head mask
(μ > 0).  A grid point that raises is recorded with its error and left out of the choice, not fatal.  The best
setting of each method has the smallest mean NRMSE over (subject, realisation) among the points that ran on every
case.  Written to ``output_dir``: ``tune.json`` (every point and case), ``tune.md`` (mean per setting, sorted by
NRMSE, the OSEM row for scale) and ``best.json`` (``{"pet_dds": {...} | None, "map_em": {"beta", "iterations"} |
None}``).  Importing runs nothing.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bundle.data.petdds import PETDDSDataset
from bundle.evaluation import format_mean_std, mean_std, output_folder, write_json
from bundle.inferers.petdds import Network, PETDDSInferer, check_inferer, default_inferer, timed_network
from bundle.metrics import MetricConvention, image_metrics, units
from bundle.physics import map_em
from bundle.physics import osem as osem_reconstruction
from bundle.progress import progress_bar

from .._checks import check_choice, check_int, check_nonnegative, check_real, check_sequence
from .petdds import METRICS, _check_osem, absolute_beta, rdp_prior

__all__ = ["PET_DDS_GRID", "tune_petdds"]

PET_DDS_GRID: tuple[str, ...] = ("lambda_rdp", "lambda_dds", "delta", "num_inference_steps")
"""The PET-DDS-δ settings tuned (attributes of :class:`~bundle.inferers.petdds.PETDDSInferer`)."""
_MAP_EM_GRID = ("beta", "iterations")


def _grid(values: object, name: str, kind: str) -> list:
    if kind == "int":
        items = check_sequence(values, name, lambda v, n: check_int(v, n, minimum=1))
    elif kind == "positive":
        items = check_sequence(values, name, lambda v, n: check_real(v, n, "> 0", lambda x: x > 0))
    else:
        items = check_sequence(values, name, check_nonnegative)
    if len(set(items)) != len(items):
        raise ValueError(f"{name} has repeated values: {items}")
    return items


def _score(points: list[dict[str, Any]], method: str, keys: Sequence[str], cases: int) -> list[dict[str, Any]]:
    """Mean ± std per setting of ``method``; a setting that failed on any case gets its first error instead."""
    settings = list(dict.fromkeys(tuple(p[k] for k in keys) for p in points if p["method"] == method))
    results = []
    for setting in settings:
        mine = [p for p in points if p["method"] == method and tuple(p[k] for k in keys) == setting]
        entry: dict[str, Any] = dict(zip(keys, setting, strict=True))
        errors = [p["error"] for p in mine if "error" in p]
        if errors or len(mine) != cases:
            entry["error"] = errors[0] if errors else f"ran on {len(mine)} of {cases} cases"
        else:
            for metric in METRICS:
                mean, std = mean_std([p[metric] for p in mine])
                entry[metric] = {"mean": mean, "std": std}
            if "total_s" in mine[0]:
                entry["total_s"] = sum(p["total_s"] for p in mine) / len(mine)
        results.append(entry)
    ok = sorted((r for r in results if "error" not in r), key=lambda r: r["NRMSE"]["mean"])
    return ok + [r for r in results if "error" in r]


def _table(rows: list[dict[str, Any]], keys: Sequence[str], headers: Sequence[str], digits: dict[str, int]) -> str:
    lines = ["| " + " | ".join([*headers, *METRICS]) + " |", "|" + " --- |" * (len(headers) + len(METRICS))]
    for row in rows:
        cells = [f"{row[k]:g}" for k in keys]
        if "error" in row:
            cells += [f"failed: {row['error']}".replace("|", "\\|"), "", ""]
        else:
            cells += [format_mean_std(row[m]["mean"], row[m]["std"], digits[m]) for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tune_petdds(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    network: Network | None = None,
    inferer: PETDDSInferer | None = None,
    split: str = "validation",
    lambda_rdp: Sequence[float] = (0.2,),
    lambda_dds: Sequence[float] = (0.5,),
    delta: Sequence[float] = (0.2,),
    num_inference_steps: Sequence[int] = (25,),
    map_em_betas: Sequence[float] = (0.001, 0.002, 0.005, 0.01),
    map_em_iterations: Sequence[int] = (1, 2, 3, 5),
    realisations: int | None = 1,
    osem: Sequence[int] = (21, 2),
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    metric_convention: MetricConvention | str = MetricConvention.PETDDS,
) -> dict[str, Any]:
    """Grid search of PET-DDS-δ (λ_RDP × λ_DDS × δ × N) and MAP-EM (relative β × passes) on ``split`` (module
    docstring).

    Args:
        dataset_dir: a petdds dataset.
        output_dir: folder for ``tune.json``, ``tune.md`` and ``best.json`` (created).
        network: the ε-predictor; ``None`` tunes MAP-EM only (``best.json``'s ``pet_dds`` is then ``None``).
        inferer: the sampler template whose other settings are kept; ``None`` = :func:`default_inferer` with
            ``num_subsets = osem[0]``.
        split: the subjects tuned on; ``"test"`` raises ``ValueError`` (tune on validation, report on test).
        lambda_rdp, lambda_dds: relative weights >= 0 (non-empty, no repeats).
        delta: δ values > 0.
        num_inference_steps: N values in [1, the scheduler's training steps].
        map_em_betas: relative β values >= 0.
        map_em_iterations: pass counts >= 1.
        realisations: the first this many low-count realisations per subject; ``None`` = all stored.
        osem: (subsets, iterations) of the OSEM image (c_z, the OSEM row) and the subsets of MAP-EM.
        seed: realisation r of PET-DDS-δ uses ``torch.Generator().manual_seed(seed + r)``.
        device: where the network runs.
        progress: progress bar (:mod:`bundle.progress`) over the cases.
        metric_convention: of the scores (default ``"petdds"``: NRMSE and SSIM in %).

    Returns:
        ``{"points": [per case and setting], "pet_dds": [per setting, sorted], "map_em": [...], "osem": {...},
        "best": {"pet_dds": ..., "map_em": ...}, "files": {...}}``.
    """
    if split == "test":
        raise ValueError("split must not be 'test': tune on the validation subjects, report on the test subjects")
    timed = timed_network(network, device)
    template = check_inferer(inferer)
    grid = {"lambda_rdp": _grid(lambda_rdp, "lambda_rdp", "nonnegative"),
            "lambda_dds": _grid(lambda_dds, "lambda_dds", "nonnegative"),
            "delta": _grid(delta, "delta", "positive"),
            "num_inference_steps": _grid(num_inference_steps, "num_inference_steps", "int")}
    betas = _grid(map_em_betas, "map_em_betas", "nonnegative")
    passes = sorted(_grid(map_em_iterations, "map_em_iterations", "int"))
    n_subsets, n_iterations = _check_osem(osem)
    seed = check_int(seed, "seed", minimum=0)
    convention = check_choice(metric_convention, MetricConvention, "metric_convention")
    if timed is not None:
        template = template or default_inferer(num_subsets=n_subsets)
        limit = template.scheduler.num_train_timesteps
        too_many = [n for n in grid["num_inference_steps"] if n > limit]
        if too_many:
            raise ValueError(f"num_inference_steps must be <= the scheduler's num_train_timesteps ({limit}), "
                             f"got {too_many}")
    out = output_folder(output_dir)
    ds = PETDDSDataset.open(dataset_dir)
    entries = ds.datalist.get(split) or []
    if not entries:
        raise ValueError(f"split {split!r} of {ds.root} holds no subjects (splits: {sorted(ds.datalist)})")
    cases = [(e, r) for e in entries for r in range(ds.realisation_count(e, realisations))]
    pet_dds_points = list(itertools.product(*grid.values())) if timed is not None else []

    points: list[dict[str, Any]] = []
    for entry, r in progress_bar(cases, progress=progress, desc="tune petdds", unit="case"):
        case = ds.case(entry, r)
        where = {"subject": entry["id"], "realisation": r}

        def scored(image: torch.Tensor, case=case) -> dict[str, float]:
            return image_metrics(image, case.reference, mask=case.mask, convention=convention)

        models, data = case.subsets(n_subsets)
        osem_image = osem_reconstruction(models, data, num_iterations=n_iterations)
        points.append({"method": "OSEM", **where, **scored(osem_image)})
        unit = absolute_beta(models, case.mask, 1.0)
        for beta in betas:
            read: dict[int, torch.Tensor] = {}
            try:
                map_em(models, data, prior=rdp_prior(ds.image), beta=beta * unit, num_iterations=passes[-1],
                       callback=lambda k, image, read=read: read.__setitem__(k, image) if k in passes else None)
                error = None
            except ValueError as failure:  # one-step-late denominator <= 0: recorded, not fatal
                error = str(failure)
            for k in passes:
                point = {"method": "MAP-EM", "beta": beta, "iterations": k, "beta_absolute": beta * unit, **where}
                points.append({**point, **scored(read[k])} if k in read else {**point, "error": error})
        for values in pet_dds_points:
            assert template is not None and timed is not None
            sampler = copy.copy(template)
            setting = dict(zip(PET_DDS_GRID, values, strict=True))
            for key, value in setting.items():
                setattr(sampler, key, value)
            point = {"method": "PET-DDS-δ", **setting, **where}
            try:
                image = sampler(case.counts, timed, models=case.model, initial_osem=osem_image,
                                generator=torch.Generator().manual_seed(seed + r))
                points.append({**point, **scored(image), **sampler.timings})
            except (ValueError, RuntimeError) as failure:
                points.append({**point, "error": f"{type(failure).__name__}: {failure}"})

    osem_rows = [p for p in points if p["method"] == "OSEM"]
    osem_summary = {m: dict(zip(("mean", "std"), mean_std([p[m] for p in osem_rows]), strict=True)) for m in METRICS}
    pet_dds = _score(points, "PET-DDS-δ", PET_DDS_GRID, len(cases))
    map_rows = _score(points, "MAP-EM", _MAP_EM_GRID, len(cases))
    best = {"pet_dds": next(({k: row[k] for k in PET_DDS_GRID} for row in pet_dds if "error" not in row), None),
            "map_em": next(({k: row[k] for k in _MAP_EM_GRID} for row in map_rows if "error" not in row), None)}
    percent = units(convention)["SSIM"] == "%"
    digits = {"NRMSE": 2 if percent else 4, "PSNR": 2, "SSIM": 2 if percent else 4}
    osem_line = "| OSEM | " + " | ".join(format_mean_std(osem_summary[m]["mean"], osem_summary[m]["std"], digits[m])
                                         for m in METRICS) + " |"
    text = [f"Tuning on split {split!r}: {len(cases)} cases (subject × realisation), mean ± std; metric convention "
            f"{convention.value!r}; mask μ > 0.  Sorted by mean NRMSE; best in best.json.", "",
            "| method | " + " | ".join(METRICS) + " |", "|" + " --- |" * (1 + len(METRICS)), osem_line, "",
            "MAP-EM (relative β × passes):", "",
            _table(map_rows, _MAP_EM_GRID, ("β (relative)", "passes"), digits)]
    if pet_dds:
        text += ["", "PET-DDS-δ (λ in relative units):", "",
                 _table(pet_dds, PET_DDS_GRID, ("λ_RDP", "λ_DDS", "δ", "N"), digits)]
    settings = {"dataset_dir": str(ds.root), "split": split, "cases": [f"{e['id']}/{r}" for e, r in cases],
                "grid": grid, "map_em_betas": betas, "map_em_iterations": passes, "osem": [n_subsets, n_iterations],
                "seed": seed, "metric_convention": convention.value, "units": units(convention),
                "mask": "mu_map > 0 (head)", "choice": "smallest mean NRMSE among settings that ran on every case"}
    files = {"json": write_json(out / "tune.json", {"settings": settings, "points": points, "osem": osem_summary,
                                                    "pet_dds": pet_dds, "map_em": map_rows, "best": best}),
             "table": out / "tune.md", "best": write_json(out / "best.json", best)}
    files["table"].write_text("\n".join(text) + "\n", encoding="utf-8")
    return {"points": points, "pet_dds": pet_dds, "map_em": map_rows, "osem": osem_summary, "best": best,
            "files": {k: str(v) for k, v in files.items()}}
