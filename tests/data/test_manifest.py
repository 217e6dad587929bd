"""bundle.data.manifest: a missing dataset or one of another method is named before any reader uses it."""

from __future__ import annotations

import json

import pytest

from bundle.data.legopet import legopet_datalist
from bundle.data.manifest import load_datalist, read_manifest
from bundle.data.petdds import PETDDSDataset
from bundle.data.slices import slice_datalist
from bundle.data.upete import load_split


def _dataset(folder, kind, entries=()):
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"kind": kind, "complete": True}))
    (folder / "datalist.json").write_text(json.dumps({"training": list(entries), "validation": [], "test": []}))
    return folder


def test_read_manifest_checks_the_kind(tmp_path):
    folder = _dataset(tmp_path / "d", "legopet")
    assert read_manifest(folder, "legopet")["kind"] == "legopet"
    with pytest.raises(ValueError, match=r"holds a legopet dataset, expected a petdds dataset \(build one with "
                                         r"python -m bundle\.data build petdds"):
        read_manifest(folder, "petdds")
    with pytest.raises(FileNotFoundError, match=r"is not a folder; build the dataset first: python -m bundle\.data "
                                                r"build upete --output"):
        read_manifest(tmp_path / "missing", "upete")
    (tmp_path / "bare").mkdir()
    assert read_manifest(tmp_path / "bare", "upete", required=False) == {}
    with pytest.raises(FileNotFoundError, match=r"has no manifest\.json, so it is not a upete dataset"):
        read_manifest(tmp_path / "bare", "upete")


@pytest.mark.parametrize(
    ("reader", "kind"),
    [
        (lambda d: slice_datalist(d, "training"), "petdds"),
        (lambda d: PETDDSDataset.open(d), "petdds"),
        (lambda d: legopet_datalist(d, "training"), "legopet"),
        (lambda d: load_split(d, "training"), "upete"),
        (lambda d: load_datalist(d, "training", kind="legopet"), "legopet"),
    ],
)
def test_every_reader_names_a_dataset_of_another_method(tmp_path, reader, kind):
    other = "upete" if kind != "upete" else "petdds"
    with pytest.raises(ValueError, match=f"holds a {other} dataset, expected a {kind} dataset"):
        reader(_dataset(tmp_path / "d", other))


def test_load_datalist_resolves_paths_against_the_dataset(tmp_path):
    folder = _dataset(tmp_path / "d", "upete", [{"pet": "samples/a/pet.nii.gz"}])
    (folder / "samples" / "a").mkdir(parents=True)
    (folder / "samples" / "a" / "pet.nii.gz").write_bytes(b"")  # MONAI resolves the paths that exist
    assert load_datalist(folder, "training", kind="upete") == [{"pet": str(folder / "samples/a/pet.nii.gz")}]
    (folder / "datalist.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no datalist\.json; build the upete dataset"):
        load_datalist(folder, "training", kind="upete")
