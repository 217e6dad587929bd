"""Bias-variance over noise realisations and the voxel-wise coefficient of variation over sampling seeds.

PET-DDS-δ (Singh et al., "Score-based generative models for PET image reconstruction", MELBA 2024) reconstructs
20 independent noise realisations of each test scan and plots, in its Fig. 2, the normalised bias against the
normalised standard deviation of each method (OSEM, MAP-EM swept over β / iterations, PET-DDS variants); 25
sampler seeds on one data set give its uncertainty image, the voxel-wise coefficient of variation.

Definitions, for ``R`` realisations ``x_i`` (``i = 1..R``) of a reference ``r`` and a mask ``M`` with ``|M|``
voxels (all voxels without a mask)::

    mean image      x̄_v   = (1/R) Σ_i x_{i,v}
    bias image      b_v   = x̄_v − r_v
    variance image  σ²_v  = Σ_i (x_{i,v} − x̄_v)² / (R − correction)      (correction=1: unbiased, default)
    std image       σ_v   = sqrt(σ²_v)
    normalised bias      NB  = ‖x̄ − r‖₂,M / ‖r‖₂,M = sqrt(Σ_{v∈M} b_v²) / sqrt(Σ_{v∈M} r_v²)
    normalised std       NSD = sqrt((1/|M|) Σ_{v∈M} σ²_v) / ((1/|M|) Σ_{v∈M} r_v)

So ``NB`` is the NRMSE (``NRMSENormalisation.NORM``) of the mean image, and ``NSD`` the root-mean voxel variance
relative to the mean reference activity in the mask.  For ``x_i = r + e_i`` with ``e_{i,v} ~ N(β, s²)`` i.i.d.:
``E[NB²] = |M| (β² + s²/R) / ‖r‖²_M`` (the finite-``R`` mean keeps ``s²/R`` of noise) and ``NSD → s / mean_M r``.

Coefficient of variation over ``K`` samples ``y_k``::

    CV_v = σ_v / |ȳ_v|,   σ_v² = Σ_k (y_{k,v} − ȳ_v)² / (K − correction)

with ``CV_v = 0`` (``ZeroMeanPolicy.ZERO``, default) or ``NaN`` (``ZeroMeanPolicy.NAN``) where ``|ȳ_v| <= eps``
(``eps = 0``: exactly zero; for non-negative PET samples the mean is 0 only where every sample is 0, i.e. there is
no activity and no spread).  ``|ȳ|`` keeps the CV non-negative; for non-negative images it is ``ȳ``.
"""

from __future__ import annotations

import enum
import math
import numbers
from collections.abc import Sequence

import torch

from .image_quality import _check_enum, _check_int, _check_tensor

__all__ = ["ZeroMeanPolicy", "bias_variance", "coefficient_of_variation"]


class ZeroMeanPolicy(enum.StrEnum):
    """Value of the coefficient of variation where the voxel mean is (numerically) zero: ``|mean| <= eps``."""

    ZERO = "zero"
    """Return 0 there (no activity: the uncertainty image shows nothing).  The default."""
    NAN = "nan"
    """Return NaN there (undefined; lets a caller mask or count those voxels)."""


def _stack(samples: object, name: str) -> torch.Tensor:
    """A tensor ``(N, ...)`` or a non-empty sequence of equally shaped tensors -> float64 tensor ``(N, ...)``."""
    if isinstance(samples, torch.Tensor):
        stacked = samples
    elif isinstance(samples, Sequence) and len(samples) > 0 and all(isinstance(s, torch.Tensor) for s in samples):
        shapes = {tuple(s.shape) for s in samples}
        if len(shapes) != 1:
            raise ValueError(f"{name} must all have the same shape, got shapes {sorted(shapes)}")
        stacked = torch.stack(list(samples))
    else:
        raise TypeError(f"{name} must be a tensor or a non-empty sequence of tensors, got {type(samples).__name__}")
    if stacked.ndim < 1:
        raise ValueError(f"{name} must hold the samples on axis 0, got a 0-d tensor")
    return _check_tensor(stacked, name)


def _check_count(n: int, correction: int, name: str) -> None:
    if n <= correction:
        raise ValueError(f"{name} needs more than correction={correction} samples on axis 0, got {n}")


