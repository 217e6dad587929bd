"""The combined uPETe checkpoint: one file with everything inference needs, for the MONAI Label-style task
(:mod:`bundle.app`) and the model-zoo export (:mod:`bundle.zoo`).

Training writes the parts separately: the autoencoder (``<upete_dir>/autoencoder/autoencoder_final.pt``, key
``autoencoder``), each latent-diffusion variant (``<upete_dir>/<variant>/ldm_final.pt``, key ``network``: the whole
:class:`~bundle.networks.upete.UPETe` with the frozen autoencoder inside) and the calibration
(``<upete_dir>/calibration.json``, :class:`Calibration`, measured by :func:`calibrate`, read by
:func:`load_calibration`); :func:`load_trained_variants` builds every trained variant with its inferer from
these parts.  :func:`combine_upete`
assembles them into the configured ``UPETe`` of one variant and writes, atomically
(:func:`bundle.checkpoint.save_checkpoint`),
``<upete_dir>/<variant>/upete_model.pt``::

    {"network":     UPETe state dict (autoencoder E/D, denoiser f_θ, E_CT for the CT variants, latent scale s),
     "calibration": {"latent_scale": s, "count_scale": κ_0, "latent_noise_variance": σ²_ref,
                     "reference_dose": d_ref, "dose_estimator_a": a, "dose_estimator_b": b},   (floats)
     "variant":     "LDM" | "LDM-P" | "LDM-CT" | "LDM-P-CT",
     "settings":    {config id: value} the model was trained with and inference must repeat (layouts,
                    num_train_timesteps, min_dose, poisson_domain, mean_multiple, ct_window_hu; config id
                    ``upete_settings``)}

Only tensors and plain values (str, int, float, bool, lists, dicts): the file loads with
``torch.load(weights_only=True)`` (:func:`read_combined`).  The calibration travels inside the file because the
inferer needs it (the dose schedule uses κ_0, the sampler starts at the step of the estimated dose), and the
settings make the file self-describing: :func:`bundle.app.build_task` sets ``variant`` and the settings' config ids
from the file, so a combined checkpoint needs no architecture overrides.

Config ids (configs/upete/inference.json): ``combining`` writes the file, ``checkpoint`` names it,
``upete_calibration`` reads its calibration, ``upete_settings`` lists what is stored.  Importing runs nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from bundle.checkpoint.io import CheckpointError, load_checkpoint, load_state_dicts, load_weights, save_checkpoint
from bundle.data.upete import load_split
from bundle.diffusion.latent import DoseEstimator, calibrate_count_scale, latent_noise_variance
from bundle.inferers.upete import LatentEnhancementInferer, PoissonDomain, make_process
from bundle.networks.upete import IdentityAutoencoder, LDMVariant, UPETe, build_upete
from bundle.progress import progress_bar

__all__ = [
    "COMBINED_FILENAME",
    "COMBINED_KEYS",
    "Calibration",
    "calibrate",
    "combine_upete",
    "combined_calibration",
    "combined_state",
    "load_calibration",
    "load_trained_variants",
    "read_combined",
]

COMBINED_FILENAME = "upete_model.pt"
"""File name of the combined checkpoint inside ``<upete_dir>/<variant>/``."""

COMBINED_KEYS = ("network", "calibration", "variant")
"""Entries every combined checkpoint holds (``settings`` is optional; module docstring)."""

@dataclass(frozen=True)
class Calibration:
    """Constants measured on the data (:func:`calibrate`); stored as JSON next to the
    checkpoints and inside the combined checkpoint."""

    latent_scale: float
    count_scale: float
    latent_noise_variance: float
    reference_dose: float
    dose_estimator_a: float
    dose_estimator_b: float

    def dose_estimator(self) -> DoseEstimator:
        est = DoseEstimator()
        est.a, est.b = self.dose_estimator_a, self.dose_estimator_b
        return est


def load_calibration(path: str | Path) -> Calibration:
    """The :class:`Calibration` written by :func:`calibrate` (``output_file``)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"calibration file {str(file)!r} does not exist (run the latent diffusion training first)")
    return Calibration(**json.loads(file.read_text(encoding="utf-8")))



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

    latents = torch.cat([mu(c.spet).flatten() for c in progress_bar(train, desc="calibration: latent scale",
                                                                     unit="case")])
    scale = 1.0 / float(latents.std())
    kappa, sigma2 = [], []
    for c in progress_bar(val, desc="calibration: count scale, latent noise", unit="case"):
        kappa.append(calibrate_count_scale(c.spet, c.low[reference_dose][0], dose=reference_dose))
        sigma2.append(latent_noise_variance(scale * mu(c.spet), scale * mu(c.low[reference_dose][0])))
    est = DoseEstimator().calibrate([c.spet for c in val], [c.low[reference_dose][0] for c in val],
                                    dose=reference_dose)
    cal = Calibration(scale, sum(kappa) / len(kappa), sum(sigma2) / len(sigma2), float(reference_dose),
                      float(est.a), float(est.b))
    if output_file is not None:
        path = Path(output_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(cal), indent=2) + "\n", encoding="utf-8")
    return cal


