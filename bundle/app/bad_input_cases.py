"""The bad inputs of issue 14, one :class:`~bundle.app.bad_inputs.Case` each: :data:`CASES`.

Grouped by entry point: ``bundle.app infer`` (PET-DDS-δ with tiny random weights, uPETe with a tiny combined
checkpoint), ``bundle.data build``, training through ``python -m bundle.run`` and the model-zoo archive checks.
Each case fabricates its inputs in its own folder; shared tiny checkpoints and datasets come from the
:class:`~bundle.app.bad_inputs.Workspace`.  Add a case by appending to :data:`CASES`.  Importing this module runs
nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from .bad_inputs import REPO, Case, Outcome, Run, Workspace

__all__ = ["CASES"]

CONFIGS = REPO / "configs"


def _configs(*names: str) -> str:
    return str([str(CONFIGS / n) for n in names])


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _checkpoint(path: Path, iteration: int, run_id: str) -> Path:
    """A stand-in training checkpoint: only what the resume lookup reads (trainer state and run id)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"trainer": {"iteration": iteration, "epoch": iteration // 2}, "run_id": {"run_id": run_id}}, path)
    return path


def _says(*parts: str):
    """``verify``: the last stderr line holds every one of ``parts``."""

    def verify(ws: Workspace, folder: Path, runs: Sequence[Run]) -> str | None:
        missing = [p for p in parts if p not in runs[-1].message]
        return f"the message lacks {missing}" if missing else None

    return verify


def _files_exist(*names: str):
    def verify(ws: Workspace, folder: Path, runs: Sequence[Run]) -> str | None:
        missing = [n for n in names if not (folder / n).is_file()]
        return f"expected output files {missing} are missing" if missing else None

    return verify


def _npy(path: Path, array) -> Path:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array, allow_pickle=True)
    return path


def _copy_sinogram(ws: Workspace, path: Path, factor: float = 1.0) -> Path:
    import numpy as np

    return _npy(path, np.load(ws.sinogram) * np.float32(factor))


