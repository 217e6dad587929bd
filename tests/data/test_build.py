"""Dataset builders: datalist/manifest contents, determinism by seed, resume after interruption, refusal to mix.

The builder mechanics are tested with the analytic head phantom standing in for the brain phantoms (fast);
tests/data/test_build_phantoms.py runs each builder end to end with the real embedded-default phantoms.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bundle.data import build as build_module
from bundle.data import ellipsoid_head_phantom
from bundle.data.build import build_dataset, dataset_config
from bundle.data.io import load_image, load_sinogram
from bundle.keys import Keys

SMALL = dict(subjects=3, split=(1, 1, 1), rotations=1, slices=2, scanner_preset="tiny_2d",
             measured_counts=2e4, high_counts=2e5, osem_subsets=4, osem_iterations=2)


@pytest.fixture
def head_brains(monkeypatch):
    calls = []

    def fake(config, subject, image, seed, brainweb_dir):
        calls.append(subject)
        activity, mu = ellipsoid_head_phantom(image)
        scale = 1.0 + 0.1 * subject  # subjects differ
        return SimpleNamespace(activity=activity * scale, mu_map_per_mm=mu)

    monkeypatch.setattr(build_module, "_brain_phantom", fake)
    return calls


def _read(root, entry, key):
    path = root / entry[key]
    return load_sinogram(path) if path.suffix == ".npy" else load_image(path)[0]


def test_legopet_build_contents_and_determinism(tmp_path, head_brains):
    a = build_dataset("legopet", output=tmp_path / "a", seed=3, progress=False, **SMALL)
    b = build_dataset("legopet", output=tmp_path / "b", seed=3, progress=False, **SMALL)
    c = build_dataset("legopet", output=tmp_path / "c", seed=4, progress=False, **SMALL)
    assert [len(a[k]) for k in ("training", "validation", "test")] == [2, 2, 2]  # 1 subject x 1 rotation x 2 slices
    subjects = {k: {e[Keys.SUBJECT] for e in a[k]} for k in a}
    assert not (subjects["training"] & subjects["test"]) and not (subjects["training"] & subjects["validation"])
    entry = a["training"][0]
    sino = _read(tmp_path / "a", entry, Keys.SINOGRAM)
    assert sino.shape == (1, 64, 64) and float(sino.sum()) == pytest.approx(2e4, abs=5 * 2e4**0.5)
    assert float(_read(tmp_path / "a", entry, Keys.SINOGRAM_HIGH).sum()) == pytest.approx(2e5, rel=0.02)
    ref = _read(tmp_path / "a", entry, Keys.REFERENCE)
    truth = _read(tmp_path / "a", entry, Keys.ACTIVITY)
    # the high-count reference is closer to the truth than the OSEM of the measured data
    osem_err = float((_read(tmp_path / "a", entry, Keys.OSEM) - truth).norm())
    assert float((ref - truth).norm()) < osem_err
    for split in a:
        for ea, eb in zip(a[split], b[split], strict=True):
            assert torch.equal(_read(tmp_path / "a", ea, Keys.SINOGRAM), _read(tmp_path / "b", eb, Keys.SINOGRAM))
    diff = [not torch.equal(_read(tmp_path / "a", ea, Keys.SINOGRAM), _read(tmp_path / "c", ec, Keys.SINOGRAM))
            for ea, ec in zip(a["training"], c["training"], strict=True)]
    assert all(diff)
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == 3 and manifest["complete"] is True
    assert manifest["config"]["measured_counts"] == 2e4
    assert manifest["sinogram_layout"]["shape_planes_views_radial"] == [1, 64, 64]


def test_resume_rebuilds_only_missing_samples(tmp_path, head_brains):
    first = build_dataset("legopet", output=tmp_path, seed=0, progress=False, **SMALL)
    built = len(head_brains)
    victim = tmp_path / first["test"][0][Keys.SINOGRAM]
    marker = victim.parent / "sample.json"
    marker.unlink()  # as if the build was killed while writing this sample
    kept = tmp_path / first["training"][0][Keys.SINOGRAM]
    kept_mtime = kept.stat().st_mtime_ns
    again = build_dataset("legopet", output=tmp_path, seed=0, progress=False, **SMALL)
    assert again == first
    assert kept.stat().st_mtime_ns == kept_mtime  # finished samples were not rewritten
    assert len(head_brains) == built + 1  # only the test subject's phantom was made again
    assert marker.exists()


def test_refuses_to_mix_parameters(tmp_path, head_brains):
    build_dataset("legopet", output=tmp_path, seed=0, progress=False, **SMALL)
    manifest = (tmp_path / "manifest.json").read_bytes()
    with pytest.raises(ValueError, match=r"already holds a dataset built with other parameters \(seed: stored 0, "
                                         r"asked 1\); nothing was written"):
        build_dataset("legopet", output=tmp_path, seed=1, progress=False, **SMALL)
    assert (tmp_path / "manifest.json").read_bytes() == manifest


def test_cli_refusals_exit_2_with_one_line(tmp_path, capsys):
    """Another --seed into a started build, and --output naming a file: named before anything is written."""
    from bundle.data.__main__ import main

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as stop:
        main(["build", "petdds", "--output", str(tmp_path / "notes.txt"), "--no-progress"])
    assert stop.value.code == 2 and "is a file; expected a folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    started = tmp_path / "data"
    started.mkdir()
    stored = {"kind": "petdds", "preset": "tiny", "seed": 0, "bundle_version": "0", "config": {}}
    (started / "manifest.json").write_text(json.dumps(stored))
    with pytest.raises(SystemExit) as stop:
        main(["build", "petdds", "--output", str(started), "--seed", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "seed: stored 0, asked 1" in err and "Traceback" not in err
    assert json.loads((started / "manifest.json").read_text()) == stored


def test_petdds_build_low_count_realisations(tmp_path, head_brains):
    datalist = build_dataset("petdds", output=tmp_path, seed=0, progress=False, subjects=2, split=(1, 0, 1),
                             scanner_preset="tiny_3d", full_counts=1e6, realisations=2, osem_subsets=4,
                             osem_iterations=2)
    entry = datalist["test"][0]
    full = load_sinogram(tmp_path / entry[Keys.SINOGRAM_HIGH])
    lows = [load_sinogram(tmp_path / p) for p in entry["sinogram_low"]]
    assert len(lows) == 2 and not torch.equal(lows[0], lows[1])  # independent realisations
    for low in lows:  # 1 % of the counts
        assert float(low.sum()) == pytest.approx(0.01 * float(full.sum()), rel=0.05)
    factors = load_sinogram(tmp_path / entry["multiplicative_factors"])
    assert float(factors.min()) > 0 and float(factors.max()) <= 1  # attenuation x normalisation
    assert entry["training_slices"] and all(isinstance(z, int) for z in entry["training_slices"])


def test_config_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        dataset_config("unknown", "tiny")
    with pytest.raises(ValueError, match="unknown legopet option"):
        dataset_config("legopet", "tiny", bogus=1)
    with pytest.raises(ValueError, match="must add up to subjects"):
        dataset_config("legopet", "tiny", subjects=5)
    assert np.isclose(dataset_config("petdds", "paper").low_count_fraction, 0.01)


def test_small_legopet_preset_builds_64_by_64_slices(tmp_path, head_brains):
    """The CPU-study preset: brain_2d scanner, counts of tiny, 64 × 64 sinograms and images (a 2-slice build)."""
    config = dataset_config("legopet", "small")
    tiny = dataset_config("legopet", "tiny")
    assert config.scanner_preset == "brain_2d" and config.source == tiny.source == "mni152"
    assert (config.subjects, config.split) == (16, (12, 2, 2))  # the shipped LegoPET weights' data
    assert (config.measured_counts, config.high_counts) == (tiny.measured_counts, tiny.high_counts)
    assert (config.rotations, config.slices, config.osem_subsets) == (4, 8, 8)
    datalist = build_dataset("legopet", output=tmp_path, preset_name="small", seed=0, progress=False, subjects=2,
                             split=(1, 0, 1), rotations=1, slices=1)
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [1, 0, 1]
    entry = datalist["test"][0]
    for key in (Keys.SINOGRAM, Keys.SINOGRAM_HIGH):
        assert _read(tmp_path, entry, key).shape == (1, 64, 64)
    for key in (Keys.REFERENCE, Keys.OSEM, Keys.ACTIVITY, Keys.MU_MAP):
        image, geometry = load_image(tmp_path / entry[key])
        assert image.shape == geometry.shape == (1, 64, 64) and geometry.voxel_size_mm[1:] == (3.75, 3.75)
    assert float(_read(tmp_path, entry, Keys.SINOGRAM).sum()) == pytest.approx(3e5, rel=0.01)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["preset"] == "small" and manifest["config"]["scanner_preset"] == "brain_2d"
    assert manifest["sinogram_layout"]["shape_planes_views_radial"] == [1, 64, 64]


def test_preset_missing_for_a_kind(monkeypatch):
    from bundle.data import build

    monkeypatch.delitem(build._CONFIGS, (build.DatasetKind.UPETE, build.DatasetPreset.SMALL))
    with pytest.raises(ValueError, match=r"preset_name must be one of \['paper', 'tiny'\] for a upete dataset"):
        dataset_config("upete", "small")


def test_upete_small_preset_is_a_real_resolution_region_with_lesions():
    small = dataset_config("upete", "small")
    assert small.voxel_size_mm == (4.0, 4.0, 4.0) and small.image_shape == (32, 96, 96)
    assert small.lesion_count[0] >= 3 and small.lesion_radius_mm[0] >= 4.0 and small.texture_std > 0
    assert sum(small.split) == small.subjects and small.split[2] >= 4  # >= 4 test subjects (issue 17)


def test_petdds_small_preset_adds_subjects_not_geometry():
    """The small preset keeps tiny's scanner, counts and reference and adds subjects (16/4/4) and realisations."""
    tiny, small = dataset_config("petdds", "tiny"), dataset_config("petdds", "small")
    assert (small.subjects, small.split, small.realisations) == (24, (16, 4, 4), 5)
    same = ("scanner_preset", "full_counts", "low_count_fraction", "fwhm_mm", "osem_subsets", "osem_iterations")
    assert all(getattr(small, k) == getattr(tiny, k) for k in same)


