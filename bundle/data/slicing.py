"""The LegoPET data recipe: in-plane rotations, every-second axial slice through the brain, split by subject.

As published (METHODS.md): 20 BrainWeb subjects × 5 rotations × 55 non-contiguous axial slices, rotations within
±15° with the first at 0°, every second slice, split by subject 17 / 1 / 2.  Randomness only through an explicit
``seed`` (int) or ``numpy.random.Generator``.

Note on the default 55 slices × step 2: that span (109 planes) needs a brain at least 109 planes long, e.g. 218 mm at
2 mm planes, more than a brain's axial extent (about 130–150 mm, ~70 planes of the mMR's 2.031 mm).  On such a grid
:func:`axial_slice_indices` raises; use a finer axial grid for slicing (e.g. 1 mm) or ``step=1`` / fewer slices.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from .._checks import check_int

__all__ = ["SPLIT_NAMES", "axial_slice_indices", "rotation_angles_deg", "split_by_subject"]

SPLIT_NAMES: tuple[str, str, str] = ("train", "validation", "test")


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def rotation_angles_deg(
    n_rotations: int = 5, max_deg: float = 15.0, *, seed: int | np.random.Generator
) -> tuple[float, ...]:
    """``n_rotations`` in-plane angles in degrees: the first 0°, the rest uniform in [−max_deg, +max_deg]."""
    n = check_int(n_rotations, "n_rotations", minimum=1)
    if isinstance(max_deg, bool) or not isinstance(max_deg, int | float) or not math.isfinite(max_deg) or max_deg < 0:
        raise ValueError(f"max_deg must be a finite number >= 0, got {max_deg!r}")
    rest = _generator(seed).uniform(-float(max_deg), float(max_deg), size=n - 1)
    return (0.0, *(float(a) for a in rest))


def axial_slice_indices(mask_zyx: np.ndarray | torch.Tensor, n_slices: int = 55, step: int = 2) -> np.ndarray:
    """Indices of ``n_slices`` axial planes ``step`` apart, centred on the brain's axial extent.

    Args:
        mask_zyx: (n_z, n_y, n_x) brain mask (non-zero = brain), numpy or torch.
        n_slices, step: number of slices and their spacing in planes.

    Returns:
        int64 array (n_slices,), increasing, all within the planes that contain brain.

    Raises:
        ValueError: the mask is not 3D, holds no brain, or the brain spans fewer than (n_slices − 1)·step + 1 planes.
    """
    if isinstance(mask_zyx, torch.Tensor):
        mask = mask_zyx.detach().cpu().numpy()
    elif isinstance(mask_zyx, np.ndarray):
        mask = mask_zyx
    else:
        raise TypeError(f"mask_zyx must be a numpy array or torch tensor, got {type(mask_zyx).__name__}")
    if mask.ndim != 3:
        raise ValueError(f"mask_zyx must be 3D (n_z, n_y, n_x), got shape {mask.shape}")
    n = check_int(n_slices, "n_slices", minimum=1)
    step = check_int(step, "step", minimum=1)
    planes = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if planes.size == 0:
        raise ValueError("mask_zyx must contain brain voxels (non-zero), got an empty mask")
    first, last = int(planes[0]), int(planes[-1])
    extent, span = last - first + 1, (n - 1) * step + 1
    if extent < span:
        raise ValueError(
            f"the brain spans {extent} axial planes ({first} … {last}), but n_slices={n} with step={step} need "
            f"{span}; use a finer axial grid, a smaller step or fewer slices"
        )
    start = first + (extent - span) // 2
    return start + step * np.arange(n, dtype=np.int64)


def _counts(fractions_or_counts: Sequence[float], n_subjects: int) -> tuple[int, int, int]:
    values = tuple(fractions_or_counts)
    if len(values) != 3:
        raise ValueError(f"fractions_or_counts must have 3 entries (train, validation, test), got {values!r}")
    if any(isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) for v in values):
        raise TypeError(f"fractions_or_counts must hold numbers, got {values!r}")
    if all(isinstance(v, int | np.integer) for v in values):
        counts = tuple(int(v) for v in values)
        if min(counts) < 0 or sum(counts) != n_subjects:
            raise ValueError(
                f"counts must be >= 0 and sum to the number of subjects {n_subjects}, got {counts} (sum {sum(counts)})"
            )
        return counts  # type: ignore[return-value]
    fractions = tuple(float(v) for v in values)
    if min(fractions) < 0 or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions} (sum {sum(fractions)})")
    # largest-remainder rounding; ties go to the earlier split
    exact = [f * n_subjects for f in fractions]
    counts_list = [math.floor(e) for e in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts_list[i]), i))
    for i in order[: n_subjects - sum(counts_list)]:
        counts_list[i] += 1
    return tuple(counts_list)  # type: ignore[return-value]


def split_by_subject(
    subjects: Sequence[Hashable],
    fractions_or_counts: Sequence[float] = (17, 1, 2),
    *,
    seed: int | np.random.Generator,
) -> dict[str, list[Hashable]]:
    """Split subjects into disjoint ``train`` / ``validation`` / ``test`` lists (deterministic for a given seed).

    ``fractions_or_counts``: three ints (counts summing to ``len(subjects)``) or three numbers summing to 1
    (fractions, rounded by largest remainder).  The subjects are permuted with the seeded generator; each list
    keeps the order of ``subjects``.
    """
    if isinstance(subjects, str | bytes) or not isinstance(subjects, Sequence):
        raise TypeError(f"subjects must be a sequence of subject ids, got {type(subjects).__name__}")
    items = list(subjects)
    if len(set(items)) != len(items):
        duplicates = sorted({repr(s) for s in items if items.count(s) > 1})
        raise ValueError(f"subjects must be unique, got duplicates {duplicates}")
    counts = _counts(fractions_or_counts, len(items))
    permutation = _generator(seed).permutation(len(items))
    out: dict[str, list[Hashable]] = {}
    start = 0
    for name, count in zip(SPLIT_NAMES, counts, strict=True):
        chosen = sorted(int(i) for i in permutation[start : start + count])
        out[name] = [items[i] for i in chosen]
        start += count
    return out
