"""Counting noise: Poisson draws at a stated count level and exact dose reduction of count data by binomial thinning.

All randomness comes from an explicit ``torch.Generator`` (same generator state -> same counts).  The generator
must live on the same device as the tensor it draws for (``torch.Generator(device=tensor.device)``).

Counts are returned as floating-point tensors holding non-negative integers, in the dtype of the input, so they
can go straight into a Poisson log-likelihood or an EM update.

Dose reduction, two routes:

- expected data ȳ known (simulation): draw ``Poisson(f · ȳ)`` — use :func:`poisson_noise` on the scaled mean, or
  :func:`poisson_at_total_counts` with ``total_counts = f · Σ ȳ``;
- measured counts ``y`` only: binomial thinning ``y_f ~ Binomial(y, f)`` (:func:`binomial_thinning`), which is exact
  for list-mode style reduction: if ``y ~ Poisson(ȳ)`` then ``y_f ~ Poisson(f ȳ)``.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["binomial_thinning", "poisson_at_total_counts", "poisson_noise"]


def _check_generator(generator: object, tensor: torch.Tensor) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if torch.device(generator.device).type != tensor.device.type:
        raise ValueError(
            f"generator must live on the tensor's device type '{tensor.device.type}', got '{generator.device}'"
        )
    return generator


def _check_expectation(expected: object, name: str) -> torch.Tensor:
    if not isinstance(expected, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(expected).__name__}")
    if not torch.is_floating_point(expected):
        raise TypeError(f"{name} must be a floating-point tensor (float32/float64), got dtype {expected.dtype}")
    if not bool(torch.isfinite(expected).all()):
        raise ValueError(f"{name} must be finite everywhere; found NaN or Inf")
    if bool((expected < 0).any()):
        raise ValueError(f"{name} must be >= 0 everywhere; its minimum is {float(expected.min())}")
    return expected


def poisson_noise(expected: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
    """Independent Poisson counts ``y_i ~ Poisson(ȳ_i)``.

    Args:
        expected: ȳ, any shape, floating point, finite and >= 0.
        generator: the source of randomness (on ``expected``'s device).

    Returns:
        Counts of the shape and dtype of ``expected`` (integer-valued floats).
    """
    expected = _check_expectation(expected, "expected")
    generator = _check_generator(generator, expected)
    return torch.poisson(expected, generator=generator)


def poisson_at_total_counts(
    expected: torch.Tensor, *, total_counts: float, generator: torch.Generator
) -> tuple[torch.Tensor, float]:
    """Scale ``ȳ`` to an expected total of ``total_counts`` and draw Poisson counts.

    ``scale = total_counts / Σ_i ȳ_i`` (sum taken in float64) and ``y_i ~ Poisson(scale · ȳ_i)``, so
    ``E[Σ_i y_i] = total_counts``; the drawn total itself fluctuates with standard deviation √total_counts.

    Args:
        expected: ȳ, any shape, floating point, finite, >= 0 and with a positive sum.
        total_counts: expected total number of counts T > 0 (e.g. prompts of a 1 % dose scan).
        generator: the source of randomness (on ``expected``'s device).

    Returns:
        ``(counts, scale)``: counts of the shape and dtype of ``expected`` and the Python float ``scale`` applied
        to ``expected`` (divide reconstructions of ``counts`` by it to return to the units of ``expected``).
    """
    expected = _check_expectation(expected, "expected")
    generator = _check_generator(generator, expected)
    if isinstance(total_counts, bool) or not isinstance(total_counts, numbers.Real):
        raise TypeError(f"total_counts must be a number > 0, got {total_counts!r}")
    if not math.isfinite(float(total_counts)) or total_counts <= 0:
        raise ValueError(f"total_counts must be finite and > 0, got {total_counts!r}")
    total_expected = float(expected.sum(dtype=torch.float64))
    if total_expected <= 0.0:
        raise ValueError("expected must have a positive sum to be scaled to total_counts; it is all zeros")
    scale = float(total_counts) / total_expected
    return torch.poisson(expected * scale, generator=generator), scale


def binomial_thinning(counts: torch.Tensor, *, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Keep each count independently with probability ``fraction``: ``y_f ~ Binomial(y, f)``.

    Exact dose reduction of count data: ``E[y_f] = f y`` and ``Var[y_f] = y f (1 − f)`` per bin; if
    ``y ~ Poisson(ȳ)`` then ``y_f ~ Poisson(f ȳ)``.

    Args:
        counts: y, any shape, integer-valued (integer dtype or integer-valued floats), finite and >= 0.
        fraction: f in (0, 1]; ``f = 1`` returns a copy of ``counts`` without drawing (the generator is not advanced).
        generator: the source of randomness (on ``counts``' device).

    Returns:
        Thinned counts of the shape and dtype of ``counts``.
    """
    if not isinstance(counts, torch.Tensor):
        raise TypeError(f"counts must be a torch.Tensor, got {type(counts).__name__}")
    if counts.dtype == torch.bool or counts.is_complex():
        raise TypeError(f"counts must be a real integer or floating-point tensor, got dtype {counts.dtype}")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise TypeError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not (0.0 < float(fraction) <= 1.0):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    generator = _check_generator(generator, counts)
    work = counts if torch.is_floating_point(counts) else counts.to(torch.float64)
    if not bool(torch.isfinite(work).all()):
        raise ValueError("counts must be finite everywhere; found NaN or Inf")
    if bool((work < 0).any()):
        raise ValueError(f"counts must be >= 0 everywhere; its minimum is {float(work.min())}")
    if not bool((work == torch.round(work)).all()):
        raise ValueError("counts must be integer-valued (counts of events); found non-integer values")
    if float(fraction) == 1.0:
        return counts.clone()
    prob = torch.full_like(work, float(fraction))
    return torch.binomial(work, prob, generator=generator).to(counts.dtype)
