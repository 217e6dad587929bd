"""forward_model_from_arrays: the one assembly of ȳ = n ⊙ a ⊙ A(G x) + s, checked against the formula."""

from __future__ import annotations

import pytest
import torch

from bundle.data.simulate import slicewise_layout
from bundle.physics import GaussianResolution, ImageGeometry, SinogramProjector, forward_model_from_arrays

IMAGE = ImageGeometry(shape=(2, 10, 10), voxel_size_mm=(8.0, 6.0, 6.0))


def test_expectation_is_the_formula_and_zero_fwhm_leaves_out_the_resolution():
    generator = torch.Generator().manual_seed(0)
    projector = SinogramProjector(layout=slicewise_layout(IMAGE), image=IMAGE)
    shape = projector.out_shape
    a, n, s = (torch.rand(shape, generator=generator, dtype=torch.float64) for _ in range(3))
    x = torch.rand(IMAGE.shape, generator=generator, dtype=torch.float64)
    model = forward_model_from_arrays(projector=projector, fwhm_mm=9.0, attenuation_factors=a, normalisation=n,
                                      background=s)
    blur = GaussianResolution(image_shape=IMAGE.shape, fwhm_mm=9.0, voxel_size_mm=IMAGE.voxel_size_mm)
    torch.testing.assert_close(model.expectation(x), n * a * projector(blur(x)) + s)
    plain = forward_model_from_arrays(projector=projector)
    assert plain.resolution is None
    torch.testing.assert_close(plain.expectation(x), projector(x))


def test_bad_fwhm():
    projector = SinogramProjector(layout=slicewise_layout(IMAGE), image=IMAGE)
    with pytest.raises(ValueError, match="fwhm_mm must be finite and >= 0"):
        forward_model_from_arrays(projector=projector, fwhm_mm=-1.0)
    with pytest.raises(TypeError, match="fwhm_mm must be a number"):
        forward_model_from_arrays(projector=projector, fwhm_mm="4")
