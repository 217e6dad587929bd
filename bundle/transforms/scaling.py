"""The one invertible intensity scaling between physical units (counts, Bq/ml, kBq/ml) and network units.

:class:`ToNetworkUnitsd` maps each key's image ``x`` to ``x' = (x − shift) / k`` and keeps ``(shift, k)``:

* in the data dict under ``f"{key}{scale_key_postfix}"`` (``"<key>_scale"``), a float64 tensor: ``[k]``, or
  ``[min, max]`` for min-max (it collates and decollates with the batch);
* in the MetaTensor's ``applied_operations`` when the image is a MetaTensor (so MONAI ``Invertd`` undoes it).

:meth:`ToNetworkUnitsd.inverse` (the same object) gives ``x = x' · k + shift`` from the MetaTensor trace, else from
the stored ``"<key>_scale"`` entry (then popped), else, for ``statistic="fixed"``, from the sample's data alone
(predictions made in network units; :class:`FromNetworkUnitsd` is that inverse as a forward transform for configs;
it never reads a MetaTensor trace, which for a prediction would be its input's scaling).

The divisor ``k`` is chosen by ``statistic`` (:class:`ScaleStatistic`), ``m`` = ``scale`` (1 when ``None``):

========================  ===================================  =====================================================
statistic                 k (shift = 0 unless stated)          used by
========================  ===================================  =====================================================
``fixed``                 ``scale`` or ``scale / c``           LegoPET sinograms (counts per bin from the manifest),
                          (``c = data[count_scale_key]``)      images (training reference maximum / count scale c)
``mean``                  ``m · mean(x)``                      LegoPET sinograms without a dataset scale; uPETe PET
                                                               (m = 10: the mean maps to 0.1, dose-invariant)
``positive_mean``         ``m · mean(x[x > 0])``               PET-DDS-δ training slices (the per-slice scale c_z)
``min_max``               ``max − min`` (1 if constant),       uPETe paper preprocessing (``petct_preprocessing``)
                          shift = ``min``
========================  ===================================  =====================================================

``arithmetic`` (:class:`Arithmetic`) fixes the float operations: ``"float64"`` computes ``((x.double() − shift) / k)``
and casts back to ``x``'s dtype (float32 for integer input), ``"input"`` computes ``x / k`` in ``x``'s own dtype.
The inverse uses the same precision, so a round trip is exact to one rounding of ``x``'s dtype.

:func:`slice_scale_from_volume` is the per-slice statistic of a whole volume, ``c_z`` for every axial slice at once,
that the PET-DDS-δ sampler divides each slice by.

:class:`Standardisation` is the last, fixed step from network units to the units a diffusion model's noise schedule
is made for: z = (x' − mean) / std.  A linear-β DDPM schedule assumes data of about zero mean and unit spread (its
signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) is tuned for that); LegoPET's references in network units ([0, 1], divided by
the training maximum) have mean ≈ 0.1 and std ≈ 0.15, a tenth of that variance, so without it the SNR at every t is
about ten times lower than the schedule assumes.  It is a property of the trained diffusion model (like MONAI's
``LatentDiffusionInferer(scale_factor=...)``): the training batch preparation applies it to x_0 and the sampler
inverts it on x̂_0, so everything outside the diffusion model stays in network units.  Importing this module runs
nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping
from enum import StrEnum
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys

from .._checks import check_choice, check_positive

__all__ = [
    "Arithmetic",
    "FromNetworkUnitsd",
    "ScaleStatistic",
    "Standardisation",
    "ToNetworkUnitsd",
    "slice_scale_from_volume",
]


class ScaleStatistic(StrEnum):
    """What the image is divided by (module docstring table)."""

    FIXED = "fixed"
    MEAN = "mean"
    POSITIVE_MEAN = "positive_mean"
    MIN_MAX = "min_max"


class Arithmetic(StrEnum):
    """Precision of the scaling: ``float64`` (then cast back to the input dtype) or the input's own dtype."""

    FLOAT64 = "float64"
    INPUT = "input"


