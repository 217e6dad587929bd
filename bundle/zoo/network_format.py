"""The exported network as it is: its ``network_data_format`` (metadata), its description (model card) and example
forward inputs (MONAI's ``verify_net_in_out``, ``torch.export``).

``network_def`` of an exported bundle is the trained network of the infer task:

=========  ===========================================  ================================================
method     forward                                      inputs (``network_data_format``)
=========  ===========================================  ================================================
petdds     ``DiffusionModelUNet(x_t, timesteps)``         ``image`` (1, H, W) slice, ``timesteps`` (B,)
legopet    ``LegoPETDenoiser(x_t, timesteps, sinogram)``  ``image`` (1, P, P), ``timesteps``, ``sinogram``
                                                        (condition channels, P, P)
upete      ``UPETe(z_t, timesteps, ct)``                  ``image`` latent (c, d, h, w), ``timesteps``, ``ct``
                                                        (1, f d, f h, f w) for the CT variants
=========  ===========================================  ================================================

The first input is ``image`` (what ``verify_net_in_out`` feeds); the others are keyword arguments of ``forward``
(:func:`forward_args` builds them for ``extra_forward_args``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["forward_args", "network_data_format", "network_description"]


def _tensor(channels: int, shape: list[int], definition: str, *, fmt: str = "magnitude") -> dict[str, Any]:
    return {"type": "image", "format": fmt, "modality": "PET", "num_channels": int(channels),
            "spatial_shape": [int(s) for s in shape], "dtype": "float32", "value_range": [], "is_patch_data": False,
            "channel_def": {"0": definition}}


def _timesteps(num_train_timesteps: int) -> dict[str, Any]:
    return {"type": "tensor", "format": "timesteps", "num_channels": 0, "spatial_shape": [], "dtype": "int64",
            "value_range": [0, int(num_train_timesteps) - 1], "is_patch_data": False, "channel_def": {}}


def _shapes(method: str, task: Any) -> dict[str, Any]:
    """Input shapes and wording of the task's network (see the module table)."""
    if method == "petdds":
        from bundle.physics import preset

        grid = [int(s) for s in preset(task.scanner_preset).image.shape[1:]]
        return {"image": _tensor(1, grid, "x_t: noisy transverse slice in normalised units (activity / per-slice "
                                          "mean over positive voxels)"),
                "extra": {}, "out": (1, grid, "predicted noise epsilon of the slice"), "T": 1000}
    if method == "legopet":
        size = int(task.pad.size)
        condition = int(task.network.condition_channels) if hasattr(task.network, "condition_channels") else 1
        sinogram = _tensor(condition, [size, size], "sinogram s (counts / mean counts per bin) zero-padded to the "
                                                    "network grid (+ PnPNet image for the image-condition variants)",
                           fmt="sinogram")
        return {"image": _tensor(1, [size, size], "x_t: noisy standardised image on the network grid"),
                "extra": {"sinogram": sinogram}, "out": (1, [size, size], "predicted v (v-prediction) or epsilon"),
                "T": int(task.inferer.scheduler.num_train_timesteps)}
    network = task.network
    factor = int(network.factor)
    roi = list(getattr(task.inferer, "roi_size", None) or (8 * factor,) * 3)
    latent = [int(r) // factor for r in roi]
    channels = int(task.settings["latent_channels"])
    extra = {}
    if network.uses_ct:
        window = [float(v) for v in task.ct_window_hu]
        extra["ct"] = {**_tensor(1, roi, f"CT of the PET patch, Hounsfield units {window} windowed to [0, 1]",
                                 fmt="hounsfield"), "modality": "CT", "value_range": [0, 1]}
    return {"image": _tensor(channels, latent, "z_t: latent of a PET patch (s E(x)) at diffusion step t"),
            "extra": extra, "out": (channels, latent, "z0 estimate (latent)"),
            "T": int(task.settings["num_train_timesteps"])}


def network_data_format(method: str, task: Any, post_processed_outputs: Mapping[str, Any]) -> dict[str, Any]:
    """``network_data_format`` of the task's network (inputs ``image``, ``timesteps`` and the extra forward inputs;
    output ``pred``), with the method's ``post_processed_outputs`` (the written image)."""
    shapes = _shapes(method, task)
    channels, grid, definition = shapes["out"]
    pred = _tensor(channels, grid, definition)
    return {"inputs": {"image": shapes["image"], "timesteps": _timesteps(shapes["T"]), **shapes["extra"]},
            "outputs": {"pred": pred}, "post_processed_outputs": dict(post_processed_outputs)}


def forward_args(metadata: Mapping[str, Any] | str | Path, *, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """The keyword inputs of ``network_def`` other than ``image`` (``verify_net_in_out``'s ``extra_forward_args``):
    random tensors of the metadata's shapes, ``timesteps`` in its value range; ``metadata`` may be the file."""
    if not isinstance(metadata, Mapping):
        metadata = json.loads(Path(metadata).read_text(encoding="utf-8"))
    inputs = metadata["network_data_format"]["inputs"]
    generator = torch.Generator().manual_seed(seed)
    args: dict[str, torch.Tensor] = {}
    for name, spec in inputs.items():
        if name == "image":
            continue
        if spec["format"] == "timesteps":
            low, high = spec["value_range"]
            args[name] = torch.randint(int(low), int(high) + 1, (batch,), generator=generator)
        else:
            args[name] = torch.rand(batch, int(spec["num_channels"]), *spec["spatial_shape"], generator=generator)
    return args


def network_description(method: str, task: Any, architecture: Mapping[str, Any]) -> list[str]:
    """Markdown lines describing the exported network: its class, parameters and ``architecture`` (the resolved
    ``network_def`` config, or uPETe's stored layouts)."""
    network = task.network
    count = sum(p.numel() for p in network.parameters())
    lines = [f"`{type(network).__module__}.{type(network).__name__}`, {count:,} parameters (as exported):", ""]
    lines += [f"* `{key}`: `{json.dumps(value)}`" for key, value in architecture.items() if not key.startswith("_")]
    return lines
