"""RandomStates (bundle.checkpoint.random_states): generators, the global RNG and the NumPy states of MONAI
random transforms restored exactly; a changed pipeline is named."""

from __future__ import annotations

import pytest
import torch

from bundle.checkpoint import (
    RandomStates,
    numpy_random_states,
)


def test_random_states_roundtrip_generators_and_global_rng():
    generator = torch.Generator().manual_seed(5)
    states = RandomStates(generators={"prepare_batch": generator})
    torch.manual_seed(1)
    saved = states.state_dict()
    assert set(saved) == {"generators", "torch"} and set(saved["generators"]) == {"prepare_batch"}
    expected = (torch.rand(3, generator=generator), torch.rand(3))
    torch.rand(7, generator=generator), torch.rand(7)  # move both on
    states.load_state_dict(saved)
    assert torch.equal(torch.rand(3, generator=generator), expected[0])
    assert torch.equal(torch.rand(3), expected[1])


def test_random_states_without_global_rng_leaves_it_alone():
    generator = torch.Generator().manual_seed(5)
    states = RandomStates(generators={"g": generator}, include_global=False)
    saved = states.state_dict()
    assert set(saved) == {"generators"}
    before = torch.get_rng_state()
    states.load_state_dict(saved)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"generators": [torch.Generator()]}, "generators must be a mapping"),
        ({"generators": {"": torch.Generator()}}, "generators keys"),
        ({"generators": {"g": 3}}, r"generators\['g'\] must be a torch.Generator"),
        ({"include_global": 1}, "include_global must be a bool"),
    ],
)
def test_random_states_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomStates(**kwargs)


def test_random_states_load_names_mismatched_generators():
    states = RandomStates(generators={"prepare_batch": torch.Generator()})
    message = r"holds the generators \['other'\], the configuration has \['prepare_batch'\]"
    with pytest.raises(ValueError, match=message):
        states.load_state_dict({"generators": {"other": torch.Generator().get_state()}, "torch": torch.get_rng_state()})
    with pytest.raises(ValueError, match="lacks the global RNG state 'torch'"):
        states.load_state_dict({"generators": {"prepare_batch": torch.Generator().get_state()}})
    with pytest.raises(ValueError, match="'generators' mapping"):
        states.load_state_dict({"torch": torch.get_rng_state()})


def _pipeline(*, extra_flip: bool = False):
    from monai.transforms import Compose, RandFlipd, RandSpatialCropSamplesd

    flips = [RandFlipd(keys="x", prob=0.5, spatial_axis=0) for _ in range(2 if extra_flip else 1)]
    return Compose([*flips, RandSpatialCropSamplesd(keys="x", roi_size=[2, 2], num_samples=3, random_size=False)])


def _crops(pipeline) -> torch.Tensor:
    x = torch.arange(36.0).reshape(1, 6, 6)
    return torch.stack([torch.stack([torch.as_tensor(s["x"]) for s in pipeline({"x": x})]) for _ in range(4)])


def test_random_states_restore_monai_transform_states():
    """The NumPy states of MONAI random transforms, nested ones included: a fresh pipeline seeded differently (as a
    resumed run's DataLoader seeds it) draws the same flips and crops as the original after loading."""
    original = _pipeline()
    original.set_random_state(seed=3)
    _crops(original)  # move on; the cropper gets its own state at its first call
    states = RandomStates(randomizables={"train_dataset": original}, include_global=False)
    saved = states.state_dict()
    assert set(saved) == {"generators", "numpy"}
    paths = [s["path"] for s in saved["numpy"]["train_dataset"]]
    assert {"Compose.R", "Compose.transforms[0].R", "Compose.transforms[1].cropper.cropper.R"} <= set(paths)
    expected = _crops(original)
    fresh = _pipeline()
    fresh.set_random_state(seed=99)  # its croppers still use MONAI's class-level default state
    assert len(numpy_random_states(fresh)) < len(paths)
    RandomStates(randomizables={"train_dataset": fresh}, include_global=False).load_state_dict(saved)
    assert torch.equal(_crops(fresh), expected)


def test_random_states_name_a_changed_pipeline_or_missing_numpy_states():
    original = _pipeline()
    original.set_random_state(seed=3)
    saved = RandomStates(randomizables={"data": original}, include_global=False).state_dict()
    changed = _pipeline(extra_flip=True)
    changed.set_random_state(seed=3)
    with pytest.raises(ValueError, match="the random transforms changed since the checkpoint was written"):
        RandomStates(randomizables={"data": changed}, include_global=False).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"holds the NumPy states of \[\], the configuration has \['data'\]"):
        RandomStates(randomizables={"data": original}, include_global=False).load_state_dict({"generators": {}})
    with pytest.raises(ValueError, match="randomizables must be a mapping"):
        RandomStates(randomizables=[original])  # type: ignore[arg-type]