_COMBINE_HINT = ("python -m monai.bundle run combining --config_file \"['configs/common.json',"
                 "'configs/upete/network.json','configs/upete/inference.json']\" --variant VARIANT "
                 "(recipe upete/combine)")


def _require_file(path: str | Path, name: str, how: str) -> Path:
    if not isinstance(path, str | Path) or str(path) == "":
        raise ValueError(f"{name} must be a file path, got {path!r}")
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{name} {str(file)!r} does not exist: {how}")
    return file


def _plain(value: Any, name: str) -> Any:
    """``value`` as nested str / int / float / bool / None / list / dict (what ``weights_only=True`` loads)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name} must have str keys, got {sorted(map(repr, value))}")
        return {k: _plain(v, f"{name}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{name}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{name} must be a str, number, bool, None, list or dict (config values), got "
                     f"{type(value).__name__}")


def combined_state(
    *,
    network: torch.nn.Module,
    calibration: Any,
    variant: LDMVariant | str,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The combined checkpoint's content (module docstring) for ``network`` (a ``UPETe``), ``calibration`` (a
    :class:`Calibration` or a mapping of its fields), ``variant`` and ``settings`` (config id -> plain value)."""
    if not isinstance(network, torch.nn.Module):
        raise TypeError(f"network must be a torch.nn.Module (a UPETe), got {type(network).__name__}")
    if not isinstance(calibration, Calibration | Mapping):
        raise TypeError(f"calibration must be a Calibration or a mapping of its fields, got "
                        f"{type(calibration).__name__}")
    values = asdict(calibration) if isinstance(calibration, Calibration) else dict(calibration)
    expected = sorted(f.name for f in fields(Calibration))
    if sorted(values) != expected:
        raise ValueError(f"calibration must have the fields {expected}, got {sorted(values)}")
    if settings is not None and not isinstance(settings, Mapping):
        raise ValueError(f"settings must be a mapping config id -> value or None, got {type(settings).__name__}")
    settings = _plain(dict(settings or {}), "settings")
    if "variant" in settings:
        raise ValueError("settings must not hold 'variant' (stored as its own entry), got "
                         f"{settings['variant']!r}")
    return {"network": network.state_dict(), "calibration": {k: float(v) for k, v in values.items()},
            "variant": LDMVariant.parse(variant).value, "settings": settings}