class ToNetworkUnitsd(MapTransform, InvertibleTransform):
    """x' = (x − shift) / k per key, k from ``statistic``; the scale is recorded and undone by :meth:`inverse`.

    Args:
        keys: image keys; each gets its own scale.
        statistic: a :class:`ScaleStatistic` (module docstring).
        scale: ``fixed``: the constant k (required); ``mean`` / ``positive_mean``: the multiple m of the statistic
            (``None`` = 1); ``min_max``: must be ``None``.
        count_scale_key: ``fixed`` only: data key of the sample's count scale c, k = ``scale / c``.
        arithmetic: an :class:`Arithmetic`.
        scale_key_postfix: the scale is stored under ``f"{key}{scale_key_postfix}"``.

    Raises:
        TypeError: an image is not a tensor (load it first), or ``scale`` is not a real number.
        ValueError: bad options; an image that gives no positive finite k (e.g. no counts).
        KeyError: ``count_scale_key`` missing from the data; nothing recorded to invert.
    """

    def __init__(
        self,
        keys: KeysCollection,
        *,
        statistic: str = ScaleStatistic.FIXED,
        scale: float | None = None,
        count_scale_key: str | None = None,
        arithmetic: str = Arithmetic.FLOAT64,
        scale_key_postfix: str = "_scale",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.keys = tuple(str(k) if isinstance(k, str) else k for k in self.keys)  # Keys members read 'pet'
        self.statistic = check_choice(statistic, ScaleStatistic, "statistic")
        self.arithmetic = check_choice(arithmetic, Arithmetic, "arithmetic")
        if self.statistic is ScaleStatistic.FIXED and scale is None:
            raise ValueError("scale must be given (the constant divisor k) for statistic='fixed'")
        if self.statistic is ScaleStatistic.MIN_MAX and scale is not None:
            raise ValueError(f"scale must be None for statistic='min_max', got {scale!r}")
        if count_scale_key is not None and self.statistic is not ScaleStatistic.FIXED:
            raise ValueError(f"count_scale_key must be None unless statistic='fixed', got {count_scale_key!r}")
        if not isinstance(scale_key_postfix, str) or not scale_key_postfix:
            raise TypeError(f"scale_key_postfix must be a non-empty str, got {scale_key_postfix!r}")
        self.scale = None if scale is None else check_positive(scale, "scale")
        self.count_scale_key = None if count_scale_key is None else str(count_scale_key)
        self.scale_key_postfix = scale_key_postfix

    def _divisor(self, d: Mapping[Hashable, Any]) -> float:
        """k of a ``fixed`` scaling: ``scale`` or ``scale / data[count_scale_key]``."""
        if self.count_scale_key is None:
            return self.scale
        if self.count_scale_key not in d:
            raise KeyError(
                f"no {self.count_scale_key!r} entry (the sample's count scale c); keys: {sorted(map(str, d))}"
            )
        return self.scale / check_positive(d[self.count_scale_key], self.count_scale_key)

    def _measure(self, key: Hashable, values: torch.Tensor, d: Mapping[Hashable, Any]) -> list[float]:
        """``[shift, k]``, or ``[min, max]`` for min-max (what :meth:`_from_stored` reads)."""
        if self.statistic is ScaleStatistic.FIXED:
            return [0.0, self._divisor(d)]
        if values.numel() == 0 or not bool(torch.isfinite(values).all()):
            raise ValueError(f"{key!r} must be a non-empty image of finite values for {self.statistic} scaling")
        if self.statistic is ScaleStatistic.MIN_MAX:
            return [float(v) for v in torch.aminmax(values.double())]
        if self.statistic is ScaleStatistic.MEAN:
            statistic = float(values.double().mean())
        else:
            positive = values[values > 0]
            statistic = float(positive.mean()) if positive.numel() else 0.0
        if not statistic > 0:
            raise ValueError(
                f"{key!r} has no counts: {self.statistic} scaling needs a positive mean, got {statistic}"
            )
        return [0.0, statistic if self.scale is None else self.scale * statistic]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, torch.Tensor):
                raise TypeError(f"{key!r} must be a torch.Tensor (load it first), got {type(image).__name__}")
            values = image.as_tensor() if isinstance(image, MetaTensor) else image
            stored = self._measure(key, values, d)
            shift, divisor = self._from_stored(stored)
            if self.arithmetic is Arithmetic.INPUT:
                d[key] = image / divisor
            else:
                dtype = image.dtype if image.is_floating_point() else torch.float32  # integer input -> float32
                x = image.double() - shift if self.statistic is ScaleStatistic.MIN_MAX else image.double()
                d[key] = (x / divisor).to(dtype)
            if isinstance(d[key], MetaTensor):
                self.push_transform(d, key, extra_info={"shift": shift, "divisor": divisor})
            stored = stored if self.statistic is ScaleStatistic.MIN_MAX else stored[1:]
            d[f"{key}{self.scale_key_postfix}"] = torch.tensor(stored, dtype=torch.float64)
        return d

    def _from_stored(self, stored: list[float]) -> tuple[float, float]:
        """(shift, k) from ``[shift, k]``, or from ``[min, max]`` for min-max (k = max − min, 1 if constant)."""
        if self.statistic is not ScaleStatistic.MIN_MAX:
            return stored[0], stored[1]
        lo, hi = stored
        return lo, (hi - lo if hi > lo else 1.0)

    def _recorded(self, d: dict, key: Hashable) -> tuple[float, float]:
        """(shift, k) from the MetaTensor trace, the stored scale entry, or (``fixed``) the sample's data."""
        image = d[key]
        ops = image.applied_operations if isinstance(image, MetaTensor) else []
        traced = ops and ops[-1].get(TraceKeys.CLASS_NAME) == ToNetworkUnitsd.__name__
        if traced and not isinstance(self, FromNetworkUnitsd):  # a prediction's trace may be its input's scaling
            info = self.get_most_recent_transform(d, key)[TraceKeys.EXTRA_INFO]
            self.pop_transform(d, key)
            return float(info["shift"]), float(info["divisor"])
        scale_key = f"{key}{self.scale_key_postfix}"
        if scale_key in d:
            stored = torch.as_tensor(d.pop(scale_key), dtype=torch.float64).flatten().tolist()
            if self.statistic is ScaleStatistic.MIN_MAX:
                return self._from_stored(stored)
            return 0.0, check_positive(stored[0], scale_key)
        if self.statistic is ScaleStatistic.FIXED:
            return 0.0, self._divisor(d)
        raise KeyError(f"no {scale_key!r} entry: {key!r} was not scaled to network units")

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """x = x' · k + shift with the recorded (shift, k) (class docstring)."""
        d = dict(data)
        for key in self.key_iterator(d):
            shift, divisor = self._recorded(d, key)
            image = torch.as_tensor(d[key])
            if self.arithmetic is Arithmetic.INPUT:
                d[key] = image * divisor
            else:
                x = image.double() * divisor
                d[key] = (x + shift if self.statistic is ScaleStatistic.MIN_MAX else x).to(image.dtype)
        return d


