"""PETMeanScaled: x / (m · mean x), scale kept, exact inverse."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from bundle.transforms.upete import PETMeanScaled


def test_mean_scaling_and_inverse_round_trip():
    x = MetaTensor(torch.rand(1, 6, 5, 4, dtype=torch.float64) * 7.0)
    t = PETMeanScaled(keys="pet", mean_multiple=10.0)
    out = t({"pet": x})
    assert float(out["pet"].mean()) == pytest.approx(0.1)
    assert float(out["pet_scale"][0]) == pytest.approx(10.0 * float(x.mean()))
    torch.testing.assert_close(t.inverse(out)["pet"].as_tensor(), x.as_tensor())


def test_rejects_zero_mean_and_bad_multiple():
    with pytest.raises(ValueError, match="positive mean"):
        PETMeanScaled(keys="pet")({"pet": torch.zeros(1, 2, 2, 2)})
    with pytest.raises(ValueError, match="mean_multiple must be a number > 0"):
        PETMeanScaled(keys="pet", mean_multiple=0)