def read_combined(path: str | Path) -> dict[str, Any]:
    """A combined checkpoint as ``{"network": state dict, "calibration": Calibration, "variant": str,
    "settings": {config id: value}}`` (``settings`` empty when the file has none).

    Raises:
        ValueError: ``path`` does not exist (the message says how to write it), or the file is not a combined
            checkpoint (e.g. a training ``ldm_final.pt``: no calibration), naming the file and the missing entries.
        CheckpointError: unreadable or truncated file.
    """
    file = _require_file(path, "uPETe checkpoint", f"write it from the trained parts with {_COMBINE_HINT}")
    state = load_checkpoint(file)
    missing = [k for k in COMBINED_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {file} is not a combined uPETe checkpoint: it lacks {missing} (expected the keys "
            f"{list(COMBINED_KEYS)}, found {sorted(map(str, state))}); a training file such as ldm_final.pt holds "
            f"the weights but not the calibration the inferer needs. Write the combined file with {_COMBINE_HINT}"
        )
    values = state["calibration"]
    expected = sorted(f.name for f in fields(Calibration))
    if not isinstance(values, Mapping) or sorted(values) != expected:
        found = sorted(values) if isinstance(values, Mapping) else type(values).__name__
        raise CheckpointError(f"checkpoint {file}: entry 'calibration' must have the fields {expected}, got {found}")
    try:
        variant = LDMVariant.parse(state["variant"]).value
    except ValueError as error:
        raise CheckpointError(f"checkpoint {file}: entry 'variant' is invalid: {error}") from None
    settings = state.get("settings", {})
    if not isinstance(settings, Mapping):
        raise CheckpointError(f"checkpoint {file}: entry 'settings' must be a mapping config id -> value, got "
                              f"{type(settings).__name__}")
    return {"network": state["network"], "calibration": Calibration(**{k: float(v) for k, v in values.items()}),
            "variant": variant, "settings": dict(settings)}


def combined_calibration(path: str | Path):
    """The :class:`Calibration` stored in a combined checkpoint (:func:`read_combined`)."""
    return read_combined(path)["calibration"]


def combine_upete(
    *,
    variant: LDMVariant | str,
    autoencoder_def: torch.nn.Module,
    autoencoder_checkpoint: str | Path,
    ldm_checkpoint: str | Path,
    calibration_file: str | Path,
    denoiser_layout: Mapping[str, Any],
    ct_encoder_layout: Mapping[str, Any],
    latent_channels: int = 3,
    settings: Mapping[str, Any] | None = None,
    output_file: str | Path,
) -> Path:
    """Assemble the trained parts of ``variant`` into one ``UPETe`` and write the combined checkpoint.

    The autoencoder comes from ``autoencoder_checkpoint`` (entry ``autoencoder``), the denoiser f_θ, E_CT and the
    latent scale from ``ldm_checkpoint`` (entry ``network``), the calibration from ``calibration_file``.  Two
    consistency checks: the autoencoder stored inside ``ldm_checkpoint`` (frozen while the variant trained) must
    equal ``autoencoder_checkpoint`` (else the autoencoder was retrained after the variant, whose latents no longer
    match), and the latent scale s of ``ldm_checkpoint`` must equal the calibration's.  An ``ldm_checkpoint`` in a
    folder named after another variant is refused (LDM / LDM-P and LDM-CT / LDM-P-CT have the same modules).

    Args (keyword-only):
        variant: ``"LDM"``, ``"LDM-P"``, ``"LDM-CT"`` or ``"LDM-P-CT"``.
        autoencoder_def: an untrained ``AutoencoderKL`` of the configured layout (weights are loaded into it), or
            the :class:`~bundle.networks.upete.IdentityAutoencoder` of the image-space extension (then
            ``autoencoder_checkpoint`` is not read).
        autoencoder_checkpoint / ldm_checkpoint / calibration_file: the training outputs (module docstring).
        denoiser_layout / ct_encoder_layout / latent_channels: the layouts the variant was trained with.
        settings: config id -> value stored with the weights (the config id ``upete_settings``: layouts, process
            and intensity settings), applied again when the file is loaded by :func:`bundle.app.build_task`.
        output_file: the combined checkpoint (conventionally ``<upete_dir>/<variant>/upete_model.pt``).

    Returns:
        ``output_file`` as a ``Path``.

    Raises:
        ValueError: a missing part (the message names the file and the training step that writes it), an
            inconsistent autoencoder or latent scale.
        CheckpointError: a part that does not fit the configured architecture.
    """
    v = LDMVariant.parse(variant)
    if not isinstance(output_file, str | Path) or str(output_file) == "":
        raise ValueError(f"output_file must be a file path (e.g. <upete_dir>/{v.value}/{COMBINED_FILENAME}), got "
                         f"{output_file!r}")
    image_space = isinstance(autoencoder_def, IdentityAutoencoder)  # no autoencoder stage, nothing to load
    ae_file = None if image_space else _require_file(
        autoencoder_checkpoint, "autoencoder_checkpoint",
        "train the autoencoder first (configs/upete/train_autoencoder.json, run id training)")
    ldm_file = _require_file(ldm_checkpoint, "ldm_checkpoint", f"train variant {v.value} first "
                             f"(configs/upete/train_ldm.json, run id training, --variant {v.value})")
    cal_file = _require_file(calibration_file, "calibration_file",
                             "the latent-diffusion training writes it (configs/upete/train_ldm.json)")
    folder = ldm_file.parent.name
    if folder in {x.value for x in LDMVariant} and folder != v.value:
        raise ValueError(f"ldm_checkpoint {str(ldm_file)!r} lies in the folder of variant {folder}, but variant is "
                         f"{v.value!r}; the Gaussian and Poisson variants have the same modules, so the weights alone "
                         "cannot tell them apart: pass the matching --variant")
    if ae_file is not None:
        load_state_dicts({"autoencoder": autoencoder_def}, ae_file)
    calibration = load_calibration(cal_file)
    network = build_upete(v, autoencoder=autoencoder_def, latent_scale=calibration.latent_scale,
                          latent_channels=latent_channels, denoiser_layout=denoiser_layout,
                          ct_encoder_layout=ct_encoder_layout)
    trained = load_checkpoint(ldm_file, expected_keys=["network"])["network"]
    autoencoder_state = {f"autoencoder.{k}": t for k, t in autoencoder_def.state_dict().items()}
    stale = [k for k, t in trained.items() if k in autoencoder_state
             and (t.shape != autoencoder_state[k].shape or not torch.equal(t.cpu(), autoencoder_state[k].cpu()))]
    if stale:
        raise ValueError(
            f"the autoencoder inside ldm_checkpoint {str(ldm_file)!r} differs from autoencoder_checkpoint "
            f"{str(ae_file)!r} ({len(stale)} tensors, e.g. {stale[0]!r}): the autoencoder was retrained after "
            f"variant {v.value} was trained; retrain the variant (and the calibration) with this autoencoder"
        )
    merged = {**autoencoder_state, **{k: t for k, t in trained.items() if not k.startswith("autoencoder.")}}
    try:
        network.load_state_dict(merged)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {ldm_file}: entry 'network' does not fit the configured UPETe of variant {v.value} "
            f"(wrong --variant, denoiser_layout or ct_encoder_layout?): {error}"
        ) from error
    stored_scale = float(network.latent_scale)
    if abs(stored_scale - calibration.latent_scale) > 1e-6 * abs(calibration.latent_scale):
        raise ValueError(
            f"the latent scale of ldm_checkpoint {str(ldm_file)!r} (s = {stored_scale!r}) differs from "
            f"calibration_file {str(cal_file)!r} (s = {calibration.latent_scale!r}): the calibration was rewritten "
            "for another autoencoder or dataset; retrain the variant or restore its calibration.json"
        )
    state = combined_state(network=network.eval(), calibration=calibration, variant=v, settings=settings)
    return save_checkpoint(state, Path(output_file))


def load_trained_variants(
    upete_dir: str | Path,
    *,
    variants: Sequence[str] = tuple(v.value for v in LDMVariant),
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
    labels: Mapping[str, str] | None = None,
) -> dict[str, tuple[UPETe, Any]]:
    """``{variant: (UPETe with ``<upete_dir>/<variant>/ldm_final.pt`` loaded, LatentEnhancementInferer)}``; variants
    without a checkpoint are skipped (``ValueError`` with ``require_all``).  ``poisson_domain`` must be the one the
    Poisson variants were trained with (:func:`make_process`).  ``labels`` renames variants in the result (the
    image-space extension's LDM-P-CT is ``"IMG-P-CT"`` in the tables)."""
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
        models[str(dict(labels or {}).get(str(name), name))] = (network, inferer)
    return models
