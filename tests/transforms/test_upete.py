"""RandDoseReductiond: the sinogram-domain Poisson degradation of uPETe patch training."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from bundle.transforms.scaling import ToNetworkUnitsd

# --- RandDoseReductiond: sinogram-domain Poisson degradation -------------------------------------------------------


def _subject(tmp_path):
    """A saved slice-wise scan, its SPET in network units as LoadImaged + mean scaling give it, and the SPET kBq/ml."""
    from bundle.data.io import save_image
    from bundle.data.simulate import save_scan
    from tests.data.test_simulate import IMAGE, _scan

    scan = _scan(total_counts=2e5)
    save_scan(tmp_path / "scan.npz", scan, image=IMAGE, fwhm_mm=8.0)
    spet = scan.reconstruct_osem(num_subsets=4, num_iterations=2)
    save_image(tmp_path / "pet.nii.gz", spet, IMAGE)
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    load = Compose([LoadImaged(keys="pet", image_only=True), EnsureChannelFirstd(keys="pet"),
                    ToNetworkUnitsd(keys="pet", statistic="mean", scale=10.0)])
    return scan, load({"pet": str(tmp_path / "pet.nii.gz"), "scan": str(tmp_path / "scan.npz")})


def _transform(num_steps: int, seed: int = 0):
    from bundle.diffusion.poisson import PoissonDoseSchedule
    from bundle.transforms.upete import RandDoseReductiond

    t = RandDoseReductiond(schedule=PoissonDoseSchedule(num_steps=num_steps, min_dose=0.1), num_subsets=4,
                           num_iterations=2)
    t.set_random_state(seed)
    return t


def test_dose_reduction_end_points_and_patch_alignment(tmp_path):
    """d = 1 gives back the SPET itself (on its grid, through the same crop); d = 0.1 is as noisy as an independent
    10 % scan of the same subject reconstructed the same way."""
    from monai.transforms import RandSpatialCropSamplesd

    from bundle.physics import binomial_thinning

    scan, data = _subject(tmp_path)
    transform = _transform(num_steps=2)
    outputs = {}
    for _ in range(12):
        out = transform(data)
        outputs.setdefault(int(out["timestep"]), out)
    assert set(outputs) == {0, 1}
    same = outputs[0]
    assert isinstance(same["pet_t"], MetaTensor)
    torch.testing.assert_close(same["pet_t"].affine, data["pet"].affine)
    torch.testing.assert_close(same["pet_t"].as_tensor(), data["pet"].as_tensor(), rtol=1e-4, atol=1e-6)
    crop = RandSpatialCropSamplesd(keys=["pet", "pet_t"], roi_size=(6, 5, 2), num_samples=3, random_size=False)
    for patch in crop(same):
        torch.testing.assert_close(patch["pet_t"].as_tensor(), patch["pet"].as_tensor(), rtol=1e-4, atol=1e-6)
    # independent 10 % reconstruction in the same network units
    scale = float(data["pet_scale"][0])
    thinned = binomial_thinning(scan.counts, fraction=0.1, generator=torch.Generator().manual_seed(99))
    ref = scan.at_dose(0.1).reconstruct_osem(counts=thinned, num_subsets=4, num_iterations=2).permute(2, 1, 0) / scale
    spet = data["pet"].as_tensor()[0].double()
    low = outputs[1]["pet_t"].as_tensor()[0].double()
    err, ref_err = float(((low - spet) ** 2).mean()), float(((ref.double() - spet) ** 2).mean())
    assert err == pytest.approx(ref_err, rel=0.25)
    assert float(low.mean()) == pytest.approx(float(spet.mean()), rel=0.05)


def test_dose_reduction_is_reproducible_and_checks_its_inputs(tmp_path):
    _, data = _subject(tmp_path)
    a, b = _transform(400, seed=5)(data), _transform(400, seed=5)(data)
    assert int(a["timestep"]) == int(b["timestep"])
    torch.testing.assert_close(a["pet_t"].as_tensor(), b["pet_t"].as_tensor())
    with pytest.raises(ValueError, match="must hold 'scan'"):
        _transform(4)({k: v for k, v in data.items() if k != "scan"})
    wrong = dict(data, pet=data["pet"][:, :-1])
    with pytest.raises(ValueError, match=r"same subject and grid"):
        _transform(4)(wrong)
    with pytest.raises(TypeError, match="schedule must be a PoissonDoseSchedule"):
        from bundle.transforms.upete import RandDoseReductiond

        RandDoseReductiond(schedule=None)
