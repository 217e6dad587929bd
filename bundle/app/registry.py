"""Build a method's infer task from its bundle configs and a checkpoint: :func:`build_task`.

Checkpoints (``torch.load(weights_only=True)``, :func:`bundle.checkpoint.load_state_dicts`):

* petdds: ``{"network": state_dict}`` (training's ``network_final.pt``); default: the config's ``checkpoint``, the
  shipped score model ``models/petdds_score.pt`` (sha256-verified, :mod:`bundle.checkpoint.shipped`).
* legopet: ``{"network": denoiser, "pnpnet": PnPNet[, "settings": {sinogram_scale, image_scale}]}`` in one file
  (the shipped ``models/<legopet|cdpm|...>.pt``, the default of configs/legopet/inference.json, or the model-zoo
  ``models/model.pt``); a training checkpoint without ``pnpnet`` takes the PnPNet from the config's ``pnpnet_ckpt``
  (entry ``pnpnet_key``); the cDPM (``pnpnet`` null in the config) needs only ``network``.
* upete: the combined checkpoint ``{"network": state_dict of upete_network, "calibration": {...}, "variant": ...,
  "settings": {...}}`` (:mod:`bundle.checkpoint.upete`; written by the config id ``combining``); default: the
  config's ``checkpoint`` (the shipped ``models/upete_image.pt``).  The file decides ``variant``, the
  calibration (``upete_calibration``) and the stored training settings (layouts, process, intensity scaling); an
  override that contradicts them is a ``ValueError``.  configs/upete/inference.json must define ``upete_network``,
  ``upete_inferer`` and ``upete_calibration``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import method_parser
from .task import InferTask

__all__ = ["METHODS", "build_task"]

METHODS: tuple[str, ...] = ("legopet", "petdds", "upete")


def _load(objects: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """Load ``objects`` from checkpoint ``path``; returns the checkpoint (read once)."""
    from bundle.checkpoint import load_state_dicts

    return load_state_dicts(objects, path)


def _device(parser, device: str | None) -> str:
    return str(parser.get_parsed_content("device")) if device is None else device


def _petdds(parser, checkpoint: str | Path | None, device: str | None) -> InferTask:
    from .petdds import PETDDSInferTask

    network = parser.get_parsed_content("network_def")
    checkpoint = parser.get_parsed_content("checkpoint") if checkpoint is None else checkpoint
    _load({"network": network}, checkpoint)
    return PETDDSInferTask(
        network=network, inferer=parser.get_parsed_content("petdds_inferer"), device=_device(parser, device),
        scanner_preset=parser.get("scanner_preset", "small_3d"), fwhm_mm=parser.get("fwhm_mm", 4.5),
        checkpoint=checkpoint, description="PET-DDS-δ: 3D sinogram -> 3D PET with a 2D diffusion prior")


def _legopet(parser, checkpoint: str | Path | None, device: str | None) -> InferTask:
    from .legopet import LegoPETInferTask

    guided = parser.get("pnpnet") is not None
    if checkpoint is not None:
        parser["checkpoint"] = str(checkpoint)  # replaces the shipped file, also as the source of the settings
    checkpoint = parser.get_parsed_content("checkpoint")
    if guided:
        parser["pnpnet"] = "$@pnpnet_def.requires_grad_(False).eval()"  # weights are loaded below
    network = parser.get_parsed_content("network_def")
    state = _load({"network": network}, checkpoint)
    if guided:
        pnpnet = parser.get_parsed_content("pnpnet")
        if "pnpnet" in state:  # a shipped / model-zoo file holds its PnPNet (read above, not again)
            from bundle.checkpoint import CheckpointError

            try:
                pnpnet.load_state_dict(state["pnpnet"])
            except RuntimeError as error:
                raise CheckpointError(f"checkpoint {checkpoint}: entry 'pnpnet' does not fit the configured PnPNet "
                                      f"(wrong layout?): {error}") from error
        else:  # a training checkpoint: the PnPNet of pnpnet_ckpt (entry pnpnet_key)
            _load({parser.get_parsed_content("pnpnet_key"): pnpnet}, parser.get_parsed_content("pnpnet_ckpt"))
    count_key = parser.get_parsed_content("count_scale_key")
    return LegoPETInferTask(
        network=network, inferer=parser.get_parsed_content("sampler"), device=_device(parser, device),
        sinogram_scale=parser.get_parsed_content("sinogram_scale"),
        image_scale=parser.get_parsed_content("image_scale"),
        count_scale=parser.get("count_scale"), count_scale_key=count_key,
        sinogram_shape=parser.get_parsed_content("sinogram_shape"), pad_size=parser.get_parsed_content("pad_size"),
        scanner_preset=parser.get_parsed_content("scanner_preset"), checkpoint=checkpoint,
        samples=parser.get("num_samples", 4),
        description=("LegoPET" if guided else "cDPM") + ": 2D sinogram -> 2D PET (guided conditional diffusion)")


def _same(a: Any, b: Any) -> bool:
    import json

    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _check_overrides(overrides: Mapping[str, Any], fixed: Mapping[str, Any], checkpoint: str | Path) -> None:
    """``ValueError`` for an override (``id`` or ``id#sub#...``) that contradicts a value stored in the checkpoint."""
    for key, value in overrides.items():
        root, *path = str(key).split("#")
        if root not in fixed:
            continue
        stored: Any = fixed[root]
        for part in path:
            if isinstance(stored, Mapping) and part in stored:
                stored = stored[part]
            elif isinstance(stored, list) and part.isdigit() and int(part) < len(stored):
                stored = stored[int(part)]
            else:
                stored = None
                break
        if not _same(value, stored):
            raise ValueError(f"override {key}={value!r} contradicts the checkpoint {checkpoint}, which was trained "
                             f"with {key}={stored!r}; drop the override (the combined checkpoint fixes it)")


def _upete(parser, checkpoint: str | Path | None, device: str | None,
           overrides: Mapping[str, Any] | None = None) -> InferTask:
    from .upete import UPETeInferTask, require_upete

    require_upete()
    from bundle.checkpoint import CheckpointError, read_combined

    for key in ("upete_network", "upete_inferer", "upete_calibration"):
        if key not in parser:
            raise ValueError(f"the uPETe inference config must define {key!r} (configs/upete/inference.json)")
    if "variant" in parser:  # before the default checkpoint path, which is built from it
        from bundle.networks.upete import LDMVariant

        LDMVariant.parse(parser["variant"])
    if checkpoint is None:
        if "checkpoint" not in parser:
            raise ValueError("the uPETe inference config must define 'checkpoint' (configs/upete/inference.json)"
                             " or a checkpoint must be given")
        checkpoint = parser.get_parsed_content("checkpoint")
    combined = read_combined(checkpoint)
    fixed = {"variant": combined["variant"], **combined["settings"]}
    _check_overrides(overrides or {}, fixed, checkpoint)
    for key, value in fixed.items():
        parser[key] = value
    parser["checkpoint"] = str(checkpoint)
    parser["upete_calibration"] = combined["calibration"]  # read once, above
    network = parser.get_parsed_content("upete_network")
    try:
        network.load_state_dict(combined["network"])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {checkpoint}: entry 'network' does not fit the configured UPETe of "
                              f"variant {combined['variant']} (wrong architecture or settings?): {error}") from error
    return UPETeInferTask(
        network=network, inferer=parser.get_parsed_content("upete_inferer"), device=_device(parser, device),
        mean_multiple=parser.get_parsed_content("mean_multiple") if "mean_multiple" in parser else 10.0,
        ct_window_hu=parser.get_parsed_content("ct_window_hu") if "ct_window_hu" in parser else (-1000.0, 1000.0),
        variant=combined["variant"], calibration=combined["calibration"], settings=combined["settings"],
        checkpoint=checkpoint, description=f"uPETe {combined['variant']}: low-dose PET (+ CT) -> enhanced PET "
                                           "(latent diffusion)")


_BUILDERS = {"legopet": _legopet, "petdds": _petdds, "upete": _upete}


def build_task(
    method: str,
    *,
    checkpoint: str | Path | None = None,
    config_files: Sequence[str | Path] | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str | None = None,
) -> InferTask:
    """The infer task of ``method`` with its network, inferer and scales from the configs and weights from
    ``checkpoint`` (module docstring; ``None`` = the config's default checkpoint path).

    Args:
        method: ``"legopet"``, ``"petdds"`` or ``"upete"``.
        checkpoint: weights file (loaded with ``weights_only=True``).
        config_files: the layered configs (default: :data:`bundle.app.config.INFERENCE_RECIPES`).
        overrides: config id -> value (e.g. ``{"network_def#channels": [8, 8], "dataset_dir": "data/legopet"}``).
        device: where the network runs (default: the config's ``device``).
    """
    if method not in _BUILDERS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method == "upete":
        from .upete import require_upete

        require_upete()  # before reading configs: a missing module is the more useful message
    parser = method_parser(method, config_files=config_files, overrides=overrides)
    if method == "upete":
        return _upete(parser, checkpoint, device, overrides)
    return _BUILDERS[method](parser, checkpoint, device)