def test_command_line_overrides_reach_the_manifest(tmp_path, head_brains):
    """``--subjects/--split/--rotations/--slices`` override the preset and are recorded in the manifest."""
    from bundle.data.__main__ import main

    out = tmp_path / "d"
    assert main(["build", "legopet", "--output", str(out), "--preset", "small", "--subjects", "3", "--split",
                 "1,1,1", "--rotations", "1", "--slices", "1", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["config"]["subjects"], manifest["config"]["split"]) == (3, [1, 1, 1])
    datalist = json.loads((out / "datalist.json").read_text(encoding="utf-8"))
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [1, 1, 1]
    assert sorted(head_brains) == [0, 1, 2]


@pytest.mark.parametrize("bad", [["--split", "1,1"], ["--split", "a,b,c"], ["--subjects", "0"],
                                 ["--subjects", "5"], ["--split", "2,1,-1"], ["--full-counts", "0"]])
def test_command_line_rejects_bad_overrides(tmp_path, bad, capsys):
    from bundle.data.__main__ import main

    with pytest.raises(SystemExit):
        main(["build", "legopet", "--output", str(tmp_path / "d"), *bad])
    assert not (tmp_path / "d").exists()
    assert "error" in capsys.readouterr().err


def test_command_line_rejects_options_a_kind_does_not_have(tmp_path, capsys):
    from bundle.data.__main__ import main

    with pytest.raises(SystemExit):
        main(["build", "petdds", "--output", str(tmp_path / "d"), "--rotations", "2"])
    assert "unknown petdds option(s) ['rotations']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["build", "legopet", "--output", str(tmp_path / "d"), "--full-counts", "1e6"])
    assert "unknown legopet option(s) ['full_counts']" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0.1", "0,0.5", "0.5,0.5", "x", "1.5"])
def test_command_line_rejects_bad_curve_doses(tmp_path, bad, capsys):
    from bundle.data.__main__ import main

    with pytest.raises(SystemExit):
        main(["build", "upete", "--output", str(tmp_path / "d"), "--curve-doses", bad])
    assert not (tmp_path / "d").exists()
    assert "--curve-doses" in capsys.readouterr().err


def test_curve_doses_choose_the_test_lpets_and_keep_the_10_percent_scan(tmp_path, capsys):
    """--curve-doses 0.5: the test subject gets its 10 % LPET and a 50 % one only; the 10 % LPET is drawn first, so
    it is the same image as in a build with the preset's whole curve (same seed)."""
    from bundle.data.__main__ import main
    from bundle.data.io import load_image

    args = ["build", "upete", "--subjects", "1", "--split", "0,0,1", "--no-progress"]
    main([*args, "--output", str(tmp_path / "short"), "--curve-doses", "0.5"])
    main([*args, "--output", str(tmp_path / "full")])
    short, full = (sorted(p.name for p in (tmp_path / name / "samples" / "s000").glob("pet_low_*"))
                   for name in ("short", "full"))
    assert short == ["pet_low_0.1.nii.gz", "pet_low_0.5.nii.gz"]
    assert full == sorted(f"pet_low_{f:g}.nii.gz" for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5))
    ten = [load_image(tmp_path / name / "samples" / "s000" / "pet_low_0.1.nii.gz")[0] for name in ("short", "full")]
    assert torch.equal(ten[0], ten[1])
    manifest = json.loads((tmp_path / "short" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["generalisation_fractions"] == [0.5]
