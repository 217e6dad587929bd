"""The procedural total-body PET/CT phantom: organ uptake order, CT numbers, μ from HU, anatomy, determinism."""

from __future__ import annotations

import pytest
import torch

from bundle.data.torso import (
    KBQ_PER_ML_PER_SUV,
    LABELS,
    MU_WATER_PER_MM,
    TISSUE_HU,
    hu_to_mu_per_mm,
    torso_phantom,
    total_body_image,
)
from bundle.physics.geometry import ImageGeometry

CUBE = ImageGeometry(shape=(64, 64, 64), voxel_size_mm=(4.0, 4.0, 4.0))
WHOLE = total_body_image(voxel_size_mm=(20.0, 10.0, 10.0), transaxial_fov_mm=480.0)

# plausible CT-number ranges per label (HU)
HU_RANGES = {
    "air": (-1000, -1000), "soft_tissue": (20, 60), "fat": (-150, -50), "lungs": (-950, -600), "liver": (40, 80),
    "spleen": (30, 60), "kidneys": (20, 50), "myocardium": (20, 60), "blood_pool": (20, 60), "bladder": (0, 20),
    "bone": (300, 2000), "brain": (20, 50), "lesion": (0, 100),
}


@pytest.fixture(scope="module")
def whole_body():
    return {seed: torso_phantom(image=WHOLE, seed=seed) for seed in (0, 1, 2)}


