"""The precomputed dose ladder (bundle.data.ladder) and its training transform (RandDoseLadderd)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.data.ladder import LADDER_DOSE_KEY, LADDER_PET_KEY, build_dose_ladder
from bundle.data.manifest import load_datalist
from bundle.diffusion.poisson import PoissonDoseSchedule
from bundle.transforms.upete import RandDoseLadderd
from tests.upete_fixtures import write_dataset

DOSES = (0.1, 0.5)


def _dataset(root: Path) -> Path:
    data = write_dataset(root)
    manifest = {"kind": "upete", "complete": True, "config": {"osem_subsets": 4, "osem_iterations": 2}}
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return data


@pytest.fixture(scope="module")
def laddered(tmp_path_factory):
    data = _dataset(tmp_path_factory.mktemp("ladder") / "data")
    settings = build_dose_ladder(data, doses=DOSES, realisations=2, seed=3, progress=False)
    return data, settings


def _xyz(path: str | Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)


def test_datalist_lists_every_rung_and_paths_resolve(laddered):
    data, settings = laddered
    assert settings["doses"] == [0.1, 0.5] and settings["realisations"] == 2
    for entry in load_datalist(data, "training", kind="upete"):
        assert entry[LADDER_DOSE_KEY] == [0.1, 0.1, 0.5, 0.5]
        assert all(Path(p).is_file() for p in entry[LADDER_PET_KEY])
    assert all(LADDER_PET_KEY not in e for e in load_datalist(data, "validation", kind="upete"))


def test_rungs_are_unbiased_with_noise_growing_as_one_over_dose(laddered):
    """Thinned scans reconstructed in activity units: the mean stays the SPET's (an OSEM of counts thinned to d but
    not rescaled by 1/d would be d times darker), and the extra noise variance against the SPET grows like 1/d − 1
    (9 at 10 %, 1 at 50 %; OSEM's few iterations make the ratio approximate)."""
    data, _ = laddered
    ratios, means = [], []
    for entry in load_datalist(data, "training", kind="upete"):
        spet = _xyz(entry["pet"])
        by_dose = {}
        for dose, path in zip(entry[LADDER_DOSE_KEY], entry[LADDER_PET_KEY], strict=True):
            x = _xyz(path)
            means.append(x.mean() / spet.mean())
            by_dose.setdefault(dose, []).append(((x - spet) ** 2).mean())
        ratios.append(np.mean(by_dose[0.1]) / np.mean(by_dose[0.5]))
    assert np.allclose(means, 1.0, atol=0.05), means
    assert all(5.0 < r < 15.0 for r in ratios), ratios
    entry = load_datalist(data, "training", kind="upete")[0]
    r0, r1 = (_xyz(p) for p in entry[LADDER_PET_KEY][:2])  # two realisations at 10 %: independent draws
    assert not np.allclose(r0, r1)


def test_rebuild_resumes_and_other_settings_are_refused(laddered):
    data, settings = laddered
    files = [Path(p) for e in load_datalist(data, "training", kind="upete") for p in e[LADDER_PET_KEY]]
    stamps = [f.stat().st_mtime_ns for f in files]
    assert build_dose_ladder(data, doses=DOSES, realisations=2, seed=3, progress=False) == settings
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing recomputed or overwritten
    with pytest.raises(ValueError, match=r"ladder\.json.*other settings"):
        build_dose_ladder(data, doses=DOSES, realisations=2, seed=4, progress=False)
    for bad, match in (({"doses": [0.1, 1.0]}, "doses"), ({"doses": []}, "doses"),
                       ({"realisations": 0}, "realisations"), ({"splits": ["train"]}, "splits")):
        with pytest.raises(ValueError, match=match):
            build_dose_ladder(data, **{"doses": DOSES, **bad}, progress=False)


def test_incomplete_or_foreign_dataset_is_refused(tmp_path):
    data = _dataset(tmp_path / "data")
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    (data / "manifest.json").write_text(json.dumps({**manifest, "complete": False}), encoding="utf-8")
    with pytest.raises(ValueError, match="not a complete uPETe dataset"):
        build_dose_ladder(data, doses=DOSES, progress=False)
    (data / "manifest.json").write_text(json.dumps({**manifest, "kind": "petdds"}), encoding="utf-8")
    with pytest.raises(ValueError, match="petdds dataset"):
        build_dose_ladder(data, doses=DOSES, progress=False)


def _entry(data: Path) -> dict:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from bundle.transforms.scaling import ToNetworkUnitsd

    entry = load_datalist(data, "training", kind="upete")[0]
    load = Compose([LoadImaged(keys="pet", image_only=True), EnsureChannelFirstd(keys="pet"),
                    ToNetworkUnitsd(keys="pet", statistic="mean", scale=10.0)])
    return load(entry)


def test_transform_draws_each_rung_with_its_step(laddered):
    data, _ = laddered
    entry = _entry(data)
    schedule = PoissonDoseSchedule(num_steps=400, min_dose=0.005)
    transform = RandDoseLadderd(schedule=schedule).set_random_state(seed=0)
    divisor = float(torch.as_tensor(entry["pet_scale"]).flatten()[0])
    expected = {schedule.step_for_dose(d) for d in DOSES} | {0}
    seen: dict[int, int] = {}
    for _ in range(60):
        out = transform(entry)
        t = int(out["timestep"])
        seen[t] = seen.get(t, 0) + 1
        if t == 0:  # the SPET itself, d = 1
            assert torch.equal(torch.as_tensor(out["pet_t"]), torch.as_tensor(entry["pet"]))
        else:
            files = [p for p, d in zip(entry[LADDER_PET_KEY], entry[LADDER_DOSE_KEY], strict=True)
                     if schedule.step_for_dose(d) == t]
            candidates = [torch.from_numpy(_xyz(p)[None] / divisor).float() for p in files]
            assert any(torch.allclose(torch.as_tensor(out["pet_t"]), c) for c in candidates)
        assert out["pet_t"].shape == entry["pet"].shape
    assert set(seen) == expected and min(seen.values()) >= 5  # 5 rungs (4 files + SPET), about 12 draws each


def test_transform_checks_its_inputs(laddered, tmp_path):
    data, _ = laddered
    entry = _entry(data)
    schedule = PoissonDoseSchedule(num_steps=400, min_dose=0.005)
    transform = RandDoseLadderd(schedule=schedule, include_standard=False)
    with pytest.raises(ValueError, match="ladder_pet"):
        transform({k: v for k, v in entry.items() if k != LADDER_PET_KEY})
    with pytest.raises(ValueError, match="pair up"):
        transform({**entry, LADDER_DOSE_KEY: [0.1]})
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(small))
    with pytest.raises(ValueError, match="has shape"):
        transform({**entry, LADDER_PET_KEY: [str(small)], LADDER_DOSE_KEY: [0.1]})
    with pytest.raises(FileNotFoundError, match="rebuild the ladder"):
        transform({**entry, LADDER_PET_KEY: [str(tmp_path / "missing.nii.gz")], LADDER_DOSE_KEY: [0.1]})
    with pytest.raises(TypeError, match="PoissonDoseSchedule"):
        RandDoseLadderd(schedule=None)
