"""uPETe workflows: data loading in network units, calibration (latent scale s, count scale κ_0, latent noise
variance, dose estimator), model assembly per ablation variant, enhancement of a PET (+CT) file, and the evaluation
(PSNR/SSIM mean ± std per method at 10 % dose, dose-generalisation figure, axial/coronal panels).

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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bundle._checks import check_choice
from bundle.baselines import gaussian_filter, non_local_means, tune_parameter
from bundle.checkpoint import Calibration, load_weights
from bundle.data.upete import Case, load_split
from bundle.diffusion.latent import (
    DoseEstimator,
    calibrate_count_scale,
    latent_noise_variance,
)
from bundle.evaluation import dose_figure, mean_std, metrics_table, monai_volume_panel, write_csv, write_json
from bundle.inferers.upete import LatentEnhancementInferer, PoissonDomain, make_process
from bundle.metrics import MetricConvention, image_metrics
from bundle.networks.upete import LDMVariant, UPETe, build_upete

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "calibrate",
    "enhance_file",
    "evaluate_upete",
    "load_trained_variants",
]

BASELINES = ("LPET", "Gaussian", "NLM", "U-Net")
ABLATIONS = tuple(v.value for v in LDMVariant)


@torch.no_grad()
def calibrate(
    dataset_dir: str | Path,
    *,
    autoencoder: torch.nn.Module,
    reference_dose: float = 0.1,
    mean_multiple: float = 10.0,
    ct_window_hu: Sequence[float] = (-1000.0, 1000.0),
    output_file: str | Path | None = None,
) -> Calibration:
    """s = 1/std of training SPET latents; κ_0, σ²_ref and the dose estimator from the validation pairs at d_ref."""
    autoencoder = autoencoder.eval().cpu()
    train = load_split(dataset_dir, "training", doses=[], mean_multiple=mean_multiple, ct_window_hu=ct_window_hu)
    val = load_split(dataset_dir, "validation", doses=[reference_dose], mean_multiple=mean_multiple,
                     ct_window_hu=ct_window_hu)
    if not val or reference_dose not in val[0].low:
        raise ValueError(f"the validation cases need an LPET at reference_dose={reference_dose}")
    def mu(x: torch.Tensor) -> torch.Tensor:
        return autoencoder.encode(x)[0]  # the encoder mean μ_E (encode_stage_2_inputs would sample)

    latents = torch.cat([mu(c.spet).flatten() for c in train])
    scale = 1.0 / float(latents.std())
    kappa = [calibrate_count_scale(c.spet, c.low[reference_dose][0], dose=reference_dose) for c in val]
    sigma2 = [latent_noise_variance(scale * mu(c.spet), scale * mu(c.low[reference_dose][0])) for c in val]
    est = DoseEstimator().calibrate([c.spet for c in val], [c.low[reference_dose][0] for c in val],
                                    dose=reference_dose)
    cal = Calibration(scale, sum(kappa) / len(kappa), sum(sigma2) / len(sigma2), float(reference_dose),
                      float(est.a), float(est.b))
    if output_file is not None:
        path = Path(output_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(cal), indent=2) + "\n", encoding="utf-8")
    return cal


def load_trained_variants(
    upete_dir: str | Path,
    *,
    variants: Sequence[str] = ABLATIONS,
    autoencoder_def: torch.nn.Module,
    calibration: Calibration,
    latent_channels: int = 3,
    denoiser_layout: Mapping[str, Any],
    ct_encoder_layout: Mapping[str, Any],
    num_train_timesteps: int = 400,
    min_dose: float = 0.005,
    poisson_domain: PoissonDomain | str = PoissonDomain.SINOGRAM,
    inferer_options: Mapping[str, Any] | None = None,
    require_all: bool = False,
) -> dict[str, tuple[UPETe, Any]]:
    """``{variant: (UPETe with ``<upete_dir>/<variant>/ldm_final.pt`` loaded, LatentEnhancementInferer)}``; variants
    without a checkpoint are skipped (``ValueError`` with ``require_all``).  ``poisson_domain`` must be the one the
    Poisson variants were trained with (:func:`make_process`)."""
    import copy

    models = {}
    for name in variants:
        checkpoint = Path(upete_dir) / str(name) / "ldm_final.pt"
        if not checkpoint.is_file():
            if require_all:
                raise ValueError(f"variant {name!r} has no checkpoint {str(checkpoint)!r}; train it first")
            continue
        network = build_upete(name, autoencoder=copy.deepcopy(autoencoder_def), latent_scale=calibration.latent_scale,
                              latent_channels=latent_channels, denoiser_layout=denoiser_layout,
                              ct_encoder_layout=ct_encoder_layout)
        load_weights(network, checkpoint)
        process = make_process(name, calibration=calibration, num_train_timesteps=num_train_timesteps,
                               min_dose=min_dose, poisson_domain=poisson_domain)
        inferer = LatentEnhancementInferer(process=process, dose_estimator=calibration.dose_estimator(),
                                           **dict(inferer_options or {}))
        models[str(name)] = (network, inferer)
    return models


# ----------------------------------------------------------------------------------------------------- evaluation


def _unet_inferer(roi_size: Sequence[int] | None):
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    if roi_size is None:
        return SimpleInferer()
    return SlidingWindowInferer(roi_size=tuple(roi_size), overlap=0.5, mode="gaussian")


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
) -> dict[str, Any]:
    """Evaluate baselines and trained uPETe variants on the test split; write table, CSV, JSON and figures.

    Args:
        models: ``{variant name: (UPETe, LatentEnhancementInferer)}`` (any subset of :data:`ABLATIONS`).
        unet: the trained supervised U-Net (LPET -> SPET in network units), or ``None`` (row left out).
        table_dose: dose of the table (paper: 10 %).
        curve_doses / curve_methods: the dose-generalisation figure (only methods that are available).
        gaussian_grid: σ in voxels; nlm_grid: h / σ_n; tuned on the validation pairs at ``table_dose`` by PSNR.
        metric_convention: :class:`~bundle.metrics.MetricConvention` of PSNR / SSIM (``"upete"``: L = max − min of
            the reference and a 7-tap SSIM window, as the tables in ``docs/upete.md``).

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
    for name in ABLATIONS:
        if name in models:
            network, inferer = models[name]

            def run_ldm(case: Case, dose: float, x: torch.Tensor, network=network, inferer=inferer) -> torch.Tensor:
                gen = torch.Generator().manual_seed(seed)
                return inferer(x, network, ct=case.ct if network.uses_ct else None, dose=dose, generator=gen)

            methods[name] = run_ldm
    per_case: dict[str, dict[float, list[dict[str, float]]]] = {m: {} for m in methods}
    timings: dict[str, float] = dict.fromkeys(methods, 0.0)
    panel_images: dict[str, torch.Tensor] = {}
    jobs = [(m, d) for m in methods for d in sorted({table_dose, *curve_doses})
            if d == table_dose or m in curve_methods]
    iterator: Any = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc="uPETe evaluation", unit="method×dose")
    for method, dose in iterator:
        for case in test:
            if dose not in case.low:
                continue
            x, scale = case.low[dose]
            start = time.perf_counter()
            y = methods[method](case, dose, x)
            timings[method] += time.perf_counter() - start
            est, ref = y * scale, case.spet * case.spet_scale
            per_case[method].setdefault(dose, []).append({"case": case.case_id, **score(est, ref)})
            if dose == table_dose and case is test[0]:
                panel_images[method] = est
    ceiling: dict[str, tuple[float, float]] = {}
    if models:  # D(E(SPET)) of the shared autoencoder: no latent method can be closer to the SPET than this
        network, inferer = next(iter(models.values()))

        def round_trip(x: torch.Tensor) -> torch.Tensor:
            return network.decode(network.encode(x))

        if getattr(inferer, "roi_size", None) is not None:  # the inferer's windows (normalisation depends on them)
            from monai.inferers import SlidingWindowInferer

            windows = SlidingWindowInferer(roi_size=inferer.roi_size, sw_batch_size=inferer.sw_batch_size,
                                           overlap=inferer.overlap, mode=inferer.mode)
            round_trip = partial(windows, network=round_trip)
        values = []
        for case in test:
            with torch.no_grad():
                recon = round_trip(case.spet)
            values.append(score(recon * case.spet_scale, case.spet * case.spet_scale))
        ceiling = {k: mean_std([v[k] for v in values]) for k in ("PSNR", "SSIM")}
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
    write_csv(files["csv"], ("method", "dose", "case", "PSNR", "SSIM"),
              [{"method": method, "dose": dose, "case": v["case"], "PSNR": f"{v['PSNR']:.4f}",
                "SSIM": f"{v['SSIM']:.5f}"}
               for method, by_dose in per_case.items() for dose, values in sorted(by_dose.items()) for v in values])
    dose_figure(curves, files["dose_figure"])
    ref = test[0].spet * test[0].spet_scale
    monai_volume_panel({"LPET": panel_images.get("LPET", ref), "SPET": ref,
            **{k: v for k, v in panel_images.items() if k != "LPET"}},
           files["panel"], title=f"{test[0].case_id}, {100 * table_dose:g} % dose", vmax=float(ref.max()) * 0.6)
    result = {
        "table": table, "rows": rows, "curves": {m: {str(d): v for d, v in c.items()} for m, c in curves.items()},
        "tuned": {"gaussian_sigma_voxels": sigma, "gaussian_scores": sigma_scores, "nlm_h_factor": h,
                  "nlm_scores": h_scores},
        "autoencoder_ceiling": ceiling, "estimated_doses": estimated_doses, "seconds": timings,
        "test_cases": [c.case_id for c in test],
        "table_dose": table_dose,
        "metric_convention": convention.value,
        "files": {k: str(v) for k, v in files.items()},
    }
    write_json(files["json"], result)
    return result