class FromNetworkUnitsd(ToNetworkUnitsd):
    """x = x' · k for images produced in network units (predictions): :meth:`ToNetworkUnitsd.inverse` as a forward
    transform, with the same arguments as the :class:`ToNetworkUnitsd` that scaled the training data."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.inverse(data)


class Standardisation:
    """z = (x' − mean) / std between network units x' and a diffusion model's units z (module docstring).

    Args (keyword-only):
        mean: subtracted, in network units (default 0).
        std: divisor, > 0, in network units (default 1; mean 0, std 1 is the identity).
    """

    def __init__(self, *, mean: float = 0.0, std: float = 1.0) -> None:
        if isinstance(mean, bool) or not isinstance(mean, numbers.Real) or not math.isfinite(mean):
            raise ValueError(f"mean must be a finite real number (network units), got {mean!r}")
        self.mean = float(mean)
        self.std = check_positive(std, "std")

    @property
    def is_identity(self) -> bool:
        return self.mean == 0.0 and self.std == 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """z = (x − mean) / std (same shape and dtype)."""
        return x if self.is_identity else (x - self.mean) / self.std

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """x = z · std + mean (same shape and dtype)."""
        return z if self.is_identity else z * self.std + self.mean

    def __repr__(self) -> str:
        return f"Standardisation(mean={self.mean!r}, std={self.std!r})"


def slice_scale_from_volume(volume: torch.Tensor) -> torch.Tensor:
    """Per-slice scale c_z = mean over the positive voxels of slice z of ``volume`` ``(n_z, n_y, n_x)`` -> ``(n_z,)``.

    A slice without positive voxels gets the mean over all positive voxels of the volume (a ``ValueError`` if the
    volume has none), so c_z > 0 always.
    """
    if not isinstance(volume, torch.Tensor) or volume.ndim != 3:
        got = tuple(volume.shape) if isinstance(volume, torch.Tensor) else type(volume).__name__
        raise TypeError(f"volume must be a torch.Tensor of shape (n_z, n_y, n_x), got {got}")
    if not torch.is_floating_point(volume):
        raise TypeError(f"volume must be a floating-point tensor, got dtype {volume.dtype}")
    if not bool(torch.isfinite(volume).all()):
        raise ValueError("volume must be finite everywhere; found NaN or Inf")
    if bool((volume < 0).any()):
        raise ValueError(f"volume must be >= 0 everywhere; its minimum is {float(volume.min())}")
    positive = volume > 0
    if not bool(positive.any()):
        raise ValueError("volume must have at least one voxel > 0 to define a slice scale; it is all zeros")
    counts = positive.sum(dim=(1, 2))
    sums = torch.where(positive, volume, torch.zeros_like(volume)).sum(dim=(1, 2))
    fallback = volume[positive].mean()
    return torch.where(counts > 0, sums / counts.clamp(min=1), fallback)
