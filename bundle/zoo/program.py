"""``torch.export`` of an exported bundle's ``network_def``: what ``python -m monai.bundle ckpt_export`` would give,
for networks TorchScript cannot take.

Why not ``ckpt_export``: it scripts (``torch.jit.script``), which fails on MONAI's ``DiffusionModelUNet`` (its
middle block always holds a ``SpatialAttentionBlock``, whatever ``attention_levels``) and on LegoPET's denoiser
(keyword-only arguments); its ``--use_trace`` feeds one tensor, but the
diffusion networks take two or three inputs; and TorchScript is deprecated in torch 2.13.  ``torch.export`` takes
the real inputs (``image`` plus :func:`bundle.zoo.forward_args` of the metadata) and gives an ``ExportedProgram``:

    python -m bundle.zoo program BUNDLE_DIR --output network.pt2
    program = torch.export.load("network.pt2"); program.module()(image, timesteps=t[, sinogram=s | ct=c])

Shapes are static (those of ``network_data_format``, batch 1).  The program is checked against the eager network
on other inputs (other values and timesteps) before it is written; ``metadata.json`` travels as an extra file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .network_format import forward_args

__all__ = ["export_program"]


def _inputs(metadata: dict, *, seed: int) -> tuple[tuple[torch.Tensor], dict[str, torch.Tensor]]:
    spec = metadata["network_data_format"]["inputs"]["image"]
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(1, int(spec["num_channels"]), *spec["spatial_shape"], generator=generator)
    return (image,), forward_args(metadata, seed=seed)


def export_program(bundle_root: str | Path, *, output: str | Path, rtol: float = 1e-4, atol: float = 1e-5) -> Path:
    """``torch.export.export`` of ``network_def`` of the bundle at ``bundle_root`` (its own configs and weights),
    verified on other inputs, saved to ``output`` (``.pt2``); returns ``output``.

    Raises:
        ValueError: the program differs from the eager network by more than ``atol + rtol·|eager|``.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_root).resolve()
    metadata = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root), "device": "cpu"})
    network = parser.get_parsed_content("network_def").eval()
    args, kwargs = _inputs(metadata, seed=0)
    with torch.no_grad():
        program = torch.export.export(network, args, kwargs=kwargs)
        check_args, check_kwargs = _inputs(metadata, seed=1)
        eager, exported = network(*check_args, **check_kwargs), program.module()(*check_args, **check_kwargs)
    if eager.shape != exported.shape or not torch.allclose(exported, eager, rtol=rtol, atol=atol):
        error = float((exported - eager).abs().max()) if eager.shape == exported.shape else float("nan")
        raise ValueError(f"the exported program differs from the eager network_def of {root}: max abs error "
                         f"{error:.3g}, expected <= atol {atol} + rtol {rtol}·|eager|")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    torch.export.save(program, str(temporary), extra_files={"metadata.json": json.dumps(metadata)})
    temporary.replace(output)
    return output
