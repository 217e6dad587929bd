"""uPETe intensity scaling: PET divided by a multiple of its own mean, invertible, the scale kept with the data.

Why not the paper's per-volume min-max?  The maximum of a low-dose reconstruction is set by its noise: at 10 %
dose the hottest voxels are far above the standard-dose maximum, so min-max puts an LPET and its SPET on
different scales, and a model trained on min-max-scaled SPET sees a darker LPET than any training image.  The
mean of a reconstruction is (nearly) dose-invariant (OSEM keeps the counts), so::

    x' = x / (m · mean(x))          (m = ``mean_multiple``; x in the file's units, e.g. kBq/ml)

puts every dose of a subject on the same scale.  The divisor m · mean(x) is stored under ``"<key>_scale"`` (a
float64 tensor (1,)) and in the MetaTensor's ``applied_operations``; :meth:`PETMeanScaled.inverse` (directly
or through MONAI ``Invertd``) restores the units.  ``petct_preprocessing``'s min-max scaling remains available.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys

from ..keys import Keys

__all__ = ["PETMeanScaled", "mean_scale"]


def mean_scale(image: torch.Tensor, *, mean_multiple: float) -> float:
    """m · mean(x) for a non-negative volume with a positive mean (``ValueError`` otherwise)."""
    values = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    if values.numel() == 0 or not bool(torch.isfinite(values).all()):
        raise ValueError("the PET volume must be non-empty and finite for mean scaling")
    mean = float(values.double().mean())
    if not mean > 0:
        raise ValueError(f"the PET volume must have a positive mean for mean scaling, got mean {mean}")
    return float(mean_multiple) * mean


class PETMeanScaled(MapTransform, InvertibleTransform):
    """x' = x / (m · mean(x)) per key (module docstring); inverse x = x' · m · mean(x).

    Args:
        keys: PET keys; each gets its own scale.
        mean_multiple: m > 0 (default 10: the mean maps to 0.1).
        scale_key_postfix: the divisor goes to ``f"{key}{postfix}"``.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.PET,
        *,
        mean_multiple: float = 10.0,
        scale_key_postfix: str = "_scale",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(mean_multiple, bool) or not isinstance(mean_multiple, int | float) or not mean_multiple > 0:
            raise ValueError(f"mean_multiple must be a number > 0, got {mean_multiple!r}")
        self.mean_multiple = float(mean_multiple)
        self.scale_key_postfix = scale_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, torch.Tensor):
                image = MetaTensor(torch.as_tensor(image, dtype=torch.float32))
            scale = mean_scale(image, mean_multiple=self.mean_multiple)
            d[key] = (image.double() / scale).to(image.dtype if image.is_floating_point() else torch.float32)
            self.push_transform(d, key, extra_info={"scale": scale})
            d[f"{key}{self.scale_key_postfix}"] = torch.tensor([scale], dtype=torch.float64)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            scale = float(self.get_most_recent_transform(d, key)[TraceKeys.EXTRA_INFO]["scale"])
            image = d[key]
            d[key] = (image.double() * scale).to(image.dtype)
            self.pop_transform(d, key)
        return d
