"""PET-DDS-δ studies beyond the table of :func:`bundle.workflows.petdds.evaluate_petdds` (same dataset, mask and
MAP-EM conventions, module docstring there): the bias-variance trade-off over the low-count realisations of one
subject (paper's Fig. 2) and the voxel-wise uncertainty over sampler seeds.  Importing runs nothing.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from bundle.data.io import save_image
from bundle.data.petdds import PETDDSDataset
from bundle.evaluation import bias_variance_figure, output_folder, volume_panel, write_json
from bundle.inferers.petdds import (
    Network,
    PETDDSInferer,
    check_inferer,
    default_inferer,
    reconstruct_many,
    timed_network,
    uncertainty_from_samples,
)
from bundle.metrics import bias_variance
from bundle.physics import map_em
from bundle.physics import osem as osem_reconstruction

from .._checks import check_int, check_nonnegative, check_sequence
from .petdds import absolute_beta, rdp_prior

__all__ = ["bias_variance_study", "uncertainty_study"]


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
                                                lambda v, n: check_int(v, n, minimum=1))))
    delta_list = check_sequence(deltas, "deltas", check_nonnegative)
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
    dds_images: dict[float, list[torch.Tensor]] = {d: [] for d in delta_list} if template is not None else {}
    absolute: dict[float, list[float]] = {b: [] for b in beta_list}
    reference = mask = None
    for r in tqdm(range(n_real), disable=not progress, desc="bias-variance"):
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
            for delta in delta_list:
                sampler = copy.copy(template)
                sampler.delta = delta
                generator = torch.Generator().manual_seed(seed + r)
                dds_images[delta].append(sampler(loaded.counts, timed, models=loaded.model,
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
    # display: CV inside the head (outside it the mean is ~0 and the CV explodes), clipped at its 99th percentile
    top = float(torch.quantile(cv[loaded.mask].double(), 0.99))
    cv_head = torch.where(loaded.mask, cv.clamp(max=top), torch.zeros_like(cv))
    files["figure"] = volume_panel({"reference": loaded.reference, "mean": mean, "CV (head)": cv_head},
                             out / "uncertainty.png", geometry=ds.image,
                             vmax=float(loaded.reference[loaded.mask].max()), cmaps={"CV (head)": "magma"},
                             title=f"{entry['id']}: {len(seed_list)} seeds; CV shown in [0, {top:.2f}] (99th pct.)")
    return {"seeds": seed_list, "mean_cv_in_mask": float(cv[loaded.mask].mean()),
            "files": {k: str(v) for k, v in files.items()}}
