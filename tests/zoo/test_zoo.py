"""Model-zoo export: layout, hashes, safe unzip, and inference of the unpacked bundle in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import jsonschema
import nibabel as nib
import numpy as np
import pytest

from bundle.zoo import export_bundle, safe_extract, verify_bundle
from bundle.zoo.archive import BundleIntegrityError
from bundle.zoo.cli import main
from tests.app.conftest import LEGOPET_TINY, save_random_checkpoint

from ..configs.test_metadata import SCHEMA_FILE


@pytest.fixture(scope="module")
def exported(tmp_path_factory, legopet_files):
    out = tmp_path_factory.mktemp("zoo")
    root = export_bundle(method="legopet", output=out, checkpoint=legopet_files["checkpoint"],
                         overrides={**LEGOPET_TINY, "count_scale": 0.25})
    return root


def test_layout_and_metadata(exported):
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md",
                "docs/data_license.txt", "LICENSE", "large_files.yml", "bundle/app/task.py", "checksums.sha256",
                "configs/legopet/zoo.json", "configs/schema/meta_schema_20240725.json"):
        assert (exported / rel).is_file(), rel
    metadata = json.loads((exported / "configs/metadata.json").read_text(encoding="utf-8"))
    jsonschema.validate(metadata, json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    assert "large_files: []" in (exported / "large_files.yml").read_text(encoding="utf-8")  # tiny weights
    assert "sha256" in (exported / "docs/README.md").read_text(encoding="utf-8")
    assert (exported.parent / "legopet_bundle.zip").is_file()
    assert "models/model.pt" in verify_bundle(exported)


def test_unzipped_bundle_runs_with_monai_bundle_in_a_fresh_process(exported, legopet_files, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    safe_extract(exported.parent / "legopet_bundle.zip", target)
    root = target / "legopet_bundle"
    output = tmp_path / "pred.nii.gz"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", "configs/inference.json",
               "--meta_file", "configs/metadata.json", "--image", str(legopet_files["sinogram"]),
               "--output", str(output), "--device", "cpu"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"bundle package: {root.resolve() / 'bundle' / '__init__.py'}" in result.stdout  # the bundled code
    assert np.asarray(nib.load(output).dataobj).shape == (64, 64, 1)
    (root / "models" / "model.pt").write_bytes(b"tampered")
    result = subprocess.run([*command[:-4], "--output", str(tmp_path / "again.nii.gz"), "--device", "cpu"], cwd=root,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "models/model.pt: sha256" in result.stderr  # run verifies before loading
    assert not (tmp_path / "again.nii.gz").exists()


def test_verify_names_modified_and_missing_files(exported, tmp_path):
    copy = tmp_path / "copy"
    safe_extract(exported.parent / "legopet_bundle.zip", copy)
    root = copy / "legopet_bundle"
    (root / "docs" / "README.md").write_text("changed", encoding="utf-8")
    (root / "LICENSE").unlink()
    with pytest.raises(BundleIntegrityError, match=r"LICENSE: missing.*|docs/README\.md: sha256"):
        verify_bundle(root)
    assert verify_bundle(root, only="models/")  # the weights alone are intact


def test_verify_flags_added_files_and_extract_refuses_tampered_zips_and_used_folders(exported, tmp_path):
    """An unrecorded file fails verification (outputs/ may hold results); a zip whose model.pt differs from its
    checksums is refused before anything is written; a non-empty target is refused."""
    archive = exported.parent / "legopet_bundle.zip"
    root = tmp_path / "copy"
    safe_extract(archive, root)
    bundle_root = root / "legopet_bundle"
    (bundle_root / "outputs").mkdir(exist_ok=True)
    (bundle_root / "outputs" / "prediction.nii.gz").write_bytes(b"result")
    assert verify_bundle(bundle_root)  # outputs/ is where the bundle writes
    (bundle_root / "configs" / "extra.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BundleIntegrityError, match=r"configs/extra\.json: not recorded"):
        verify_bundle(bundle_root)
    with pytest.raises(ValueError, match="must be a new or empty folder"):
        safe_extract(archive, root)
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(tampered, "w") as sink:
        for info in source.infolist():
            data = source.read(info)
            sink.writestr(info, b"not the weights" if info.filename.endswith("models/model.pt") else data)
    target = tmp_path / "never"
    with pytest.raises(BundleIntegrityError, match=r"nothing was extracted: .*models/model\.pt: sha256"):
        safe_extract(tampered, target)
    assert not target.exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_safe_extract_rejects_zip_slip(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr(member, "escape")
    target = tmp_path / "target"
    with pytest.raises(ValueError, match="zip member"):
        safe_extract(archive, target)
    assert not any(target.iterdir())  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_rejects_symlinks(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        safe_extract(archive, tmp_path / "t")


@pytest.mark.parametrize("content", [b"text, not a zip", b"PK\x03\x04truncated"])
def test_safe_extract_names_a_file_that_is_not_a_zip(tmp_path, content):
    archive = tmp_path / "b.zip"
    archive.write_bytes(content)
    with pytest.raises(ValueError, match=r"b\.zip must be a zip file written by python -m bundle\.zoo export; it is "
                                         r"not a zip archive"):
        safe_extract(archive, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_export_argument_checks(exported, legopet_files, tmp_path, capsys):
    with pytest.raises(ValueError, match="already exists and is not empty"):
        export_bundle(method="legopet", output=exported.parent, checkpoint=legopet_files["checkpoint"],
                      overrides=LEGOPET_TINY)
    with pytest.raises(ValueError, match="method must be one of"):
        export_bundle(method="x", output=tmp_path)
    with pytest.raises(ValueError, match="name must be a plain folder name"):
        export_bundle(method="legopet", output=tmp_path, name="../up")
    assert main(["verify", str(exported)]) == 0
    assert main(["verify", str(tmp_path)]) == 2 and "checksums.sha256 does not exist" in capsys.readouterr().err


def test_cli_export_petdds_without_zip(tmp_path):
    from tests.app.conftest import PETDDS_TINY

    checkpoint = tmp_path / "w.pt"
    save_random_checkpoint("petdds", PETDDS_TINY, checkpoint)
    args = ["export", "--method", "petdds", "--output", str(tmp_path / "out"), "--checkpoint", str(checkpoint),
            "--no-zip", *[f"--override={k}={json.dumps(v)}" for k, v in PETDDS_TINY.items()]]
    assert main(args) == 0
    zoo = json.loads((tmp_path / "out/petdds_bundle/configs/petdds/zoo.json").read_text(encoding="utf-8"))
    assert zoo["scanner_preset"] == "tiny_3d" and "device" not in zoo
    assert not (tmp_path / "out" / "petdds_bundle.zip").exists()


def test_export_petdds_defaults_to_the_shipped_weights(tmp_path):
    """No --checkpoint: the bundle's models/model.pt holds the shipped score model, and inside the bundle (which has
    no models/manifest.json) the layered configs' checkpoint is that file, not shipped_weights()."""
    import torch

    from bundle.checkpoint import shipped_weights

    root = export_bundle(method="petdds", output=tmp_path, make_zip=False)
    shipped = torch.load(shipped_weights("petdds_score"), weights_only=True)["network"]
    exported = torch.load(root / "models" / "model.pt", weights_only=True)["network"]
    assert exported.keys() == shipped.keys() and all(torch.equal(exported[k], shipped[k]) for k in shipped)
    zoo = json.loads((root / "configs/petdds/zoo.json").read_text(encoding="utf-8"))
    assert zoo["checkpoint"] == "$@bundle_root + '/models/model.pt'"
    assert not (root / "models" / "manifest.json").exists()
    card = (root / "docs/README.md").read_text(encoding="utf-8")
    assert "`petdds_score.pt`" in card and str(shipped_weights("petdds_score").parent) not in card  # no local path
    assert "`channels`: `[16, 32, 64]`" in card and "`attention_levels`: `[false, false, false]`" in card
