"""uPETe workflows: data loading in network units, calibration (latent scale s, count scale κ_0, latent noise
variance, dose estimator), model assembly per ablation variant, enhancement of a PET (+CT) file, and the evaluation
(PSNR/SSIM mean ± std per method at 10 % dose, dose-generalisation figure, axial/coronal panels).

Array layout: MONAI's channel-first (1, x, y, z) as written by ``LoadImaged`` from the dataset's NIfTI files, batch
added: ``(1, 1, X, Y, Z)``.  PET is in network units x' = x / (m · mean(x)) (:class:`PETMeanScaled`, each volume its
own scale); CT is windowed to [0, 1].  Outputs are mapped back with the *input's* scale, i.e. to kBq/ml.

Metrics (documented in docs/upete.md): on the whole volume in kBq/ml against the standard-dose OSEM (SPET),
PSNR with L = max − min of the SPET (the paper's min-max-normalised images), 3D SSIM with a Gaussian window
(7 taps, σ = 1.5) and the same L.  Mean ± sample std over the test subjects.  Importing runs nothing.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bundle.baselines import gaussian_filter, non_local_means, tune_parameter
from bundle.checkpoint import Calibration, load_weights
from bundle.diffusion.latent import (
    DoseEstimator,
    GaussianLatentDiffusion,
    LatentDiffusionProcess,
    PoissonLatentDiffusion,
    calibrate_count_scale,
    latent_noise_variance,
)
from bundle.diffusion.poisson import PoissonDegradation, PoissonDoseSchedule
from bundle.metrics import metrics_table, psnr, ssim, summarise
from bundle.networks.ct_attention import CTGuidedLatentDenoiser
from bundle.networks.upete import CTEncoder, LDMVariant, UPETe

__all__ = [
    "ABLATIONS",
    "BASELINES",
    "Case",
    "PoissonDomain",
    "build_upete",
    "calibrate",
    "ct_encoder_for",
    "enhance_file",
    "evaluate_upete",
    "load_split",
    "load_trained_variants",
    "make_process",
]

BASELINES = ("LPET", "Gaussian", "NLM", "U-Net")
ABLATIONS = tuple(v.value for v in LDMVariant)


@dataclass(frozen=True)
class Case:
    """One subject: SPET, CT and LPETs in network units ``(1, 1, X, Y, Z)`` and their scales (kBq/ml per unit)."""

    case_id: str
    spet: torch.Tensor
    spet_scale: float
    ct: torch.Tensor
    low: Mapping[float, tuple[torch.Tensor, float]]


def _transforms(keys: Sequence[str], mean_multiple: float, ct_window_hu: Sequence[float]):
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from bundle.transforms.petct import CTWindowd
    from bundle.transforms.upete import PETMeanScaled

    pet_keys = [k for k in keys if k != "ct"]
    return Compose([
        LoadImaged(keys=list(keys), image_only=True),
        EnsureChannelFirstd(keys=list(keys)),
        PETMeanScaled(keys=pet_keys, mean_multiple=mean_multiple),
        CTWindowd(keys="ct", window_hu=ct_window_hu),
    ])


def load_split(
    dataset_dir: str | Path,
    split: str,
    *,
    doses: Sequence[float] | None = None,
    mean_multiple: float = 10.0,
    ct_window_hu: Sequence[float] = (-1000.0, 1000.0),
) -> list[Case]:
    """The cases of ``split`` (``training``/``validation``/``test``) with the LPETs of ``doses`` (default: all)."""
    root = Path(dataset_dir)
    listing = root / "datalist.json"
    if not listing.is_file():
        raise ValueError(
            f"dataset_dir must hold a datalist.json (python -m bundle.data build upete), got {str(root)!r}"
        )
    entries = json.loads(listing.read_text(encoding="utf-8")).get(split)
    if not entries:
        raise ValueError(f"split {split!r} of {listing} is empty or missing")
    cases = []
    for entry in entries:
        by_dose = {float(k): v for k, v in entry.get("pet_low_by_dose", {}).items()}
        wanted = sorted(by_dose) if doses is None else [float(d) for d in doses if float(d) in by_dose]
        data = {"pet": str(root / entry["pet"]), "ct": str(root / entry["ct"])}
        data.update({f"pet_low_{i}": str(root / by_dose[d]) for i, d in enumerate(wanted)})
        out = _transforms(list(data), mean_multiple, ct_window_hu)(data)
        low = {d: (out[f"pet_low_{i}"].as_tensor()[None].float(), float(out[f"pet_low_{i}_scale"][0]))
               for i, d in enumerate(wanted)}
        cases.append(Case(entry.get("id", Path(entry["pet"]).parent.name), out["pet"].as_tensor()[None].float(),
                          float(out["pet_scale"][0]), out["ct"].as_tensor()[None].float(), low))
    return cases


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


class PoissonDomain(StrEnum):
    """Where the Poisson variants' training degradation x_0 -> x_t happens."""

    SINOGRAM = "sinogram"
    """The paper's way (default): the subject's measured counts thinned to d_t and reconstructed by OSEM
    (:class:`~bundle.transforms.upete.RandDoseReductiond`, before the patch crop); x_t is an exact scan at d_t of
    the standard dose, so an LPET of dose d starts at the step of dose d."""
    IMAGE = "image"
    """Voxel-wise Poisson(κ_0 d_t x_0)/(κ_0 d_t) on the SPET patches (white noise added to the SPET's own noise);
    an LPET of dose d starts at the step of dose d_eff(d) (:class:`PoissonLatentDiffusion`)."""


