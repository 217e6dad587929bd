"""Classical PET denoising baselines of uPETe: Gaussian filter and non-local means (Buades et al. 2005), in torch,
with a grid search of their parameter on validation pairs.

Gaussian: x̂ = G_σ * x, separable sampled Gaussian (radius ⌈3σ⌉, normalised to sum 1, σ per axis in voxels) with
replicate padding (zero padding would darken an axially truncated body at the first and last slices).

Non-local means (3D, pixel-wise, Gaussian-weighted patch distance as scikit-image's ``denoise_nl_means`` with
``fast_mode=False`` up to its patch kernel): for voxel i and offsets o in a search cube of radius r::

    d_i(o) = Σ_p w_p (x_{i+p} − x_{i+o+p})²  / Σ_p w_p            (patch cube of radius ρ, weights w_p box)
    W_i(o) = exp(−max(d_i(o) − 2σ_n², 0) / h²)
    x̂_i    = Σ_o W_i(o) x_{i+o} / Σ_o W_i(o)

σ_n is the noise standard deviation (estimated from the high-pass residual when not given), h = ``h_factor`` · σ_n.
Volumes are replicate-padded.  Cost: (2r + 1)³ box filters of the volume.  Importing runs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .._checks import check_int as _check_int

__all__ = ["estimate_noise_std", "gaussian_filter", "non_local_means", "tune_parameter"]


def _check_volume(x: object, name: str = "image") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or not torch.is_floating_point(x):
        desc = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape (B, C, D, H, W), got {desc}")
    return x


def gaussian_filter(image: torch.Tensor, *, sigma_voxels: float | Sequence[float]) -> torch.Tensor:
    """G_σ * x for ``(B, C, D, H, W)``; σ in voxels (one value or one per axis), 0 returns the input."""
    x = _check_volume(image)
    sig = [float(sigma_voxels)] * 3 if isinstance(sigma_voxels, int | float) else [float(s) for s in sigma_voxels]
    if len(sig) != 3 or any(s < 0 for s in sig):
        raise ValueError(f"sigma_voxels must be >= 0 (one value or three), got {sigma_voxels!r}")
    if all(s == 0 for s in sig):
        return x.clone()
    b, c, *spatial = x.shape
    out = x.double().reshape(b * c, 1, *spatial)
    for axis, s in enumerate(sig):
        if s == 0:
            continue
        radius = max(1, int(-(-3 * s // 1)))
        taps = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
        kernel = torch.exp(-0.5 * (taps / s) ** 2)
        kernel = kernel / kernel.sum()
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.reshape(shape))
    return out.reshape(x.shape).to(x.dtype)


def estimate_noise_std(image: torch.Tensor) -> float:
    """σ_n from the Laplacian-like residual x − mean of the 6 neighbours (white noise: Var = σ² (1 + 1/6)).

    Only voxels inside the activity count: the voxel and its 6 neighbours all at least 10 % of the volume's mean
    |x|.  A PET volume is mostly air around the body, whose (near-)zeros would make the median absolute residual
    about 0 and every NLM weight but the centre's vanish; the body's edge against the air is not noise either."""
    x = F.pad(_check_volume(image).double(), (1, 1, 1, 1, 1, 1), mode="replicate")
    c = x[..., 1:-1, 1:-1, 1:-1]
    neighbours = (x[..., :-2, 1:-1, 1:-1], x[..., 2:, 1:-1, 1:-1], x[..., 1:-1, :-2, 1:-1], x[..., 1:-1, 2:, 1:-1],
                  x[..., 1:-1, 1:-1, :-2], x[..., 1:-1, 1:-1, 2:])
    nb = sum(neighbours) / 6.0
    floor = 0.1 * float(c.abs().mean())
    support = c.abs() >= floor
    for n in neighbours:
        support &= n.abs() >= floor
    r = (c - nb)[support] if bool(support.any()) else (c - nb).flatten()
    mad = float((r - r.median()).abs().median()) * 1.4826  # robust to edges
    return mad / (1.0 + 1.0 / 6.0) ** 0.5


def non_local_means(
    image: torch.Tensor,
    *,
    h_factor: float = 0.8,
    noise_std: float | None = None,
    patch_radius: int = 1,
    search_radius: int = 2,
) -> torch.Tensor:
    """Non-local means of ``(B, C, D, H, W)`` (module docstring); returns the same shape and dtype."""
    x = _check_volume(image)
    pr = _check_int(patch_radius, "patch_radius", minimum=0)
    sr = _check_int(search_radius, "search_radius", minimum=1)
    if not (isinstance(h_factor, int | float) and h_factor > 0):
        raise ValueError(f"h_factor must be a number > 0, got {h_factor!r}")
    sigma = estimate_noise_std(x) if noise_std is None else float(noise_std)
    if not sigma > 0:
        raise ValueError(f"noise_std must be > 0, got {noise_std!r}")
    h2 = (float(h_factor) * sigma) ** 2
    xd = x.double()
    b, c, *spatial = xd.shape
    flat = xd.reshape(b * c, 1, *spatial)
    pad = sr + pr
    padded = F.pad(flat, (pad,) * 6, mode="replicate")
    centre = padded[..., sr : sr + spatial[0] + 2 * pr, sr : sr + spatial[1] + 2 * pr, sr : sr + spatial[2] + 2 * pr]
    num = torch.zeros_like(flat)
    den = torch.zeros_like(flat)
    k = 2 * pr + 1
    for dz in range(-sr, sr + 1):
        for dy in range(-sr, sr + 1):
            for dx in range(-sr, sr + 1):
                shifted = padded[
                    ..., sr + dz : sr + dz + spatial[0] + 2 * pr, sr + dy : sr + dy + spatial[1] + 2 * pr,
                    sr + dx : sr + dx + spatial[2] + 2 * pr,
                ]
                dist = F.avg_pool3d((centre - shifted) ** 2, kernel_size=k, stride=1)
                w = torch.exp(-(dist - 2 * sigma**2).clamp_min(0) / h2)
                value = shifted[..., pr : pr + spatial[0], pr : pr + spatial[1], pr : pr + spatial[2]]
                num += w * value
                den += w
    return (num / den).reshape(xd.shape).to(x.dtype)


def tune_parameter(
    method: Callable[..., torch.Tensor],
    name: str,
    grid: Sequence[float],
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    score: Callable[[torch.Tensor, torch.Tensor], float],
) -> tuple[float, Mapping[float, float]]:
    """Grid search: the value of keyword ``name`` maximising the mean ``score(method(low, name=v), standard)`` over
    validation ``pairs`` of (low, standard); returns (best value, {value: mean score})."""
    if len(grid) == 0 or len(pairs) == 0:
        raise ValueError(f"grid and pairs must be non-empty, got {len(grid)} values and {len(pairs)} pairs")
    scores = {}
    for v in grid:
        scores[float(v)] = sum(score(method(low, **{name: v}), std) for low, std in pairs) / len(pairs)
    best = max(scores, key=scores.__getitem__)
    return best, scores
