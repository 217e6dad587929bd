"""Relative difference prior (RDP, Nuyts et al. 2002) with value and analytic gradient.

For an image ``x`` of shape ``(n_z, n_y, n_x)`` = (axial, transaxial, transaxial), axis 0 axial:

    R(x) = ½ Σ_j Σ_{n ∈ N_j} w_jn φ(x_j, x_n),     φ(a, b) = (a − b)² / (a + b + γ |a − b| + ε).

The neighbourhoods are symmetric (n ∈ N_j ⇔ j ∈ N_n, w_jn = w_nj) and φ(a, b) = φ(b, a), so the double sum
visits every unordered pair {j, n} twice and the ½ makes ``R`` the sum over pairs, each counted once:

    R(x) = Σ_{pairs {j, n}} w_jn φ(x_j, x_n).

The gradient therefore carries no ½ and runs over the full neighbourhood:

    ∂R/∂x_j = Σ_{n ∈ N_j} w_jn ∂φ/∂a(x_j, x_n),
    ∂φ/∂a(a, b) = (a − b) (a + 3 b + γ |a − b| + 2 ε) / (a + b + γ |a − b| + ε)²,

which is continuous at a = b (φ is C¹).

Boundary: reflective ends — a neighbour outside the image is the voxel itself, so φ(x_j, x_j) = 0 and it adds
nothing to the value or the gradient (equivalently: only pairs with both voxels inside the image count).

Neighbourhoods (:class:`Neighbourhood`):

- ``FULL``: the 3D 26-neighbourhood (all offsets in {−1, 0, 1}³ except 0) with dimensionless inverse-distance
  weights ``w_d = voxel_size_mm[2] / ‖d ⊙ voxel_size_mm‖`` (weight 1 for the face neighbours along x, 1/√2 for
  in-plane diagonals of a square pixel, …; the convention of STIR's priors).  On a single slice ``(1, n_y, n_x)``
  the offsets with d_z ≠ 0 have no partner inside the image, leaving the 2D 8-neighbourhood.
- ``AXIAL``: only the ±1 slice neighbours along axis 0, weight 1 (the PET-DDS-δ prior RDP_z).

Domain: x ≥ 0 (activities).  ``epsilon`` (same units as x, default 1e-9) only keeps the denominator positive
where both voxels are zero; it is far below any activity level, so the prior is the plain RDP there.  Raise it
(e.g. to 1e-3 × mean activity) to round off the |a − b| kink near zero activity.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence

import torch

try:  # Python >= 3.11
    from enum import StrEnum
except ImportError:  # pragma: no cover - Python 3.10
    from enum import Enum

    class StrEnum(str, Enum):  # type: ignore[no-redef]  # noqa: UP042
        def __str__(self) -> str:
            return str(self.value)


__all__ = ["Neighbourhood", "RelativeDifferencePrior"]


class Neighbourhood(StrEnum):
    """Neighbourhood of the relative difference prior."""

    FULL = "full"
    """3D 26-neighbourhood with inverse-distance weights (from ``voxel_size_mm``)."""
    AXIAL = "axial"
    """±1 slice along axis 0 only, weight 1."""


def _offsets_and_weights(
    neighbourhood: Neighbourhood, voxel_size_mm: tuple[float, float, float]
) -> tuple[tuple[tuple[int, int, int], ...], tuple[float, ...]]:
    """One offset of each ± pair (the lexicographically positive one) and its weight."""
    if neighbourhood is Neighbourhood.AXIAL:
        return ((1, 0, 0),), (1.0,)
    offsets, weights = [], []
    for d in itertools.product((-1, 0, 1), repeat=3):
        if d > (0, 0, 0):  # lexicographic: keeps exactly one of d and −d
            distance_mm = math.sqrt(sum((di * v) ** 2 for di, v in zip(d, voxel_size_mm, strict=True)))
            offsets.append(d)
            weights.append(voxel_size_mm[2] / distance_mm)
    return tuple(offsets), tuple(weights)


def _pair_slices(offset: tuple[int, int, int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``(first, second)`` so that ``x[first][k]`` and ``x[second][k]`` are neighbours ``j`` and ``j + d``."""
    first, second = [], []
    for d in offset:
        if d > 0:
            first.append(slice(0, -d))
            second.append(slice(d, None))
        elif d < 0:
            first.append(slice(-d, None))
            second.append(slice(0, d))
        else:
            first.append(slice(None))
            second.append(slice(None))
    return tuple(first), tuple(second)