def make_process(
    variant: LDMVariant | str,
    *,
    calibration: Calibration,
    num_train_timesteps: int = 400,
    min_dose: float = 0.005,
    poisson_domain: PoissonDomain | str = PoissonDomain.SINOGRAM,
) -> LatentDiffusionProcess:
    """Gaussian (LDM, LDM-CT) or Poisson (LDM-P, LDM-P-CT) process.

    The Poisson process's own degradation is image-space at the calibrated κ_0 in both domains: it draws x_t in
    training with ``poisson_domain="image"`` and re-degrades D(ẑ0) between reverse steps in either domain.
    ``poisson_domain`` also sets the start step of an LPET: dose d_eff(d) for ``"image"`` (noise added to the
    noisy SPET), d itself for ``"sinogram"`` (x_t is an exact dose-d_t scan nested in the SPET's counts).
    """
    v = LDMVariant.parse(variant)
    try:
        domain = PoissonDomain(poisson_domain)
    except ValueError:
        raise ValueError(
            f"poisson_domain must be one of {[d.value for d in PoissonDomain]}, got {poisson_domain!r}"
        ) from None
    if v.uses_poisson:
        schedule = PoissonDoseSchedule(num_steps=num_train_timesteps, min_dose=min_dose)
        degradation = PoissonDegradation(schedule=schedule, count_scale=calibration.count_scale, image_space=True)
        reference = calibration.reference_dose if domain is PoissonDomain.IMAGE else None
        return PoissonLatentDiffusion(degradation=degradation, reference_dose=reference)
    return GaussianLatentDiffusion(num_train_timesteps=num_train_timesteps,
                                   latent_noise_variance=calibration.latent_noise_variance,
                                   reference_dose=calibration.reference_dose)


def ct_encoder_for(variant: LDMVariant | str, **layout: Any) -> CTEncoder | None:
    """A :class:`CTEncoder` for the CT variants, ``None`` otherwise."""
    return CTEncoder(**layout) if LDMVariant.parse(variant).uses_ct else None


def build_upete(
    variant: LDMVariant | str,
    *,
    autoencoder: torch.nn.Module,
    latent_scale: float,
    latent_channels: int = 3,
    denoiser_layout: Mapping[str, Any],
    ct_encoder_layout: Mapping[str, Any],
) -> UPETe:
    """The :class:`UPETe` of ``variant`` (denoiser with or without CT attention + E_CT) around ``autoencoder``."""
    v = LDMVariant.parse(variant)
    denoiser = CTGuidedLatentDenoiser(latent_channels=latent_channels, use_ct=v.uses_ct, **dict(denoiser_layout))
    ct_encoder = ct_encoder_for(v, latent_channels=latent_channels, **dict(ct_encoder_layout))
    for p in autoencoder.parameters():
        p.requires_grad_(False)
    return UPETe(autoencoder=autoencoder, denoiser=denoiser, ct_encoder=ct_encoder, latent_scale=latent_scale)


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

    from bundle.inferers.upete import LatentEnhancementInferer

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


