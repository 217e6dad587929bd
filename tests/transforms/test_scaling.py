"""ToNetworkUnitsd / FromNetworkUnitsd: every statistic's divisor against its formula, the recorded scale, exact
inverses (by the trace, by the stored entry, from the sample's data), errors; slice_scale_from_volume."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from bundle.keys import Keys
from bundle.transforms.scaling import FromNetworkUnitsd, ToNetworkUnitsd, slice_scale_from_volume


def test_fixed_scaling_of_counts_and_images_inverts_exactly():
    generator = torch.Generator().manual_seed(1)
    counts = torch.poisson(torch.full((1, 252, 172), 7.0), generator=generator)
    image = torch.rand(1, 172, 172, generator=generator) * 3.7
    data = {Keys.SINOGRAM: counts, Keys.REFERENCE: image, Keys.COUNT_SCALE: 0.237}
    for statistic, expected in (("fixed", 6.92), ("mean", float(counts.double().mean()))):
        forward = ToNetworkUnitsd(keys=Keys.SINOGRAM, statistic=statistic, scale=6.92 if statistic == "fixed" else None,
                                  arithmetic="input")
        out = forward(data)
        assert out["sinogram_scale"].dtype == torch.float64 and float(out["sinogram_scale"]) == expected
        assert torch.equal(out[Keys.SINOGRAM], counts / expected)  # float32 division, as the training data had it
        back = forward.inverse(out)
        torch.testing.assert_close(back[Keys.SINOGRAM], counts, rtol=1e-6, atol=0)
        assert "sinogram_scale" not in back
    for count_scale_key in (Keys.COUNT_SCALE, None):
        forward = ToNetworkUnitsd(keys=Keys.REFERENCE, scale=0.9, count_scale_key=count_scale_key, arithmetic="input")
        out = forward(data)
        divisor = 0.9 / 0.237 if count_scale_key else 0.9
        assert float(out["reference_scale"]) == pytest.approx(divisor, rel=1e-15)
        torch.testing.assert_close(out[Keys.REFERENCE], image / divisor)
        torch.testing.assert_close(forward.inverse(out)[Keys.REFERENCE], image, rtol=1e-6, atol=0)
        # a prediction in network units goes back with the same scale, from the sample's data only
        back = FromNetworkUnitsd(keys="pred", scale=0.9, count_scale_key=count_scale_key, arithmetic="input")(
            {"pred": out[Keys.REFERENCE], Keys.COUNT_SCALE: torch.tensor(0.237, dtype=torch.float64)}
        )
        torch.testing.assert_close(back["pred"], image, rtol=1e-6, atol=0)


def test_mean_scaling_records_its_scale_in_the_meta_data_and_inverts():
    x = MetaTensor(torch.rand(1, 6, 5, 4, dtype=torch.float64) * 7.0)
    t = ToNetworkUnitsd(keys="pet", statistic="mean", scale=10.0)
    out = t({"pet": x})
    assert float(out["pet"].mean()) == pytest.approx(0.1)
    assert float(out["pet_scale"][0]) == pytest.approx(10.0 * float(x.mean()))
    info = out["pet"].applied_operations[-1]["extra_info"]
    assert info["divisor"] == float(out["pet_scale"][0]) and info["shift"] == 0.0
    back = t.inverse(out)["pet"]
    torch.testing.assert_close(back.as_tensor(), x.as_tensor())
    assert not back.applied_operations


def test_positive_mean_divides_by_the_mean_over_positive_voxels():
    x = torch.tensor([[[0.0, 2.0], [4.0, 0.0]]])
    out = ToNetworkUnitsd(keys="image", statistic="positive_mean", arithmetic="input")({"image": x})
    assert float(out["image_scale"]) == 3.0
    assert torch.equal(out["image"], x / 3.0)


def test_minmax_inverse_is_exact_directly_and_through_invertd():
    values = torch.rand((1, 5, 6, 7), generator=torch.Generator().manual_seed(0), dtype=torch.float32) * 37.0 + 0.5
    scaler = ToNetworkUnitsd("pet", statistic="min_max")
    out = scaler({"pet": MetaTensor(values.clone())})
    assert out["pet_scale"].dtype == torch.float64
    assert out["pet_scale"].tolist() == [float(values.min()), float(values.max())]
    assert float(out["pet"].min()) == 0.0 and float(out["pet"].max()) == 1.0
    back = scaler.inverse(out)["pet"]
    torch.testing.assert_close(back.as_tensor(), values, rtol=2e-7, atol=0.0)
    assert not back.applied_operations
    # the same object inverts a prediction through MONAI's Invertd, which reads the reference's trace
    pipeline = Compose([scaler])
    out = pipeline({"pet": MetaTensor(values.clone())})
    invert = Invertd(keys="pred", transform=pipeline, orig_keys="pet")
    inverted = invert({"pred": out["pet"].clone(), "pet": out["pet"]})
    torch.testing.assert_close(inverted["pred"].as_tensor(), values, rtol=2e-7, atol=0.0)
    # plain tensors invert from the stored [min, max]
    plain = scaler({"pet": values.clone()})
    torch.testing.assert_close(scaler.inverse(plain)["pet"], values, rtol=2e-7, atol=0.0)
    # constant volume: shifted to 0, restored to the constant
    const = scaler({"pet": MetaTensor(torch.full((1, 2, 2, 2), 3.5))})
    assert float(const["pet"].abs().max()) == 0.0
    assert torch.equal(scaler.inverse(const)["pet"].as_tensor(), torch.full((1, 2, 2, 2), 3.5))
    counts = scaler({"pet": torch.arange(8, dtype=torch.int16).reshape(1, 2, 2, 2)})
    assert counts["pet"].dtype == torch.float32 and float(counts["pet"][0, 1, 1, 1]) == 1.0


def test_errors():
    with pytest.raises(ValueError, match="must be finite and > 0"):
        ToNetworkUnitsd(keys="x", scale=0.0)
    with pytest.raises(ValueError, match="scale must be given"):
        ToNetworkUnitsd(keys="x")
    with pytest.raises(ValueError, match="statistic must be one of"):
        ToNetworkUnitsd(keys="x", statistic="max")
    with pytest.raises(ValueError, match="scale must be None for statistic='min_max'"):
        ToNetworkUnitsd(keys="x", statistic="min_max", scale=2.0)
    with pytest.raises(ValueError, match="count_scale_key must be None"):
        ToNetworkUnitsd(keys="x", statistic="mean", count_scale_key=Keys.COUNT_SCALE)
    with pytest.raises(KeyError, match="count scale"):
        ToNetworkUnitsd(keys="x", scale=1.0, count_scale_key=Keys.COUNT_SCALE)({"x": torch.ones(1, 4, 4)})
    for statistic in ("mean", "positive_mean"):
        with pytest.raises(ValueError, match="no counts"):
            ToNetworkUnitsd(keys="x", statistic=statistic)({"x": torch.zeros(1, 4, 4)})
    with pytest.raises(ValueError, match="finite values"):
        ToNetworkUnitsd(keys="x", statistic="mean")({"x": torch.tensor([[[1.0, float("nan")]]])})
    with pytest.raises(TypeError, match="load it first"):
        ToNetworkUnitsd(keys="x", scale=1.0)({"x": "sinogram.npy"})
    with pytest.raises(KeyError, match="was not scaled"):
        ToNetworkUnitsd(keys="x", statistic="mean").inverse({"x": torch.ones(1, 4, 4)})


def test_slice_scale_from_volume_uses_positive_voxels_and_falls_back_for_empty_slices():
    volume = torch.zeros(3, 2, 2)
    volume[0] = torch.tensor([[2.0, 0.0], [4.0, 0.0]])
    volume[2] = torch.tensor([[6.0, 6.0], [6.0, 6.0]])
    torch.testing.assert_close(slice_scale_from_volume(volume), torch.tensor([3.0, 5.0, 6.0]))
    with pytest.raises(ValueError, match="at least one voxel > 0"):
        slice_scale_from_volume(torch.zeros(2, 2, 2))


def test_from_network_units_ignores_the_trace_of_the_input_scaling():
    sinogram = ToNetworkUnitsd(keys="s", scale=4.0)({"s": MetaTensor(torch.full((1, 2, 2), 8.0))})["s"]
    pred = sinogram * 0 + 0.5  # a MetaTensor prediction that inherited the sinogram's trace
    assert pred.applied_operations
    back = FromNetworkUnitsd(keys="pred", scale=3.0, count_scale_key="c")({"pred": pred, "c": 2.0})
    torch.testing.assert_close(back["pred"].as_tensor(), torch.full((1, 2, 2), 0.75))


def test_standardisation_inverts_exactly_and_checks_its_arguments():
    from bundle.transforms.scaling import Standardisation

    x = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    scaling = Standardisation(mean=0.115, std=0.156)
    torch.testing.assert_close(scaling.forward(x), (x - 0.115) / 0.156, rtol=0, atol=0)
    torch.testing.assert_close(scaling.inverse(scaling.forward(x)), x)
    identity = Standardisation()
    assert identity.is_identity and identity.forward(x) is x and identity.inverse(x) is x
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        Standardisation(std=0.0)
    with pytest.raises(ValueError, match="mean must be a finite real number"):
        Standardisation(mean=float("nan"))