def bias_variance(
    realisations: torch.Tensor | Sequence[torch.Tensor],
    reference: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    correction: int = 1,
) -> dict[str, torch.Tensor | float]:
    """Voxel-wise mean, bias and variance over noise realisations, and the normalised bias / std of PET papers.

    Args:
        realisations: ``R`` reconstructions of independent noise realisations, a tensor ``(R, *shape)`` or a
            sequence of ``R`` tensors of one shape; ``R > correction``.
        reference: the true (or full-count) image, shape ``shape``, finite.
        mask: optional ``torch.bool`` tensor of shape ``shape`` (e.g. the body or a region of interest), non-empty;
            it restricts the scalar summaries, not the images.
        correction: degrees-of-freedom correction of the variance (1: unbiased sample variance, default; 0:
            population variance).

    Returns:
        ``{"mean": x̄, "bias": x̄ − r, "variance": σ², "std": σ}`` (float64 tensors of shape ``shape``) and
        ``{"normalised_bias": NB, "normalised_std": NSD}`` (Python floats), as defined in the module docstring.

    Raises:
        ValueError: also where ``‖r‖_M`` or ``mean_M r`` is not > 0.
    """
    correction = _check_int(correction, "correction", minimum=0)
    x = _stack(realisations, "realisations")
    r = _check_tensor(reference, "reference")
    if tuple(x.shape[1:]) != tuple(r.shape):
        raise ValueError(
            f"each realisation must have the reference's shape, got realisations {tuple(x.shape)} "
            f"(one realisation {tuple(x.shape[1:])}) and reference {tuple(r.shape)}"
        )
    if x.device != r.device:
        raise ValueError(f"realisations and reference must be on the same device, got {x.device} and {r.device}")
    _check_count(x.shape[0], correction, "bias_variance")
    if mask is None:
        m = torch.ones_like(r, dtype=torch.bool)
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            got = f"dtype {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise TypeError(f"mask must be a torch.Tensor of dtype torch.bool, got {got}")
        if mask.shape != r.shape:
            raise ValueError(f"mask must have the reference's shape {tuple(r.shape)}, got {tuple(mask.shape)}")
        m = mask.to(r.device)
        if not bool(m.any()):
            raise ValueError("mask selects no voxel")

    mean = x.mean(dim=0)
    variance = x.var(dim=0, correction=correction)
    bias = mean - r
    ref_m = r[m]
    ref_norm = float(ref_m.square().sum().sqrt())
    ref_mean = float(ref_m.mean())
    if not ref_norm > 0:
        raise ValueError("the reference's norm within the mask must be > 0 (normalised bias undefined)")
    if not ref_mean > 0:
        raise ValueError(f"the reference's mean within the mask must be > 0 (normalised std undefined), got {ref_mean}")
    return {
        "mean": mean,
        "bias": bias,
        "variance": variance,
        "std": variance.sqrt(),
        "normalised_bias": float(bias[m].square().sum().sqrt()) / ref_norm,
        "normalised_std": math.sqrt(float(variance[m].mean())) / ref_mean,
    }


def coefficient_of_variation(
    samples: torch.Tensor | Sequence[torch.Tensor],
    *,
    eps_policy: ZeroMeanPolicy | str = ZeroMeanPolicy.ZERO,
    eps: float = 0.0,
    correction: int = 1,
) -> torch.Tensor:
    """Voxel-wise coefficient of variation ``CV = std / |mean|`` over samples (e.g. 25 sampler seeds).

    Args:
        samples: a tensor ``(K, *shape)`` or a sequence of ``K`` tensors of one shape; ``K > correction``.
        eps_policy: :class:`ZeroMeanPolicy`, the value where ``|mean| <= eps``: 0 (default) or NaN.
        eps: finite threshold ``>= 0`` below which the mean counts as zero (0: only an exact zero).
        correction: std degrees-of-freedom correction: 1 = sample std (default, ``torch.std``), 0 = population
            std (``numpy.std`` default).  For the samples ``[1, 3]``: 0.7071 (sample) and 0.5 (population).

    Returns:
        float64 tensor of shape ``shape``.
    """
    policy = _check_enum(eps_policy, ZeroMeanPolicy, "eps_policy")
    correction = _check_int(correction, "correction", minimum=0)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a finite number >= 0, got {eps!r}")
    if not (math.isfinite(float(eps)) and float(eps) >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {float(eps)!r}")
    y = _stack(samples, "samples")
    _check_count(y.shape[0], correction, "coefficient_of_variation")
    mean = y.mean(dim=0).abs()
    std = y.std(dim=0, correction=correction)
    zero = mean <= float(eps)
    fill = torch.zeros_like(mean) if policy is ZeroMeanPolicy.ZERO else torch.full_like(mean, math.nan)
    return torch.where(zero, fill, std / torch.where(zero, torch.ones_like(mean), mean))