def enhance_file(
    pet_file: str | Path,
    *,
    network: UPETe,
    inferer: Any,
    output_file: str | Path,
    ct_file: str | Path | None = None,
    dose: float | None = None,
    mean_multiple: float = 10.0,
    ct_window_hu: Sequence[float] = (-1000.0, 1000.0),
    seed: int = 0,
) -> Path:
    """Enhance one low-dose PET NIfTI (+ CT NIfTI on the same grid); writes the SPET estimate in the input's units
    and on its grid (same affine)."""
    import nibabel as nib
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from bundle.transforms.petct import CTWindowd, ValidatePETCTd
    from bundle.transforms.scaling import ToNetworkUnitsd

    keys = ["pet"] + (["ct"] if ct_file is not None else [])
    if network.uses_ct and ct_file is None:
        raise ValueError("ct_file is required: this model uses CT-guided attention (LDM-CT / LDM-P-CT), got None")
    data = {"pet": str(pet_file), **({"ct": str(ct_file)} if ct_file is not None else {})}
    steps = [LoadImaged(keys=keys, image_only=True), EnsureChannelFirstd(keys=keys),
             ValidatePETCTd(pet_key="pet", ct_key="ct" if ct_file is not None else None,
                            require_ct=ct_file is not None),
             ToNetworkUnitsd(keys="pet", statistic="mean", scale=mean_multiple)]
    if ct_file is not None:
        steps.append(CTWindowd(keys="ct", window_hu=ct_window_hu))
    d = Compose(steps)(data)
    x = d["pet"].as_tensor()[None].float()
    ct = d["ct"].as_tensor()[None].float() if ct_file is not None and network.uses_ct else None
    y = inferer(x, network, ct=ct, dose=dose, generator=torch.Generator().manual_seed(seed))
    values = (y[0, 0].double() * float(d["pet_scale"][0])).float().numpy()
    affine = d["pet"].affine.numpy() if hasattr(d["pet"].affine, "numpy") else d["pet"].affine
    path = Path(output_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, affine), str(path))
    return path