# -------------------------------------------------------------------------------------------------- bundle.app
def _app_cases() -> list[Case]:
    out = lambda f: str(f / "out.nii.gz")  # noqa: E731
    return [
        Case(name="app_output_exists", what="`--output` names an existing file",
             setup=lambda ws, f: _write(f / "out.nii.gz", b"earlier result"),
             protect=lambda ws, f: [f / "out.nii.gz"],
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f))], verify=_says("--overwrite")),
        Case(name="app_sidecar_exists", what="the sidecar `<output>.json` exists",
             setup=lambda ws, f: _write(f / "out.nii.gz.json", "{}"), protect=lambda ws, f: [f / "out.nii.gz.json"],
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f))]),
        Case(name="app_companion_exists", what="the `_cv` companion of `--samples 2` exists",
             setup=lambda ws, f: _write(f / "out_cv.nii.gz", b"earlier cv"),
             protect=lambda ws, f: [f / "out_cv.nii.gz"],
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--samples", "2")]),
        Case(name="app_user_json_kept", what="a user file `out.json` beside `--output out.nii.gz`",
             expect=Outcome.HANDLED, setup=lambda ws, f: _write(f / "out.json", "{\"mine\": true}"),
             protect=lambda ws, f: [f / "out.json"], commands=lambda ws, f: [ws.petdds_infer("--output", out(f))],
             verify=_files_exist("out.nii.gz", "out.nii.gz.json")),
        Case(name="app_two_inputs_one_name", what="`a/sinogram.npy` and `b/sinogram.npy` into one output folder",
             expect=Outcome.HANDLED,
             setup=lambda ws, f: [_copy_sinogram(ws, f / "a" / "sinogram.npy"),
                                  _copy_sinogram(ws, f / "b" / "sinogram.npy", 2.0), (f / "out").mkdir()],
             commands=lambda ws, f: [ws.petdds_infer("--output", str(f / "out"), image=f / n / "sinogram.npy")
                                     for n in ("a", "b")],
             verify=_files_exist("out/a_sinogram_petdds.nii.gz", "out/b_sinogram_petdds.nii.gz")),
        Case(name="app_output_name_collision", what="`x/a/sino.npy`, then `y/a/sino.npy` into one output folder",
             setup=lambda ws, f: [_copy_sinogram(ws, f / "x" / "a" / "sino.npy"),
                                  _copy_sinogram(ws, f / "y" / "a" / "sino.npy", 2.0), (f / "out").mkdir()],
             commands=lambda ws, f: [ws.petdds_infer("--output", str(f / "out"), image=f / d / "a" / "sino.npy")
                                     for d in ("x", "y")],
             verify=_says("written from another input")),
        Case(name="app_override_unknown_key", what="`--override nonsense_key=3`",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--override", "nonsense_key=3")],
             verify=_says("not an id of the petdds configs")),
        Case(name="app_override_not_json", what="`--override num_inference_steps=abc` (not JSON)",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--override", "num_inference_steps=abc")],
             verify=_says("is not JSON")),
        Case(name="app_override_malformed", what="`--override novalue` (no `=`)",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--override", "novalue")]),
        Case(name="app_nifti_as_sinogram", what="a NIfTI given as the `.npy` sinogram",
             setup=lambda ws, f: ws.nifti(f / "pet.nii.gz", (4, 4, 4)),
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), image=f / "pet.nii.gz")]),
        Case(name="app_object_npy", what="a non-numeric (pickled object) `.npy` sinogram",
             setup=lambda ws, f: _npy(f / "s.npy", __import__("numpy").array([{"a": 1}], dtype=object)),
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), image=f / "s.npy")]),
        Case(name="app_sinogram_wrong_shape", what="a sinogram of another shape",
             setup=lambda ws, f: _npy(f / "s.npy", __import__("numpy").ones((2, 3, 4), dtype="float32")),
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), image=f / "s.npy")]),
        Case(name="app_image_missing", what="`--image` names no file",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), image=f / "nothere.npy")]),
        Case(name="app_output_is_file", what="`--output` names an existing non-NIfTI file",
             setup=lambda ws, f: _write(f / "notes.txt", "mine"), protect=lambda ws, f: [f / "notes.txt"],
             commands=lambda ws, f: [ws.petdds_infer("--output", str(f / "notes.txt"))]),
        Case(name="app_checkpoint_other_method", what="the LegoPET checkpoint given to `--method petdds`",
             commands=lambda ws, f: [["bundle.app", "infer", "--method", "petdds", "--image", str(ws.sinogram),
                                      "--background", "1", "--output", out(f), "--checkpoint",
                                      str(REPO / "models" / "legopet.pt"), "--override", "device=\"cpu\""]],
             verify=lambda ws, f, runs: None if len(runs[-1].message) < 600 else
             f"the message is {len(runs[-1].message)} characters long"),
        Case(name="app_checkpoint_garbage", what="a text file as `--checkpoint`",
             setup=lambda ws, f: _write(f / "model.pt", "not a checkpoint"),
             commands=lambda ws, f: [["bundle.app", "infer", "--method", "petdds", "--image", str(ws.sinogram),
                                      "--background", "1", "--output", out(f), "--checkpoint", str(f / "model.pt"),
                                      *ws.petdds_overrides]]),
        Case(name="app_checkpoint_missing", what="`--checkpoint` names no file",
             commands=lambda ws, f: [["bundle.app", "infer", "--method", "petdds", "--image", str(ws.sinogram),
                                      "--background", "1", "--output", out(f), "--checkpoint", str(f / "no.pt"),
                                      *ws.petdds_overrides]]),
        Case(name="app_background_negative", what="`--background -1`",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), background="-1")]),
        Case(name="app_background_not_number", what="`--background abc` (neither number nor file)",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), background="abc")]),
        Case(name="app_background_large", what="`--background 5` on a sinogram of mean 3 counts",
             expect=Outcome.HANDLED, commands=lambda ws, f: [ws.petdds_infer("--output", out(f), background="5")],
             verify=lambda ws, f, runs: None if "x the mean measured counts" in runs[-1].stderr else "no warning"),
        Case(name="app_normalisation_wrong_shape", what="`--normalisation` of another shape",
             setup=lambda ws, f: _npy(f / "n.npy", __import__("numpy").ones((2, 3, 4), dtype="float32")),
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--normalisation", str(f / "n.npy"))]),
        Case(name="app_sample_not_a_sample", what="`--sample` names a folder that is no dataset sample",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--sample", str(f))]),
        Case(name="app_sample_bad_realisation", what="`--realisation 5` of a sample with 2",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--sample",
                                                     str(ws.petdds_dataset / "samples" / "s00"),
                                                     "--realisation", "5")]),
        Case(name="app_sample_and_background", what="`--sample` together with `--background`",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--sample",
                                                     str(ws.petdds_dataset / "samples" / "s00"),
                                                     "--background", "0.5")]),
        Case(name="app_sample_reconstructs", what="`--sample DIR --realisation 0` into a folder",
             expect=Outcome.HANDLED, setup=lambda ws, f: (f / "out").mkdir(),
             commands=lambda ws, f: [ws.petdds_infer("--output", str(f / "out"), "--sample",
                                                     str(ws.petdds_dataset / "samples" / "s00"),
                                                     "--realisation", "0")],
             verify=_files_exist("out/s00_sinogram_low_00_petdds.nii.gz")),
        Case(name="app_option_of_other_method", what="`--dose` (uPETe) with `--method petdds`",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--dose", "0.1")]),
        Case(name="app_seed_negative", what="`--seed -1`",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--seed", "-1")]),
        Case(name="app_samples_zero", what="`--samples 0`",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--samples", "0")]),
        Case(name="app_config_file_missing", what="`--config-file` names no file",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--config-file", str(f / "no.json"))]),
        Case(name="app_device_unknown", what="`--device gpu7`",
             commands=lambda ws, f: [ws.petdds_infer("--output", out(f), "--device", "gpu7")]),
        Case(name="app_unknown_method", what="`--method foo`",
             commands=lambda ws, f: [["bundle.app", "infer", "--method", "foo", "--image", "x", "--output", "y"]]),
        Case(name="app_image_absent", what="no `--image` (LegoPET)",
             commands=lambda ws, f: [["bundle.app", "infer", "--method", "legopet", "--output", out(f)]]),
    ]


def _upete_cases() -> list[Case]:
    def pet_ct(ws: Workspace, f: Path, pet_shape=(8, 8, 8), ct_shape=(8, 8, 8)) -> None:
        if pet_shape is not None:
            ws.nifti(f / "pet.nii.gz", pet_shape)
        ws.nifti(f / "ct.nii.gz", ct_shape, value=0.0)

    def truncated(ws: Workspace, f: Path) -> None:
        pet_ct(ws, f)
        data = (f / "pet.nii.gz").read_bytes()
        (f / "pet.nii.gz").write_bytes(data[: len(data) // 2])

    def infer(ws: Workspace, f: Path, *args: str) -> list[list[str]]:
        return [ws.upete_infer("--image", str(f / "pet.nii.gz"), "--ct", str(f / "ct.nii.gz"),
                               "--output", str(f / "out.nii.gz"), *args)]

    return [
        Case(name="upete_unknown_variant", what="`--override variant=XYZ` (uPETe)",
             setup=lambda ws, f: pet_ct(ws, f),
             commands=lambda ws, f: [["bundle.app", "infer", "--method", "upete", "--image", str(f / "pet.nii.gz"),
                                      "--output", str(f / "out.nii.gz"), "--override", "variant=XYZ"]],
             verify=_says("variant must be one of")),
        Case(name="upete_garbage_nifti", what="a garbage file named `pet.nii.gz`",
             setup=lambda ws, f: [pet_ct(ws, f, pet_shape=None), _write(f / "pet.nii.gz", b"garbage" * 50)],
             commands=lambda ws, f: infer(ws, f), verify=_says("--image")),
        Case(name="upete_truncated_nifti", what="a truncated PET NIfTI", setup=truncated,
             commands=lambda ws, f: infer(ws, f), verify=_says("--image")),
        Case(name="upete_2d_pet", what="a 2D PET image", setup=lambda ws, f: pet_ct(ws, f, pet_shape=(8, 8)),
             commands=lambda ws, f: infer(ws, f), verify=_says("2D")),
        Case(name="upete_4d_pet", what="a 4D PET image", setup=lambda ws, f: pet_ct(ws, f, pet_shape=(8, 8, 8, 2)),
             commands=lambda ws, f: infer(ws, f), verify=_says("4D")),
        Case(name="upete_grid_mismatch", what="PET and CT on different grids",
             setup=lambda ws, f: pet_ct(ws, f, ct_shape=(8, 8, 6)), commands=lambda ws, f: infer(ws, f),
             verify=_says("same grid")),
        Case(name="upete_missing_ct", what="no `--ct` for a CT-guided variant", setup=lambda ws, f: pet_ct(ws, f),
             commands=lambda ws, f: [ws.upete_infer("--image", str(f / "pet.nii.gz"), "--output",
                                                    str(f / "out.nii.gz"))], verify=_says("request['ct']")),
        Case(name="upete_dose_out_of_range", what="`--dose 2`", setup=lambda ws, f: pet_ct(ws, f),
             commands=lambda ws, f: infer(ws, f, "--dose", "2"), verify=_says("dose")),
    ]


# -------------------------------------------------------------------------------------------------- bundle.data
def _stored_manifest(ws: Workspace, f: Path) -> None:
    """The manifest a ``bundle.data build petdds --seed 0`` (tiny preset) writes first."""
    from bundle import __version__
    from bundle.data.build import _jsonable, dataset_config

    manifest = {"kind": "petdds", "preset": "tiny", "seed": 0, "bundle_version": __version__,
                "config": _jsonable(dataset_config("petdds", "tiny")), "complete": False}
    _write(f / "data" / "manifest.json", json.dumps(manifest))


def _data_cases() -> list[Case]:
    def build(f: Path, *args: str) -> list[list[str]]:
        return [["bundle.data", "build", "petdds", "--no-progress", *args]]

    return [
        Case(name="data_build_other_seed", what="`bundle.data build` into a dataset folder of another `--seed`",
             setup=_stored_manifest, protect=lambda ws, f: [f / "data" / "manifest.json"],
             commands=lambda ws, f: build(f, "--output", str(f / "data"), "--seed", "1"),
             verify=_says("seed: stored 0, asked 1")),
        Case(name="data_build_output_is_file", what="`bundle.data build --output` names a file",
             setup=lambda ws, f: _write(f / "data.txt", "mine"), protect=lambda ws, f: [f / "data.txt"],
             commands=lambda ws, f: build(f, "--output", str(f / "data.txt"))),
        Case(name="data_build_bad_split", what="`--split 1,2`",
             commands=lambda ws, f: build(f, "--output", str(f / "d"), "--split", "1,2")),
        Case(name="data_build_zero_subjects", what="`--subjects 0`",
             commands=lambda ws, f: build(f, "--output", str(f / "d"), "--subjects", "0")),
    ]


# -------------------------------------------------------------------------------------------------- training
PETDDS_TRAIN = ("common.json", "petdds/network.json", "petdds/train.json")
PNPNET_TRAIN = ("common.json", "legopet/train_pnpnet.json")
UPETE_LDM = ("common.json", "upete/network.json", "upete/train_autoencoder.json", "upete/train_ldm.json")


def _train(f: Path, files: Sequence[str], *args: str) -> list[list[str]]:
    return [["bundle.run", "training", "--config_file", _configs(*files), "--output_dir", str(f / "results"),
             "--device", "$torch.device('cpu')", *args]]


def _training_cases() -> list[Case]:
    return [
        Case(name="train_without_common", what="a training config list without `configs/common.json`",
             commands=lambda ws, f: _train(f, PETDDS_TRAIN[1:], "--dataset_dir", str(ws.petdds_dataset)),
             verify=_says("common.json")),
        Case(name="train_config_missing", what="`--config_file` names a file that does not exist",
             commands=lambda ws, f: _train(f, ("common.json", "petdds/nothere.json"))),
        Case(name="train_missing_dataset", what="training with a `--dataset_dir` that does not exist",
             commands=lambda ws, f: _train(f, PETDDS_TRAIN, "--dataset_dir", str(f / "nothere")),
             verify=_says("build the dataset first: python -m bundle.data build petdds")),
        Case(name="train_petdds_on_legopet_data", what="PET-DDS-δ training on a LegoPET dataset",
             commands=lambda ws, f: _train(f, PETDDS_TRAIN, "--dataset_dir", str(ws.fake_dataset("legopet"))),
             verify=_says("holds a legopet dataset, expected a petdds dataset")),
        Case(name="train_legopet_on_petdds_data", what="LegoPET (PnPNet) training on a PET-DDS-δ dataset",
             commands=lambda ws, f: _train(f, PNPNET_TRAIN, "--dataset_dir", str(ws.fake_dataset("petdds"))),
             verify=_says("holds a petdds dataset, expected a legopet dataset")),
        Case(name="train_over_earlier_checkpoints", what="a fresh training into a folder with an earlier run's "
             "`network_final.pt`",
             setup=lambda ws, f: _write(f / "results" / "petdds" / "checkpoints" / "network_final.pt", b"earlier run"),
             protect=lambda ws, f: [f / "results" / "petdds" / "checkpoints" / "network_final.pt"],
             commands=lambda ws, f: _train(f, PETDDS_TRAIN, "--dataset_dir", str(ws.petdds_dataset),
                                           "--max_epochs", "1", "--batch_size", "1"),
             verify=_says("earlier run")),
        Case(name="resume_mixed_runs", what="`resume.json` over checkpoints of two different runs",
             setup=lambda ws, f: [_checkpoint(f / "results" / "petdds" / "checkpoints" / name, iteration, run)
                                  for name, iteration, run in (("checkpoint_epoch=1.pt", 2, "a" * 32),
                                                               ("checkpoint_epoch=2.pt", 4, "b" * 32))],
             protect=lambda ws, f: sorted((f / "results" / "petdds" / "checkpoints").glob("*.pt")),
             commands=lambda ws, f: _train(f, (*PETDDS_TRAIN, "petdds/resume.json"), "--dataset_dir",
                                           str(ws.petdds_dataset), "--max_epochs", "3", "--batch_size", "1"),
             verify=_says("different training runs", "--resume_run_id")),
        Case(name="train_unknown_variant", what="uPETe training with `--variant XYZ`",
             commands=lambda ws, f: _train(f, UPETE_LDM, "--variant", "XYZ", "--dataset_dir",
                                           str(ws.fake_dataset("upete"))),
             verify=_says("variant must be one of")),
    ]


# -------------------------------------------------------------------------------------------------- model zoo
def _zoo_cases() -> list[Case]:
    def copy(ws: Workspace, f: Path) -> Path:
        return Path(shutil.copytree(ws.zoo_bundle, f / "tiny_bundle"))

    return [
        Case(name="zoo_verify_extra_file", what="`bundle.zoo verify` of a bundle with an unrecorded file",
             setup=lambda ws, f: _write(copy(ws, f) / "extra.txt", "x"),
             commands=lambda ws, f: [["bundle.zoo", "verify", str(f / "tiny_bundle")]]),
        Case(name="zoo_verify_edited_file", what="`bundle.zoo verify` of a bundle with an edited file",
             setup=lambda ws, f: _write(copy(ws, f) / "configs" / "inference.json", "{\"edited\": 1}"),
             commands=lambda ws, f: [["bundle.zoo", "verify", str(f / "tiny_bundle")]]),
        Case(name="zoo_extract_nonempty", what="`bundle.zoo extract` into a non-empty folder",
             setup=lambda ws, f: [ws.zoo_zip(f / "b.zip"), _write(f / "target" / "mine.txt", "mine")],
             protect=lambda ws, f: [f / "target" / "mine.txt"],
             commands=lambda ws, f: [["bundle.zoo", "extract", str(f / "b.zip"), str(f / "target")]]),
        Case(name="zoo_extract_bad_hash", what="`bundle.zoo extract` of a zip whose `model.pt` fails its sha256",
             setup=lambda ws, f: ws.zoo_zip(f / "b.zip", tamper=True),
             commands=lambda ws, f: [["bundle.zoo", "extract", str(f / "b.zip"), str(f / "target")]],
             verify=lambda ws, f, runs: "files were written" if any((f / "target").rglob("*.pt")) else None),
        Case(name="zoo_extract_not_zip", what="`bundle.zoo extract` of a file that is not a zip",
             setup=lambda ws, f: _write(f / "b.zip", "text"),
             commands=lambda ws, f: [["bundle.zoo", "extract", str(f / "b.zip"), str(f / "target")]]),
    ]


CASES: tuple[Case, ...] = (*_app_cases(), *_upete_cases(), *_data_cases(), *_training_cases(), *_zoo_cases())
"""Every bad input the check runs, in order."""
