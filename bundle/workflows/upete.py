"""uPETe evaluation study: PSNR/SSIM mean ± std per method at 10 % dose, dose-generalisation figure, axial/coronal
panels.  The calibration and the trained variants come from :func:`bundle.checkpoint.calibrate` and
:func:`bundle.checkpoint.load_trained_variants`; the enhancement of one PET (+CT) file is
:class:`bundle.app.upete.UPETeInferTask`.

Array layout: MONAI's channel-first (1, x, y, z) as written by ``LoadImaged`` from the dataset's NIfTI files, batch
added: ``(1, 1, X, Y, Z)``.  PET is in network units x' = x / (m · mean(x))
(:class:`~bundle.transforms.scaling.ToNetworkUnitsd`, each volume its own scale); CT is windowed to [0, 1].
Outputs are mapped back with the *input's* scale, i.e. to kBq/ml.

Metrics: :func:`bundle.metrics.image_metrics` on the whole volume in kBq/ml against the standard-dose OSEM (SPET),
in the project's convention (docs/metrics.md: L = max of the SPET, 3D SSIM with an 11-tap Gaussian window) or,
with ``metric_convention="upete"``, in that of docs/upete.md's tables (L = max − min of the SPET, the paper's
min-max-normalised images; 7 taps).  Mean ± sample std over the test subjects.  Importing runs nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bundle._checks import check_choice, check_int
from bundle.baselines import gaussian_filter, non_local_means, tune_parameter
from bundle.data.io import load_image
from bundle.data.torso import LABELS
from bundle.data.upete import Case, load_split
from bundle.diffusion.latent import Redegradation
from bundle.evaluation import dose_figure, mean_std, metrics_table, monai_volume_panel, write_csv, write_json
from bundle.metrics import MetricConvention, erode, image_metrics, lesion_metrics, region_cov, summarise_lesions
from bundle.networks.upete import IdentityAutoencoder, LDMVariant, UPETe
from bundle.progress import progress_bar

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "READING_METRICS",
    "autoencoder_ceiling",
    "evaluate_ceiling",
    "evaluate_upete",
    "optional_unet",
    "reading_metrics",
]

BASELINES = ("LPET", "Gaussian", "NLM", "U-Net")
ABLATIONS = tuple(v.value for v in LDMVariant)


def optional_unet(network: torch.nn.Module, checkpoint: str | Path, *, compare: object) -> torch.nn.Module | None:
    """The trained U-Net baseline ``network`` loaded from ``checkpoint`` when ``compare`` is ``True``, else ``None``
    (configs/upete/shipped.json's ``compare_unet``).  ``ValueError`` for anything but a bool: ``python -m
    monai.bundle run`` passes ``--compare_unet True`` as a bool but ``true`` as a (truthy) string."""
    if not isinstance(compare, bool):
        raise ValueError(f"compare_unet must be True or False (capitalised on the command line), got {compare!r}")
    if not compare:
        return None
    from bundle.checkpoint import load_weights

    return load_weights(network, checkpoint)


def _unet_inferer(roi_size: Sequence[int] | None):
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    if roi_size is None:
        return SimpleInferer()
    return SlidingWindowInferer(roi_size=tuple(roi_size), overlap=0.5, mode="gaussian")


READING_METRICS = ("CR", "SUVmean bias %", "SUVmax bias %", "liver CoV %")
"""Lesion and noise metrics of the reading table (datasets with lesion maps; :mod:`bundle.metrics.lesions`)."""


def reading_metrics(image_kbq_per_ml: torch.Tensor, case: Case) -> dict[str, float] | None:
    """Mean lesion contrast recovery, SUVmean / SUVmax bias (%) against the true activity, and the CoV (%) in the
    liver eroded by one voxel (lesions excluded), of one ``(1, 1, X, Y, Z)`` image; ``None`` for a case without
    activity, labels and lesion map."""
    if case.activity is None or case.labels is None or case.lesions is None:
        return None
    summary = summarise_lesions(lesion_metrics(image_kbq_per_ml, case.activity, case.lesions))
    liver = erode(case.labels[0, 0].round() == LABELS["liver"], 1) & (case.lesions[0, 0] == 0)
    return {"CR": summary["contrast_recovery"], "SUVmean bias %": 100 * summary["suv_mean_bias"],
            "SUVmax bias %": 100 * summary["suv_max_bias"], "liver CoV %": 100 * region_cov(image_kbq_per_ml, liver)}


def autoencoder_ceiling(
    cases: Sequence[Case],
    autoencoder: torch.nn.Module,
    *,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    score: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] = image_metrics,
) -> dict[str, tuple[float, float]]:
    """PSNR / SSIM (mean ± std over ``cases``, kBq/ml, against the SPET) of the autoencoder's round trip D(μ_E(SPET))
    through the inference windows (``roi_size``, Gaussian blending; ``None``: whole volumes): the best any latent
    method with this autoencoder can do (the latent scale s cancels)."""

    def round_trip(x: torch.Tensor) -> torch.Tensor:
        return autoencoder.decode_stage_2_outputs(autoencoder.encode(x)[0])

    if roi_size is not None:  # the inferer's windows (normalisation depends on them)
        from monai.inferers import SlidingWindowInferer

        round_trip = partial(SlidingWindowInferer(roi_size=tuple(roi_size), overlap=overlap, mode="gaussian"),
                             network=round_trip)
    values = []
    for case in cases:
        with torch.no_grad():
            recon = round_trip(case.spet)
        values.append(score(recon * case.spet_scale, case.spet * case.spet_scale))
    return {k: mean_std([v[k] for v in values]) for k in ("PSNR", "SSIM")}


def evaluate_ceiling(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    autoencoder: torch.nn.Module,
    roi_size: Sequence[int] | None,
    overlap: float = 0.5,
    split: str = "test",
    mean_multiple: float = 10.0,
    ct_window_hu: Sequence[float] = (-1000.0, 1000.0),
    metric_convention: MetricConvention | str = MetricConvention.DEFAULT,
) -> dict[str, Any]:
    """:func:`autoencoder_ceiling` of a trained autoencoder on ``split``, written to ``output_dir/ceiling.json``
    (stage 1 can be judged before any latent model is trained: the ``ceiling`` id of configs/upete/evaluate.json)."""
    convention = check_choice(metric_convention, MetricConvention, "metric_convention")
    cases = load_split(dataset_dir, split, doses=[], mean_multiple=mean_multiple, ct_window_hu=ct_window_hu)
    ceiling = autoencoder_ceiling(cases, autoencoder.eval(), roi_size=roi_size, overlap=overlap,
                                  score=partial(image_metrics, convention=convention))
    result = {"autoencoder_ceiling": ceiling, "split": split, "cases": [c.case_id for c in cases],
              "roi_size": list(roi_size) if roi_size is not None else None, "metric_convention": convention.value}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ceiling.json", result)
    return result


def _tune_reverse(
    network: UPETe, inferer: Any, val: Sequence[Case], dose: float, grid: Sequence[Sequence[Any]],
    val_psnr: Callable[[torch.Tensor, torch.Tensor], float], seed: int,
) -> dict[str, Any]:
    """Set ``inferer``'s (K, redegradation) to the option of ``grid`` with the best mean validation PSNR at ``dose``;
    returns the choice and every option's score."""
    scores, options = {}, {}
    for option in grid:
        if isinstance(option, str | bytes) or len(option) != 2:
            raise ValueError(f"reverse_grid entries must be (K, redegradation) pairs, got {option!r}")
        steps = check_int(option[0], "reverse_grid K", minimum=1)
        redegradation = check_choice(option[1], Redegradation, "reverse_grid redegradation")
        inferer.num_reverse_steps, inferer.redegradation = steps, redegradation
        values = []
        for case in val:
            x, _ = case.low[dose]
            y = inferer(x, network, ct=case.ct if network.uses_ct else None, dose=dose,
                        generator=torch.Generator().manual_seed(seed))
            values.append(val_psnr(y, case.spet))
        label = f"K={steps}, {redegradation.value}"
        scores[label], options[label] = sum(values) / len(values), (steps, redegradation)
    steps, redegradation = options[max(scores, key=scores.__getitem__)]
    inferer.num_reverse_steps, inferer.redegradation = steps, redegradation
    return {"num_reverse_steps": steps, "redegradation": redegradation.value, "scores": scores}


def evaluate_upete(
    dataset_dir: str | Path,
    *,
    output_dir: str | Path,
    models: Mapping[str, tuple[UPETe, Any]] | None = None,
    unet: torch.nn.Module | None = None,
    unet_roi_size: Sequence[int] | None = None,
    table_dose: float = 0.1,
    curve_doses: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    curve_methods: Sequence[str] = ("LPET", "Gaussian", "NLM", "U-Net", "LDM-P-CT"),
    gaussian_grid: Sequence[float] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
    nlm_grid: Sequence[float] = (0.4, 0.6, 0.8, 1.0, 1.3, 1.6),
    mean_multiple: float = 10.0,
    ct_window_hu: Sequence[float] = (-1000.0, 1000.0),
    seed: int = 0,
    progress: bool = True,
    metric_convention: MetricConvention | str = MetricConvention.DEFAULT,
    reverse_grid: Sequence[Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate baselines and trained uPETe variants on the test split; write table, CSV, JSON and figures.

    Args:
        models: ``{name: (UPETe, LatentEnhancementInferer)}``: any of :data:`ABLATIONS`, or another label (the
            image-space extension's ``"IMG-P-CT"``); rows in this order.
        unet: the trained supervised U-Net (LPET -> SPET in network units), or ``None`` (row left out).
        table_dose: dose of the table (paper: 10 %).
        curve_doses / curve_methods: the dose-generalisation figure (only methods that are available).
        gaussian_grid: σ in voxels; nlm_grid: h / σ_n; tuned on the validation pairs at ``table_dose`` by PSNR.
        metric_convention: :class:`~bundle.metrics.MetricConvention` of PSNR / SSIM (``"upete"``: L = max − min of
            the reference and a 7-tap SSIM window, as the tables in ``docs/upete.md``).
        reverse_grid: ``[(K, redegradation), ...]`` reverse-process options tuned per model on the validation
            pairs at ``table_dose`` by PSNR, like σ and h (``None``: each inferer keeps its own).

    Returns:
        ``{"table": markdown, "rows": {method: {metric: (mean, std)}}, "curves": ..., "tuned": ..., "files": ...}``.
    """
    convention = check_choice(metric_convention, MetricConvention, "metric_convention")
    score = partial(image_metrics, convention=convention)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    val = load_split(dataset_dir, "validation", doses=[table_dose], mean_multiple=mean_multiple,
                     ct_window_hu=ct_window_hu)
    test = load_split(dataset_dir, "test", mean_multiple=mean_multiple, ct_window_hu=ct_window_hu)
    models = dict(models or {})
    pairs = [(c.low[table_dose][0], c.spet) for c in val]

    def val_psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
        return score(image, reference)["PSNR"]

    sigma, sigma_scores = tune_parameter(lambda x, sigma_voxels: gaussian_filter(x, sigma_voxels=sigma_voxels),
                                         "sigma_voxels", gaussian_grid, pairs, val_psnr)
    h, h_scores = tune_parameter(lambda x, h_factor: non_local_means(x, h_factor=h_factor), "h_factor", nlm_grid,
                                 pairs, val_psnr)
    methods: dict[str, Callable[[Case, float, torch.Tensor], torch.Tensor]] = {
        "LPET": lambda case, dose, x: x,
        "Gaussian": lambda case, dose, x: gaussian_filter(x, sigma_voxels=sigma),
        "NLM": lambda case, dose, x: non_local_means(x, h_factor=h),
    }
    if unet is not None:
        unet = unet.eval()
        unet_inferer = _unet_inferer(unet_roi_size)

        def run_unet(case: Case, dose: float, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return unet_inferer(x, unet)

        methods["U-Net"] = run_unet
    reverse_choice: dict[str, dict[str, Any]] = {}
    for name, (network, inferer) in models.items():
        if reverse_grid:
            reverse_choice[name] = _tune_reverse(network, inferer, val, table_dose, reverse_grid, val_psnr, seed)

        def run_ldm(case: Case, dose: float, x: torch.Tensor, network=network, inferer=inferer) -> torch.Tensor:
            gen = torch.Generator().manual_seed(seed)
            return inferer(x, network, ct=case.ct if network.uses_ct else None, dose=dose, generator=gen)

        methods[name] = run_ldm
    per_case: dict[str, dict[float, list[dict[str, float]]]] = {m: {} for m in methods}
    timings: dict[str, float] = dict.fromkeys(methods, 0.0)
    panel_images: dict[str, torch.Tensor] = {}
    per_case_reading: dict[str, list[dict[str, float]]] = {}
    for case in test:  # the standard-dose reconstruction read like the methods (its lesion recovery and noise)
        reading = reading_metrics(case.spet * case.spet_scale, case)
        if reading is not None:
            per_case_reading.setdefault("SPET (reference)", []).append(reading)
    jobs = [(m, d) for m in methods for d in sorted({table_dose, *curve_doses})
            if d == table_dose or m in curve_methods]
    for method, dose in progress_bar(jobs, desc="uPETe evaluation", unit="method×dose", progress=progress):
        for case in test:
            if dose not in case.low:
                continue
            x, scale = case.low[dose]
            start = time.perf_counter()
            y = methods[method](case, dose, x)
            timings[method] += time.perf_counter() - start
            est, ref = y * scale, case.spet * case.spet_scale
            per_case[method].setdefault(dose, []).append({"case": case.case_id, **score(est, ref)})
            if dose == table_dose:
                reading = reading_metrics(est, case)
                if reading is not None:
                    per_case_reading.setdefault(method, []).append(reading)
            if dose == table_dose and case is test[0]:
                panel_images[method] = est
    ceiling: dict[str, tuple[float, float]] = {}
    first = next(iter(models.values()), None)
    if first is not None and not isinstance(first[0].autoencoder, IdentityAutoencoder):
        # D(E(SPET)) of the shared autoencoder: no latent method can be closer to the SPET than this
        network, inferer = first
        ceiling = autoencoder_ceiling(test, network.autoencoder, roi_size=getattr(inferer, "roi_size", None),
                                      overlap=getattr(inferer, "overlap", 0.5), score=score)
    estimated_doses: dict[str, dict[str, float]] = {}
    estimator = next((inf.dose_estimator for _, inf in models.values() if inf.dose_estimator is not None), None)
    if estimator is not None:  # the image-only dose estimate the inferers fall back on when no dose is given
        estimated_doses = {c.case_id: {f"{d:g}": estimator(x) for d, (x, _) in sorted(c.low.items())} for c in test}
    rows = {}
    for method in methods:
        values = per_case[method].get(table_dose, [])
        if values:
            rows[method] = {k: mean_std([v[k] for v in values]) for k in ("PSNR", "SSIM")}
    table = metrics_table(rows, ["PSNR", "SSIM"], digits={"PSNR": 2, "SSIM": 4}, first_column="Method")
    curves = {m: {d: sum(v["PSNR"] for v in vals) / len(vals) for d, vals in per_case[m].items()}
              for m in methods if m in curve_methods}
    files = {"table": out / "table.md", "json": out / "results.json", "csv": out / "per_case.csv",
             "dose_figure": out / "dose_generalisation.png", "panel": out / "panels.png"}
    files["table"].write_text(table + "\n", encoding="utf-8")
    # cases without a lesion: no lesion numbers; a metric no case has (all lesion-free): None, "n/a" in the table
    finite = {m: {k: [v[k] for v in values if math.isfinite(v[k])] for k in READING_METRICS}
              for m, values in per_case_reading.items()}
    reading_rows = {m: {k: mean_std(vals) if vals else None for k, vals in by_metric.items()}
                    for m, by_metric in finite.items()}
    reading_table = ""
    if reading_rows:
        reading_table = metrics_table(reading_rows, list(READING_METRICS), first_column="Method",
                                      digits={"CR": 3, "SUVmean bias %": 1, "SUVmax bias %": 1, "liver CoV %": 1})
        files["reading"] = out / "reading.md"
        files["reading"].write_text(reading_table + "\n", encoding="utf-8")
    write_csv(files["csv"], ("method", "dose", "case", "PSNR", "SSIM"),
              [{"method": method, "dose": dose, "case": v["case"], "PSNR": f"{v['PSNR']:.4f}",
                "SSIM": f"{v['SSIM']:.5f}"}
               for method, by_dose in per_case.items() for dose, values in sorted(by_dose.items()) for v in values])
    dose_figure(curves, files["dose_figure"])
    ref = test[0].spet * test[0].spet_scale
    first_test = json.loads((Path(dataset_dir) / "datalist.json").read_text(encoding="utf-8"))["test"][0]
    voxel_zyx = load_image(Path(dataset_dir) / first_test["pet"])[1].voxel_size_mm
    monai_volume_panel({"LPET": panel_images.get("LPET", ref), "SPET": ref,
            **{k: v for k, v in panel_images.items() if k != "LPET"}},
           files["panel"], title=f"{test[0].case_id}, {100 * table_dose:g} % dose", vmax=float(ref.max()) * 0.6,
           unit="activity (kBq/ml)", voxel_size_mm=voxel_zyx[::-1])
    result = {
        "table": table, "rows": rows, "reading_table": reading_table, "reading_rows": reading_rows,
        "curves": {m: {str(d): v for d, v in c.items()} for m, c in curves.items()},
        "tuned": {"gaussian_sigma_voxels": sigma, "gaussian_scores": sigma_scores, "nlm_h_factor": h,
                  "nlm_scores": h_scores, "reverse": reverse_choice},
        "autoencoder_ceiling": ceiling, "estimated_doses": estimated_doses, "seconds": timings,
        "test_cases": [c.case_id for c in test],
        "table_dose": table_dose,
        "metric_convention": convention.value,
        "files": {k: str(v) for k, v in files.items()},
    }
    write_json(files["json"], result)
    return result
