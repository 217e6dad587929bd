"""bundle.app PET-DDS-δ inputs straight from a dataset sample (--sample DIR --realisation k), the large-background
warning, and output names derived from the input's folder."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.app import build_task
from bundle.app.bad_inputs import fabricate_petdds_dataset
from bundle.app.cli import main

from .conftest import PETDDS_TINY

COUNT_SCALE_FULL, FRACTION = 2.0, 0.25


@pytest.fixture(scope="module")
def task(petdds_files):
    return build_task("petdds", checkpoint=petdds_files["checkpoint"], overrides=PETDDS_TINY)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A hand-made petdds dataset of one sample on the tiny_3d scanner, laid out as bundle.data build writes it."""
    return fabricate_petdds_dataset(tmp_path_factory.mktemp("petdds_dataset"), sample_id="s07", split="test", seed=0,
                                    background=4.0, full_counts=20.0, low_counts=5.0,
                                    count_scale_full=COUNT_SCALE_FULL, low_count_fraction=FRACTION)


def test_sample_request_equals_the_explicit_files_of_the_forward_model(task, dataset, tmp_path):
    """--sample s07 --realisation 1 == --image sinogram_low_01 --normalisation f c n⊙a --background f s_full."""
    normalisation = tmp_path / "norm.npy"
    np.save(normalisation, (dataset["multiplicative_factors"] * COUNT_SCALE_FULL * FRACTION).astype(np.float32))
    background = tmp_path / "background.npy"
    np.save(background, (dataset["background_full"] * FRACTION).astype(np.float32))
    explicit, _ = task({"image": str(dataset["folder"] / "sinogram_low_01.npy"), "normalisation": str(normalisation),
                        "background": str(background), "output": str(tmp_path / "explicit.nii.gz")})
    from_sample, result = task({"sample": str(dataset["folder"]), "realisation": 1,
                                "output": str(tmp_path / "sample.nii.gz")})
    np.testing.assert_array_equal(np.asarray(nib.load(from_sample).dataobj), np.asarray(nib.load(explicit).dataobj))
    assert result["realisation"] == 1 and result["count_fraction"] == FRACTION
    assert result["image"].endswith("sinogram_low_01.npy")


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        ({"realisation": 2}, r"realisation must be 'full' or an int in \[0, 2\)"),
        ({"realisation": "full", "background": 0.5}, r"drop \['background'\] \(--background\)"),
    ],
)
def test_sample_request_errors_name_the_argument(task, dataset, request_, match):
    with pytest.raises(ValueError, match=match):
        task.validate_request({"sample": str(dataset["folder"]), **request_})


def test_a_folder_that_is_not_a_sample_is_named(task, tmp_path):
    with pytest.raises(FileNotFoundError, match="must be a sample folder of a petdds dataset"):
        task.validate_request({"sample": str(tmp_path)})


def test_cli_sample_writes_a_name_from_the_sample_folder(petdds_files, dataset, tmp_path, capsys):
    argv = ["infer", "--method", "petdds", "--sample", str(dataset["folder"]), "--realisation", "full",
            "--output", str(tmp_path), "--checkpoint", str(petdds_files["checkpoint"])]
    argv += [a for key, value in PETDDS_TINY.items() for a in ("--override", f"{key}={json.dumps(value)}")]
    assert main(argv) == 0
    assert (tmp_path / "s07_sinogram_full_petdds.nii.gz").is_file()
    assert json.loads(capsys.readouterr().out)["count_fraction"] == 1.0


@pytest.mark.parametrize(("background", "warns"), [(4.0, True), (0.5, False)])
def test_background_of_the_order_of_the_counts_warns_with_the_numbers(task, petdds_files, tmp_path, caplog,
                                                                      background, warns):
    counts = float(np.load(petdds_files["sinogram"]).mean())  # about 3 counts per bin
    caplog.set_level(logging.WARNING, logger="bundle.app.petdds")
    task({"image": str(petdds_files["sinogram"]), "background": background, "output": str(tmp_path / "x.nii.gz")})
    messages = [r.getMessage() for r in caplog.records if r.name == "bundle.app.petdds"]
    if warns:
        assert len(messages) == 1 and f"{background:.4g}" in messages[0] and f"{counts:.4g}" in messages[0]
    else:
        assert messages == []


def test_two_inputs_with_one_name_get_distinct_outputs_in_one_folder(task, petdds_files, tmp_path, capsys):
    """samples/a/sino.npy and samples/b/sino.npy -> a_sino_petdds.nii.gz, b_sino_petdds.nii.gz (the second used to
    replace the first); the same input twice is refused and names the file."""
    out = tmp_path / "out"
    out.mkdir()
    written = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        sinogram = tmp_path / name / "sino.npy"
        np.save(sinogram, np.load(petdds_files["sinogram"]) * (1.0 if name == "a" else 2.0))
        written.append(task({"image": str(sinogram), "background": 0.5, "output": str(out)})[0])
    assert [p.split("/")[-1] for p in written] == ["a_sino_petdds.nii.gz", "b_sino_petdds.nii.gz"]
    first, second = (torch.as_tensor(np.asarray(nib.load(p).dataobj)) for p in written)
    assert not torch.equal(first, second)
    with pytest.raises(ValueError, match=r"a_sino_petdds\.nii\.gz.*nothing was written"):
        task({"image": str(tmp_path / "a" / "sino.npy"), "background": 0.5, "output": str(out)})
    other = tmp_path / "y" / "a"  # another input whose folder and file names map to the same output
    other.mkdir(parents=True)
    np.save(other / "sino.npy", np.load(petdds_files["sinogram"]))
    argv = ["infer", "--method", "petdds", "--background", "0.5", "--checkpoint", str(petdds_files["checkpoint"])]
    argv += [a for key, value in PETDDS_TINY.items() for a in ("--override", f"{key}={json.dumps(value)}")]
    assert main([*argv, "--image", str(tmp_path / "a" / "sino.npy"), "--output", str(tmp_path / "c.nii.gz")]) == 0
    assert main([*argv, "--image", str(other / "sino.npy"), "--output", str(tmp_path / "c.nii.gz")]) == 2
    assert "written from another input" in capsys.readouterr().err
