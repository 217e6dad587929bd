"""TorchScript export of the trained networks, by tracing (what ``python -m monai.bundle ckpt_export`` cannot do here).

Why not ``ckpt_export``: it scripts by default, and ``torch.jit.script`` fails on every MONAI network with a
self-attention block (``monai.networks.blocks.SpatialAttentionBlock`` reshapes with ``x.reshape(*shape[:2], -1)``,
which TorchScript cannot type), i.e. on ``DiffusionModelUNet`` and ``AutoencoderKL``.  Its ``--use_trace`` path
feeds one random tensor, but the diffusion networks take two or three inputs ``(x_t, timesteps[, sinogram])``.
Tracing with the right example inputs works: the networks have no data-dependent control flow, and the timestep
embedding is tensor arithmetic, so the trace holds for any timestep and batch size.  Every export is checked
against the eager network on *other* inputs (another batch size, other timesteps) before it is written.

What is exported per method (``python -m bundle.zoo torchscript --method M --output FILE.ts``):

* ``petdds``: the score network ε_θ(x_t, t), inputs ``(B, 1, H, W)`` image-grid slices and ``(B,)`` timesteps;
* ``legopet``: the whole guided noise prediction of one sampling step,
  ε̃ = (1 + λ) ε(x_t, t, s, PnPNet features of s) − λ ε(x_t, t, ∅) (:class:`GuidedLegoPETEpsilon`), inputs
  ``(B, 1, P, P)`` noisy image, ``(B,)`` timesteps, ``(B, 1, P, P)`` padded sinogram in network units.

The scheduler loop and the physics (PET-DDS-δ's data consistency) stay in Python; they are not networks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["GuidedLegoPETEpsilon", "export_torchscript", "trace_network"]


class GuidedLegoPETEpsilon(nn.Module):
    """LegoPET's classifier-free-guided noise prediction as one module (for tracing).

    ε̃(x_t, t, s) = (1 + λ) ε(x_t, t, s, b_d(s), b_m(s)) − λ ε(x_t, t, ∅), with the PnPNet features (b_d, b_m)
    and the null condition ∅ = zeros of the same shapes (:func:`bundle.networks.null_condition`).  With
    ``pnpnet=None`` it is the cDPM's guided prediction (no features).
    """

    def __init__(self, *, denoiser: nn.Module, pnpnet: nn.Module | None, guidance_scale: float) -> None:
        super().__init__()
        guidance_scale = float(guidance_scale)
        if not guidance_scale >= 0.0:
            raise ValueError(f"guidance_scale must be >= 0 (λ of the paper), got {guidance_scale}")
        self.denoiser = denoiser
        self.pnpnet = pnpnet
        self.guidance_scale = guidance_scale

    def forward(self, x_t: torch.Tensor, timesteps: torch.Tensor, sinogram: torch.Tensor) -> torch.Tensor:
        """``(B, 1, P, P)``, ``(B,)``, ``(B, 1, P, P)`` -> ε̃ ``(B, 1, P, P)``."""
        if self.pnpnet is None:
            conditional = self.denoiser(x_t, timesteps, sinogram)
            unconditional = self.denoiser(x_t, timesteps, torch.zeros_like(sinogram))
        else:
            down, mid = self.pnpnet.features(sinogram)
            conditional = self.denoiser(x_t, timesteps, sinogram, down_residuals=down, mid_residual=mid)
            unconditional = self.denoiser(
                x_t, timesteps, torch.zeros_like(sinogram),
                down_residuals=tuple(torch.zeros_like(d) for d in down), mid_residual=torch.zeros_like(mid),
            )
        if self.guidance_scale == 0.0:
            return conditional
        return (1.0 + self.guidance_scale) * conditional - self.guidance_scale * unconditional


def trace_network(
    network: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    check_inputs: Sequence[tuple[torch.Tensor, ...]],
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``network`` (in eval mode) at ``example_inputs``, verified on ``check_inputs``.

    Raises:
        ValueError: when ``check_inputs`` is empty, or when the traced module differs from the eager network
            on any of them by more than ``atol + rtol·|eager|`` (the message names the input set and the error).
    """
    if not check_inputs:
        raise ValueError("check_inputs must hold at least one input tuple other than example_inputs")
    network = network.eval()
    with torch.no_grad():
        traced = torch.jit.trace(network, example_inputs, check_trace=False)
        for index, inputs in enumerate(check_inputs):
            eager, scripted = network(*inputs), traced(*inputs)
            if eager.shape != scripted.shape or not torch.allclose(scripted, eager, rtol=rtol, atol=atol):
                error = float((scripted - eager).abs().max()) if eager.shape == scripted.shape else float("nan")
                raise ValueError(
                    f"the traced network differs from the eager one on check_inputs[{index}] "
                    f"(shapes {[tuple(t.shape) for t in inputs]}): max abs error {error:.3g}, "
                    f"expected <= atol {atol} + rtol {rtol}·|eager|"
                )
    return traced


def _inputs(shape: tuple[int, ...], timesteps: Sequence[int], *, extra: int, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    t = torch.tensor(list(timesteps), dtype=torch.long)
    return (x, t, *(torch.randn(shape, generator=g) for _ in range(extra)))


def _method_network(method: str, task: Any) -> tuple[nn.Module, tuple[int, int], int]:
    """The network to trace, its (H, W) and the number of extra image-shaped inputs."""
    if method == "petdds":
        from bundle.physics import preset

        shape = preset(task.scanner_preset).image.shape[1:]  # transverse slices (y, x)
        return task.network.cpu(), (int(shape[0]), int(shape[1])), 0
    if method == "legopet":
        size = int(task.pad.size)
        wrapper = GuidedLegoPETEpsilon(
            denoiser=task.network.cpu(), pnpnet=None if task.inferer.pnpnet is None else task.inferer.pnpnet.cpu(),
            guidance_scale=task.inferer.guidance_scale,
        )
        return wrapper, (size, size), 1
    raise ValueError(
        f"method must be 'petdds' or 'legopet' for a TorchScript export, got {method!r} (uPETe's latent networks "
        "are exported as weights only; see docs/ecosystem.md)"
    )


def export_torchscript(
    *,
    method: str,
    output: str | Path,
    checkpoint: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Trace the method's trained network (weights from ``checkpoint``) and save it as TorchScript.

    The file holds the method's ``metadata.json`` and a description of the inputs as extra files (as MONAI's
    ``ckpt_export`` does); load it with ``torch.jit.load(path)``.  Returns the written path.
    """
    from bundle.app import build_task
    from bundle.recipes import configs_dir

    task = build_task(method, checkpoint=checkpoint, overrides=dict(overrides or {}), device="cpu")
    network, (height, width), extra = _method_network(method, task)
    example = _inputs((1, 1, height, width), [10], extra=extra, seed=0)
    checks = [_inputs((2, 1, height, width), [999, 0], extra=extra, seed=1)]
    traced = trace_network(network, example, check_inputs=checks)
    inputs = ["x_t (B, 1, H, W)", "timesteps (B,) int64"] + (["sinogram (B, 1, P, P), network units"] if extra else [])
    metadata = (configs_dir() / method / "metadata.json").read_text(encoding="utf-8")
    extra_files = {
        "metadata.json": metadata,
        "inputs.json": json.dumps({"method": method, "inputs": inputs, "height": height, "width": width}),
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    torch.jit.save(traced, str(temporary), _extra_files=extra_files)
    temporary.replace(output)
    return output