class RelativeDifferencePrior:
    """Relative difference prior R(x) on 3D images ``(n_z, n_y, n_x)``; see the module docstring for R and ∇R.

    Args:
        neighbourhood: :class:`Neighbourhood` (or its string value), default ``FULL``.
        gamma: γ >= 0, edge preservation (default 2; larger = more edge preserving).
        epsilon: ε > 0 in the units of x (default 1e-9).
        voxel_size_mm: ``(z, y, x)`` voxel size for the ``FULL`` weights; ``None`` = isotropic voxels.
            Only ratios matter (the weights are dimensionless). Ignored by ``AXIAL``.
    """

    def __init__(
        self,
        *,
        neighbourhood: Neighbourhood | str = Neighbourhood.FULL,
        gamma: float = 2.0,
        epsilon: float = 1e-9,
        voxel_size_mm: Sequence[float] | None = None,
    ) -> None:
        try:
            self.neighbourhood = Neighbourhood(neighbourhood)
        except ValueError:
            raise ValueError(
                f"neighbourhood must be one of {[n.value for n in Neighbourhood]}, got {neighbourhood!r}"
            ) from None
        for name, value, lower_ok in (("gamma", gamma, True), ("epsilon", epsilon, False)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0 or (value == 0 and not lower_ok):
                expected = ">= 0" if lower_ok else "> 0"
                raise ValueError(f"{name} must be finite and {expected}, got {value!r}")
        self.gamma = float(gamma)
        self.epsilon = float(epsilon)
        if voxel_size_mm is None:
            voxel: tuple[float, float, float] = (1.0, 1.0, 1.0)
        else:
            if (
                not isinstance(voxel_size_mm, Sequence)
                or len(voxel_size_mm) != 3
                or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in voxel_size_mm)
            ):
                raise TypeError(
                    f"voxel_size_mm must be a sequence of 3 numbers (z, y, x) or None, got {voxel_size_mm!r}"
                )
            if any(not math.isfinite(v) or v <= 0 for v in voxel_size_mm):
                raise ValueError(f"voxel_size_mm must be finite and > 0 on every axis, got {voxel_size_mm!r}")
            voxel = (float(voxel_size_mm[0]), float(voxel_size_mm[1]), float(voxel_size_mm[2]))
        self.voxel_size_mm = voxel
        self.offsets, self.weights = _offsets_and_weights(self.neighbourhood, voxel)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(neighbourhood={self.neighbourhood.value!r}, gamma={self.gamma}, "
            f"epsilon={self.epsilon}, voxel_size_mm={self.voxel_size_mm})"
        )

    @staticmethod
    def _check_image(x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (n_z, n_y, n_x), got {type(x).__name__}")
        if x.ndim != 3:
            raise ValueError(f"x must have shape (n_z, n_y, n_x) (3 dims), got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x must be finite everywhere; found NaN or Inf")
        if bool((x < 0).any()):
            raise ValueError(f"x must be >= 0 everywhere (activities); its minimum is {float(x.min())}")
        return x

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """R(x) as a 0-dim tensor of x's dtype and device; ``x`` of shape ``(n_z, n_y, n_x)``, x >= 0."""
        x = self._check_image(x)
        total = x.new_zeros(())
        for offset, weight in zip(self.offsets, self.weights, strict=True):
            first, second = _pair_slices(offset)
            a, b = x[first], x[second]
            if a.numel() == 0:
                continue
            diff = a - b
            total = total + weight * torch.sum(diff * diff / (a + b + self.gamma * diff.abs() + self.epsilon))
        return total

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """∇R(x), same shape, dtype and device as ``x`` (analytic, no autograd)."""
        x = self._check_image(x)
        grad = torch.zeros_like(x)
        for offset, weight in zip(self.offsets, self.weights, strict=True):
            first, second = _pair_slices(offset)
            a, b = x[first], x[second]
            if a.numel() == 0:
                continue
            diff = a - b
            abs_diff = diff.abs()
            denom = a + b + self.gamma * abs_diff + self.epsilon
            # ∂φ/∂a(a, b) for the first voxel and ∂φ/∂b(a, b) = ∂φ/∂a(b, a) for the second one
            grad[first] += weight * diff * (a + 3.0 * b + self.gamma * abs_diff + 2.0 * self.epsilon) / denom**2
            grad[second] -= weight * diff * (b + 3.0 * a + self.gamma * abs_diff + 2.0 * self.epsilon) / denom**2
        return grad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(x)
