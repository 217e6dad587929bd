"""MONAI dictionary transforms that simulate PET data from phantoms: a scan, and dose reduction of counts.

Both are ``Randomizable``: each call draws a fresh seed from the transform's random state, so a pipeline
seeded with ``set_random_state(seed)`` (or MONAI's ``set_determinism``) reproduces the same counts.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.transforms import MapTransform, Randomizable

from ..data.simulate import simulate_scan
from ..keys import Keys
from ..physics import ImageGeometry, SinogramLayout, binomial_thinning

__all__ = ["BinomialThinningd", "SimulateScand"]


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.as_subclass(torch.Tensor)
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be array-like, got {type(value).__name__}") from error


class SimulateScand(Randomizable, MapTransform):
    """``activity`` (+ ``mu_map``) -> measured ``sinogram`` counts and the ``count_scale`` c.

    Images may carry a leading channel of size 1 (MONAI layout (1, z, y, x)); it is removed for the
    simulation.  See :func:`bundle.data.simulate.simulate_scan` for the model.
    """

    def __init__(
        self,
        *,
        layout: SinogramLayout,
        image: ImageGeometry,
        total_counts: float,
        activity_key: str = Keys.ACTIVITY,
        mu_key: str = Keys.MU_MAP,
        output_key: str = Keys.SINOGRAM,
        fwhm_mm: float = 4.5,
        background_fraction: float = 0.3,
    ) -> None:
        MapTransform.__init__(self, [activity_key, mu_key])
        self.layout, self.image = layout, image
        self.total_counts, self.fwhm_mm, self.background_fraction = total_counts, fwhm_mm, background_fraction
        self.activity_key, self.mu_key, self.output_key = activity_key, mu_key, output_key
        self._seed = 0

    def randomize(self, data=None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _image(self, data: Mapping[Hashable, object], key: str) -> torch.Tensor:
        if key not in data:
            raise ValueError(f"data must contain the key {str(key)!r}; got keys {sorted(map(str, data))}")
        t = _as_tensor(data[key], key)
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        return t.to(torch.float32)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self.randomize()
        scan = simulate_scan(
            self._image(d, self.activity_key), self._image(d, self.mu_key), layout=self.layout, image=self.image,
            total_counts=self.total_counts, generator=torch.Generator().manual_seed(self._seed),
            fwhm_mm=self.fwhm_mm, background_fraction=self.background_fraction,
        )
        d[self.output_key] = scan.counts
        d[Keys.COUNT_SCALE] = scan.count_scale
        return d


class BinomialThinningd(Randomizable, MapTransform):
    """Exact dose reduction of count data: each count survives with probability ``fraction``."""

    def __init__(self, keys, *, fraction: float, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not (0 < fraction <= 1):
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        self.fraction = fraction
        self._seed = 0

    def randomize(self, data=None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            self.randomize()
            counts = _as_tensor(d[key], str(key))
            d[key] = binomial_thinning(counts, fraction=self.fraction,
                                       generator=torch.Generator().manual_seed(self._seed))
        return d