def _metrics(image: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    x, r = image.double()[0, 0], reference.double()[0, 0]
    rng = float(r.max() - r.min())
    return {"PSNR": float(psnr(x, r, data_range=rng)),
            "SSIM": float(ssim(x, r, data_range=rng, spatial_dims=3, kernel_size=7))}


def _unet_inferer(roi_size: Sequence[int] | None):
    from monai.inferers import SimpleInferer, SlidingWindowInferer

    if roi_size is None:
        return SimpleInferer()
    return SlidingWindowInferer(roi_size=tuple(roi_size), overlap=0.5, mode="gaussian")


def _panel(images: Mapping[str, torch.Tensor], path: Path, *, title: str, vmax: float) -> Path:
    """Axial (middle z) and coronal (middle y) views in MONAI layout (X, Y, Z), as the paper's Fig. 3."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(2.2 * len(images), 4.6), layout="constrained")
    axes = figure.subplots(2, len(images), squeeze=False)
    for column, (name, volume) in enumerate(images.items()):
        v = volume.detach().cpu().float()[0, 0]
        axial = v[:, :, v.shape[2] // 2].T
        coronal = v[:, v.shape[1] // 2, :].T
        for row, view in enumerate((axial, coronal)):
            ax = axes[row][column]
            ax.imshow(view.numpy(), cmap="gray_r", vmin=0.0, vmax=vmax, origin="lower", interpolation="nearest",
                      aspect="auto" if row == 1 else "equal")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][column].set_title(name)
    axes[0][0].set_ylabel("axial")
    axes[1][0].set_ylabel("coronal")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _dose_figure(curves: Mapping[str, Mapping[float, float]], path: Path) -> Path:
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
) -> dict[str, Any]:
    """Evaluate baselines and trained uPETe variants on the test split; write table, CSV, JSON and figures.

    Args:
        models: ``{variant name: (UPETe, LatentEnhancementInferer)}`` (any subset of :data:`ABLATIONS`).
        unet: the trained supervised U-Net (LPET -> SPET in network units), or ``None`` (row left out).
        table_dose: dose of the table (paper: 10 %).
        curve_doses / curve_methods: the dose-generalisation figure (only methods that are available).
        gaussian_grid: σ in voxels; nlm_grid: h / σ_n; tuned on the validation pairs at ``table_dose`` by PSNR.

    Returns:
        ``{"table": markdown, "rows": {method: {metric: (mean, std)}}, "curves": ..., "tuned": ..., "files": ...}``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    val = load_split(dataset_dir, "validation", doses=[table_dose], mean_multiple=mean_multiple,
                     ct_window_hu=ct_window_hu)
    test = load_split(dataset_dir, "test", mean_multiple=mean_multiple, ct_window_hu=ct_window_hu)
    models = dict(models or {})
    pairs = [(c.low[table_dose][0], c.spet) for c in val]

    def val_psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
        return _metrics(image, reference)["PSNR"]

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
            per_case[method].setdefault(dose, []).append({"case": case.case_id, **_metrics(est, ref)})
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
            values.append(_metrics(recon * case.spet_scale, case.spet * case.spet_scale))
        ceiling = {k: summarise([v[k] for v in values]) if len(values) > 1 else (values[0][k], 0.0)
                   for k in ("PSNR", "SSIM")}
    estimated_doses: dict[str, dict[str, float]] = {}
    estimator = next((inf.dose_estimator for _, inf in models.values() if inf.dose_estimator is not None), None)
    if estimator is not None:  # the image-only dose estimate the inferers fall back on when no dose is given
        estimated_doses = {c.case_id: {f"{d:g}": estimator(x) for d, (x, _) in sorted(c.low.items())} for c in test}
    rows = {}
    for method in methods:
        values = per_case[method].get(table_dose, [])
        if values:
            rows[method] = {k: summarise([v[k] for v in values]) if len(values) > 1 else (values[0][k], 0.0)
                            for k in ("PSNR", "SSIM")}
    table = metrics_table(rows, ["PSNR", "SSIM"], digits={"PSNR": 2, "SSIM": 4}).replace("| method |", "| Method |", 1)
    curves = {m: {d: sum(v["PSNR"] for v in vals) / len(vals) for d, vals in per_case[m].items()}
              for m in methods if m in curve_methods}
    files = {"table": out / "table.md", "json": out / "results.json", "csv": out / "per_case.csv",
             "dose_figure": out / "dose_generalisation.png", "panel": out / "panels.png"}
    files["table"].write_text(table + "\n", encoding="utf-8")
    with files["csv"].open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "dose", "case", "PSNR", "SSIM"])
        for method, by_dose in per_case.items():
            for dose, values in sorted(by_dose.items()):
                for v in values:
                    writer.writerow([method, dose, v["case"], f"{v['PSNR']:.4f}", f"{v['SSIM']:.5f}"])
    _dose_figure(curves, files["dose_figure"])
    ref = test[0].spet * test[0].spet_scale
    _panel({"LPET": panel_images.get("LPET", ref), "SPET": ref,
            **{k: v for k, v in panel_images.items() if k != "LPET"}},
           files["panel"], title=f"{test[0].case_id}, {100 * table_dose:g} % dose", vmax=float(ref.max()) * 0.6)
    result = {
        "table": table, "rows": rows, "curves": {m: {str(d): v for d, v in c.items()} for m, c in curves.items()},
        "tuned": {"gaussian_sigma_voxels": sigma, "gaussian_scores": sigma_scores, "nlm_h_factor": h,
                  "nlm_scores": h_scores},
        "autoencoder_ceiling": ceiling, "estimated_doses": estimated_doses, "seconds": timings,
        "test_cases": [c.case_id for c in test],
        "table_dose": table_dose,
        "files": {k: str(v) for k, v in files.items()},
    }
    files["json"].write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
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
    from bundle.transforms.upete import PETMeanScaled

    keys = ["pet"] + (["ct"] if ct_file is not None else [])
    if network.uses_ct and ct_file is None:
        raise ValueError("ct_file is required: this model uses CT-guided attention (LDM-CT / LDM-P-CT), got None")
    data = {"pet": str(pet_file), **({"ct": str(ct_file)} if ct_file is not None else {})}
    steps = [LoadImaged(keys=keys, image_only=True), EnsureChannelFirstd(keys=keys),
             ValidatePETCTd(pet_key="pet", ct_key="ct" if ct_file is not None else None,
                            require_ct=ct_file is not None),
             PETMeanScaled(keys="pet", mean_multiple=mean_multiple)]
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