def mean_activity(phantom, name):
    mask = phantom.labels == LABELS[name]
    assert bool(mask.any()), f"{name} missing"
    return float(phantom.activity_kbq_per_ml[mask].mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_organ_activity_ordering(whole_body, seed):
    p = whole_body[seed]
    act = {name: mean_activity(p, name) for name in ("bladder", "brain", "myocardium", "liver", "lungs")}
    assert act["bladder"] > max(act["brain"], act["myocardium"])
    assert min(act["brain"], act["myocardium"]) > act["liver"] > act["lungs"]
    # kBq/ml = SUV · 5, nominal liver SUV 2.5 varied by ±15 %
    assert 0.85 * 2.5 * KBQ_PER_ML_PER_SUV <= act["liver"] <= 1.15 * 2.5 * KBQ_PER_ML_PER_SUV
    assert float(p.activity_kbq_per_ml[p.labels == LABELS["air"]].abs().max()) == 0.0
    assert float(p.activity_kbq_per_ml.min()) >= 0.0


def test_every_label_present_with_its_hu_range(whole_body):
    for p in whole_body.values():
        for name, (lo, hi) in HU_RANGES.items():
            mask = p.labels == LABELS[name]
            if name == "lesion" and not bool(mask.any()):
                continue
            assert bool(mask.any()), f"{name} missing for seed {p.seed}"
            hu = p.ct_hu[mask]
            assert lo <= float(hu.min()) and float(hu.max()) <= hi, name
        bone = p.labels == LABELS["bone"]
        assert float(p.ct_hu[bone].min()) >= 300.0
        assert set(torch.unique(p.labels).tolist()) <= set(LABELS.values())
    assert TISSUE_HU["lungs"] == -800 and TISSUE_HU["bone"] == 700 and TISSUE_HU["air"] == -1000


def test_mu_from_hu_bilinear_and_monotone():
    hu = torch.linspace(-1200.0, 3000.0, 4201, dtype=torch.float64)
    mu = hu_to_mu_per_mm(hu)
    assert bool((mu[1:] >= mu[:-1]).all()) and bool((mu[hu > -1000] > 0).all())
    assert float(hu_to_mu_per_mm(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(MU_WATER_PER_MM, abs=1e-15)
    assert float(hu_to_mu_per_mm(0.0)) == pytest.approx(0.0096, rel=1e-6)
    assert float(hu_to_mu_per_mm(-1000.0)) == 0.0
    assert 0.013 <= float(hu_to_mu_per_mm(700.0)) <= 0.017
    assert float(hu_to_mu_per_mm(1500.0)) <= 0.018
    # bilinear: slope of the soft-tissue line below 0 HU, a smaller bone slope above ~47 HU
    assert float(hu_to_mu_per_mm(-500.0)) == pytest.approx(0.0048, rel=1e-6)
    s_soft = float(hu_to_mu_per_mm(-100.0) - hu_to_mu_per_mm(-200.0)) / 100
    s_bone = float(hu_to_mu_per_mm(1200.0) - hu_to_mu_per_mm(1100.0)) / 100
    assert s_bone < s_soft


def test_mu_map_follows_ct(whole_body):
    p = whole_body[0]
    torch.testing.assert_close(p.mu_map_per_mm, hu_to_mu_per_mm(p.ct_hu))
    assert float(p.mu_map_per_mm[p.labels == LABELS["air"]].max()) == 0.0
    bone = p.mu_map_per_mm[p.labels == LABELS["bone"]]
    assert 0.013 <= float(bone.min()) and float(bone.max()) <= 0.017


@pytest.mark.parametrize("seed", [0, 5])
def test_lungs_enclosed_by_body(seed):
    p = torso_phantom(image=CUBE, seed=seed)
    lungs = p.labels == LABELS["lungs"]
    assert int(lungs.sum()) > 100
    air = p.labels == LABELS["air"]
    # every 6-neighbour of a lung voxel is tissue, not air: the lungs sit inside the chest wall
    for axis in range(3):
        for shift in (-1, 1):
            assert not bool((torch.roll(lungs, shift, dims=axis) & air).any())


def test_grid_types_and_transaxial_border_is_air():
    p = torso_phantom(image=CUBE, seed=0)
    assert p.activity_kbq_per_ml.dtype == p.ct_hu.dtype == p.mu_map_per_mm.dtype == torch.float32
    assert p.labels.dtype == torch.uint8
    for v in (p.activity_kbq_per_ml, p.ct_hu, p.mu_map_per_mm, p.labels):
        assert tuple(v.shape) == CUBE.shape
    assert 0.3 < p.scale < 1.0  # a 256 mm field of view needs a smaller body
    for face in (p.labels[:, 0], p.labels[:, -1], p.labels[:, :, 0], p.labels[:, :, -1]):
        assert int(face.max()) == 0
    # centred grid: thorax and upper abdomen, no head, no bladder
    present = set(torch.unique(p.labels).tolist())
    assert {LABELS["lungs"], LABELS["liver"], LABELS["myocardium"], LABELS["bone"]} <= present
    assert LABELS["brain"] not in present and LABELS["bladder"] not in present


def test_whole_body_grid_all_faces_air(whole_body):
    p = whole_body[0]
    assert p.scale == pytest.approx(1.0, abs=0.02)
    labels = p.labels
    faces = (labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1])
    assert all(int(f.max()) == 0 for f in faces)
    assert float(p.ct_hu[0].max()) == -1000.0 and float(p.mu_map_per_mm[:, 0].max()) == 0.0


def test_head_only_grid_has_brain():
    head = ImageGeometry(shape=(24, 32, 32), voxel_size_mm=(8.0, 8.0, 8.0), origin_mm=(330.0, -124.0, -124.0))
    p = torso_phantom(image=head, seed=3)
    assert bool((p.labels == LABELS["brain"]).any()) and bool((p.labels == LABELS["bone"]).any())
    assert int(p.labels[:, 0].max()) == 0 and int(p.labels[:, :, -1].max()) == 0


def centroid_mm(phantom, name):
    """(z, y, x) world centroid of a label in mm."""
    idx = torch.nonzero(phantom.labels == LABELS[name]).double().mean(0)
    g = phantom.image
    return [float(o + i * v) for o, i, v in zip(g.origin_mm, idx, g.voxel_size_mm, strict=True)]


def test_ras_orientation_and_lesion_positions(whole_body):
    """World axes are RAS (x → patient right, y → anterior, z → superior), as NIfTI writers expect."""
    for p in whole_body.values():
        liver, spleen, heart = centroid_mm(p, "liver"), centroid_mm(p, "spleen"), centroid_mm(p, "myocardium")
        assert liver[2] > 0 > spleen[2] and heart[2] < 0  # liver on the right, spleen and heart on the left
        assert heart[1] > 0 > centroid_mm(p, "kidneys")[1]  # heart anterior, kidneys posterior
        assert centroid_mm(p, "brain")[0] > heart[0] > liver[0] > centroid_mm(p, "bladder")[0]
    checked = 0
    for seed in range(6):  # the voxel nearest a lesion centre (world coordinates) is lesion
        p = torso_phantom(image=CUBE, seed=seed)
        g = p.image
        for lesion in p.lesions:
            idx = [round((c - o) / v) for c, o, v in zip(lesion.centre_mm, g.origin_mm, g.voxel_size_mm, strict=True)]
            inside = all(0 <= i < n for i, n in zip(idx, g.shape, strict=True))
            if inside and lesion.radius_mm > 0.87 * max(g.voxel_size_mm):
                assert int(p.labels[tuple(idx)]) == LABELS["lesion"]
                checked += 1
    assert checked >= 2


def test_same_seed_identical_different_seed_different(whole_body):
    again = torso_phantom(image=WHOLE, seed=1)
    first = whole_body[1]
    for name in ("activity_kbq_per_ml", "ct_hu", "mu_map_per_mm", "labels"):
        assert torch.equal(getattr(again, name), getattr(first, name))
    assert again.lesions == first.lesions
    assert not torch.equal(whole_body[0].activity_kbq_per_ml, first.activity_kbq_per_ml)
    assert not torch.equal(whole_body[0].labels, first.labels)


def test_lesions_vary_with_seed():
    counts = set()
    for seed in range(12):
        p = torso_phantom(image=WHOLE, seed=seed)
        counts.add(len(p.lesions))
        assert 0 <= len(p.lesions) <= 4
        for lesion in p.lesions:
            assert 5.0 <= lesion.radius_mm <= 15.0 and 4.0 <= lesion.suv <= 15.0
        lesion_act = p.activity_kbq_per_ml[p.labels == LABELS["lesion"]]
        if lesion_act.numel():
            assert 4.0 * KBQ_PER_ML_PER_SUV <= float(lesion_act.min()) <= float(lesion_act.max()) <= 75.0
    assert len(counts) >= 3


def test_argument_errors():
    with pytest.raises(TypeError, match="image must be an ImageGeometry"):
        torso_phantom(image=(64, 64, 64), seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        torso_phantom(image=CUBE, seed=1.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        torso_phantom(image=CUBE, seed=True)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        torso_phantom(image=CUBE, seed=-1)
    off_axis = ImageGeometry(shape=(8, 16, 16), voxel_size_mm=(4.0, 4.0, 4.0), origin_mm=(0.0, 10.0, -30.0))
    with pytest.raises(ValueError, match=r"image must contain the body axis \(y = 0 mm\)"):
        torso_phantom(image=off_axis, seed=0)
    with pytest.raises(ValueError, match="transaxial_fov_mm must be a positive finite number"):
        total_body_image(transaxial_fov_mm=0.0)


REGION = ImageGeometry(shape=(16, 48, 48), voxel_size_mm=(8.0, 8.0, 8.0))


def test_lesion_index_names_each_lesion():
    p = torso_phantom(image=REGION, seed=3, lesion_count=(6, 6), lesion_radius_mm=(8.0, 12.0))
    assert len(p.lesions) == 6
    present = sorted(int(k) for k in p.lesion_index.unique() if k > 0)
    assert present, "no lesion inside the region"
    assert torch.equal(p.lesion_index > 0, p.labels == LABELS["lesion"])
    for k in present:  # every voxel of lesion k has lesion k's uptake
        values = p.activity_kbq_per_ml[p.lesion_index == k]
        assert torch.allclose(values, torch.full_like(values, p.lesions[k - 1].suv * KBQ_PER_ML_PER_SUV))
    for lesion in p.lesions:
        assert 8.0 <= lesion.radius_mm <= 12.0


def test_texture_keeps_anatomy_and_a_uniform_liver():
    plain = torso_phantom(image=REGION, seed=4)
    textured = torso_phantom(image=REGION, seed=4, texture_std=0.2)
    assert torch.equal(plain.labels, textured.labels) and plain.lesions == textured.lesions
    liver = plain.labels == LABELS["liver"]
    assert torch.equal(plain.activity_kbq_per_ml[liver], textured.activity_kbq_per_ml[liver])
    muscle = plain.labels == LABELS["soft_tissue"]
    ratio = textured.activity_kbq_per_ml[muscle] / plain.activity_kbq_per_ml[muscle]
    assert 0.05 < float(ratio.log().std()) < 0.3  # the log-std of the texture, about 0.2
    assert abs(float(ratio.mean()) - 1.0) < 0.1  # mean-one texture


def test_phantom_option_errors():
    with pytest.raises(ValueError, match="lesion_count"):
        torso_phantom(image=REGION, seed=0, lesion_count=(3, 2))
    with pytest.raises(ValueError, match="lesion_radius_mm"):
        torso_phantom(image=REGION, seed=0, lesion_radius_mm=(0.0, 2.0))
    with pytest.raises(ValueError, match="texture_std"):
        torso_phantom(image=REGION, seed=0, texture_std=-0.1)
