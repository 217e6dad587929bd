"""The one assembly of a scanner's forward model ȳ = n ⊙ a ⊙ A(G x) + s from its arrays.

Data simulation, scan files, the app and the studies all build
:class:`~bundle.physics.forward_model.PETForwardModel` through :func:`forward_model_from_arrays`: the projector A
(usually a :class:`~bundle.physics.sinogram.SinogramProjector` of a layout and image grid), the resolution G as a
Gaussian of ``fwhm_mm`` on the projector's image grid, and the sinogram arrays a (attenuation factors), n
(normalisation: any multiplicative factors, e.g. times the count scale c) and s (background), each
``(n_planes, n_views, n_radial)`` or ``None``.  Importing this module runs nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from .forward_model import PETForwardModel
from .operators import LinearOperator
from .resolution import GaussianResolution

__all__ = ["forward_model_from_arrays"]


def forward_model_from_arrays(
    *,
    projector: LinearOperator,
    fwhm_mm: float | Sequence[float] = 0.0,
    attenuation_factors: torch.Tensor | None = None,
    normalisation: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
) -> PETForwardModel:
    """``PETForwardModel(projector=A, attenuation_factors=a, normalisation=n, resolution=G, background=s)``.

    Args:
        projector: A, image ``(n_z, n_y, n_x)`` -> sinogram ``(n_planes, n_views, n_radial)``.
        fwhm_mm: G = :class:`~bundle.physics.resolution.GaussianResolution` with this FWHM (one number or ``(z, y,
            x)``, mm) on ``projector.image`` (an :class:`~bundle.physics.geometry.ImageGeometry`, so A must carry its
            image grid); 0 everywhere = no resolution model (G left out).
        attenuation_factors, normalisation, background: a, n, s of shape ``projector.out_shape`` or ``None``
            (checked by :class:`PETForwardModel`).

    Raises:
        TypeError: ``fwhm_mm`` is not a number or sequence of numbers; ``fwhm_mm`` > 0 with a projector without
            an ``image`` grid.
        ValueError: ``fwhm_mm`` not finite and >= 0.
    """
    values = tuple(fwhm_mm) if isinstance(fwhm_mm, Sequence) else (fwhm_mm,)
    if not values or any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values):
        raise TypeError(f"fwhm_mm must be a number or a (z, y, x) sequence of numbers >= 0, got {fwhm_mm!r}")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"fwhm_mm must be finite and >= 0 (0 = no resolution model), got {fwhm_mm!r}")
    resolution = None
    if any(v > 0 for v in values):
        image = getattr(projector, "image", None)
        if image is None:
            raise TypeError(f"fwhm_mm > 0 needs a projector with an image grid, got {type(projector).__name__}")
        resolution = GaussianResolution(image_shape=image.shape, fwhm_mm=fwhm_mm, voxel_size_mm=image.voxel_size_mm)
    return PETForwardModel(
        projector=projector, attenuation_factors=attenuation_factors, normalisation=normalisation,
        resolution=resolution, background=background,
    )
