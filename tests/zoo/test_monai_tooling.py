"""An exported bundle works with MONAI's own bundle tooling, each tool in a fresh process whose working directory is
an unrelated empty folder: verify_metadata, verify_net_in_out, ConfigWorkflow's inference properties, load,
``monai.bundle run`` with ``--meta_file`` (shipped code first, not another installed copy) and ``torch.export``."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.zoo import export_bundle
from tests.app.conftest import LEGOPET_TINY, PETDDS_TINY
from tests.upete_trained import INFER

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, legopet_files, petdds_files, upete_run):
    """One tiny export per method, with an input each: {method: (bundle root, request args)}."""
    out = tmp_path_factory.mktemp("zoo_tooling")
    legopet = export_bundle(method="legopet", output=out, checkpoint=legopet_files["checkpoint"],
                            overrides={**LEGOPET_TINY, "count_scale": 0.25}, make_zip=False)
    petdds = export_bundle(method="petdds", output=out, checkpoint=petdds_files["checkpoint"], overrides=PETDDS_TINY,
                           make_zip=False)
    upete = export_bundle(method="upete", output=out, checkpoint=upete_run["combined"], overrides=INFER,
                          make_zip=False)
    entry = json.loads((upete_run["data"] / "datalist.json").read_text(encoding="utf-8"))["test"][0]
    return {
        "legopet": (legopet, {"image": str(legopet_files["sinogram"])}),
        "petdds": (petdds, {"image": str(petdds_files["sinogram"]),
                            "normalisation": str(petdds_files["normalisation"]), "background": 0.1}),
        "upete": (upete, {"image": str(upete_run["data"] / entry["pet_low_by_dose"]["0.1"]),
                          "ct": str(upete_run["data"] / entry["ct"]), "dose": 0.1}),
    }


METHODS = ["legopet", "petdds", "upete"]


def _env(pythonpath: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def _python(script: str, *, cwd: Path, pythonpath: Path | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=_env(pythonpath),
                          capture_output=True, text=True, timeout=600)


def _elsewhere(tmp_path: Path) -> Path:
    cwd = tmp_path / "unrelated"
    cwd.mkdir()
    return cwd


@pytest.mark.parametrize("method", METHODS)
def test_verify_metadata_with_the_shipped_schema(bundles, method, tmp_path):
    root, _ = bundles[method]
    cwd = _elsewhere(tmp_path)
    schema = root / "configs/schema/meta_schema_20240725.json"
    command = [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file",
               str(root / "configs/metadata.json"), "--filepath", str(schema)]
    result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr
    broken = json.loads((root / "configs/metadata.json").read_text(encoding="utf-8"))
    del broken["network_data_format"]["inputs"]["image"]["num_channels"]  # a required field of the schema
    (cwd / "broken.json").write_text(json.dumps(broken), encoding="utf-8")
    command[command.index("--meta_file") + 1] = str(cwd / "broken.json")
    result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "num_channels" in result.stdout + result.stderr


@pytest.mark.parametrize("method", METHODS)
def test_verify_net_in_out_and_load(bundles, method, tmp_path):
    """MONAI builds network_def from the bundle's inference.json; its metadata's shapes (plus the extra forward
    inputs of bundle.zoo.forward_args) go through it; a wrong output channel count is caught; monai.bundle.load
    returns network_def with the weights of models/model.pt."""
    root, _ = bundles[method]
    script = f"""
        import torch, bundle
        from pathlib import Path
        from monai.bundle import load, verify_net_in_out
        from bundle.zoo import forward_args
        root = Path({str(root)!r})
        assert Path(bundle.__file__).resolve() == root / "bundle" / "__init__.py", bundle.__file__
        meta, config = str(root / "configs/metadata.json"), str(root / "configs/inference.json")
        extra = forward_args(meta)
        verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu",
                          extra_forward_args=extra)
        try:
            verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu",
                              extra_forward_args=extra, **{{"_meta_#network_data_format#outputs#pred#num_channels": 7}})
        except ValueError as error:
            print("REJECTED", error)
        network = load(root.name, bundle_dir=str(root.parent), workflow_type="inference", key_in_ckpt="network",
                       device="cpu")
        state = torch.load(root / "models/model.pt", weights_only=True)["network"]
        loaded = network.state_dict()
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k].cpu(), state[k]) for k in state)
        print("LOADED", type(network).__name__)
    """
    result = _python(script, cwd=_elsewhere(tmp_path), pythonpath=root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REJECTED output channel number" in result.stdout
    assert "LOADED" in result.stdout


@pytest.mark.parametrize("method", METHODS)
def test_config_workflow_infer_properties_and_run(bundles, method, tmp_path):
    root, request = bundles[method]
    out = tmp_path / "out"
    script = f"""
        import json, torch
        from pathlib import Path
        from monai.bundle import ConfigWorkflow
        from monai.engines import Workflow
        from monai.inferers import Inferer
        root = Path({str(root)!r})
        workflow = ConfigWorkflow(config_file=str(root / "configs/inference.json"),
                                  meta_file=str(root / "configs/metadata.json"), workflow_type="infer",
                                  output={str(out)!r}, **json.loads({json.dumps(json.dumps(request))}))
        workflow.initialize()
        assert workflow.check_properties() == [], workflow.check_properties()
        assert Path(workflow.bundle_root).resolve() == root
        assert isinstance(workflow.network_def, torch.nn.Module)
        assert isinstance(workflow.inferer, Inferer), type(workflow.inferer)
        assert len(workflow.dataset) == 1 and workflow.dataset_dir == ""
        assert isinstance(workflow.evaluator, Workflow)
        assert workflow.version and workflow.monai_version
        workflow.run()
    """
    result = _python(script, cwd=_elsewhere(tmp_path), pythonpath=root)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads(result.stdout.strip().splitlines()[-1])["file"]
    assert Path(written).parent == out and Path(written).is_file()
    assert written.endswith(f"_{method}.nii.gz")


def _run_command(root: Path, request: dict, output: Path) -> list[str]:
    args = [arg for key, value in request.items() for arg in (f"--{key}", str(value))]
    return [sys.executable, "-m", "monai.bundle", "run", "run", "--config_file", str(root / "configs/inference.json"),
            "--meta_file", str(root / "configs/metadata.json"), "--bundle_root", str(root), *args,
            "--output", str(output), "--device", "cpu"]


@pytest.mark.parametrize("method", METHODS)
def test_monai_bundle_run_uses_the_shipped_code_not_an_installed_copy(bundles, method, tmp_path):
    """From an unrelated folder, with another copy of the package first on PYTHONPATH (as an installed one would
    be), ``monai.bundle run`` executes the bundle's own hash-verified bundle/ (and logs no metadata error)."""
    root, request = bundles[method]
    installed = tmp_path / "site"
    shutil.copytree(REPO / "bundle", installed / "bundle", ignore=shutil.ignore_patterns("__pycache__"))
    output = tmp_path / "pred.nii.gz"
    result = subprocess.run(_run_command(root, request, output), cwd=_elsewhere(tmp_path), env=_env(installed),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"bundle package: {root.resolve() / 'bundle' / '__init__.py'}" in result.stdout
    assert "Cannot find the metadata config file" not in result.stdout + result.stderr
    assert np.isfinite(np.asarray(nib.load(output).dataobj)).all()


def test_run_refuses_a_shadowing_bundle_folder_in_the_working_directory(bundles, tmp_path):
    """A bundle/ folder in the working directory comes before the bundle root on sys.path: run names both."""
    root, request = bundles["legopet"]
    cwd = _elsewhere(tmp_path)
    shutil.copytree(REPO / "bundle", cwd / "bundle", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(_run_command(root, request, tmp_path / "pred.nii.gz"), cwd=cwd, env=_env(),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert f"not this bundle's own {root.resolve() / 'bundle' / '__init__.py'}" in result.stderr
    assert not (tmp_path / "pred.nii.gz").exists()


def test_run_over_a_dataset_folder(bundles, legopet_files, tmp_path):
    root, _ = bundles["legopet"]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a.npy", "b.npy"):
        shutil.copyfile(legopet_files["sinogram"], inputs / name)
    (inputs / "notes.txt").write_text("not an input", encoding="utf-8")
    command = _run_command(root, {"dataset_dir": inputs}, tmp_path / "preds")
    result = subprocess.run(command, cwd=_elsewhere(tmp_path), env=_env(), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = sorted(p.name for p in (tmp_path / "preds").glob("*_legopet.nii.gz"))
    assert written == ["inputs_a_legopet.nii.gz", "inputs_b_legopet.nii.gz"]  # one per .npy input: <folder>_<stem>


@pytest.mark.parametrize("method", METHODS)
def test_torch_export_of_network_def(bundles, method, tmp_path):
    """``python -m bundle.zoo program`` (the shipped code, from elsewhere) writes an ExportedProgram equal to the
    trained network on inputs other than the ones it was exported and checked with."""
    from bundle.app import build_task
    from bundle.zoo import forward_args

    root, _ = bundles[method]
    output = tmp_path / "network.pt2"
    command = [sys.executable, "-m", "bundle.zoo", "program", str(root), "--output", str(output)]
    result = subprocess.run(command, cwd=_elsewhere(tmp_path), env=_env(root), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    extra = {"metadata.json": ""}
    program = torch.export.load(str(output), extra_files=extra)
    metadata = json.loads(extra["metadata.json"])
    spec = metadata["network_data_format"]["inputs"]["image"]
    image = torch.randn(1, spec["num_channels"], *spec["spatial_shape"], generator=torch.Generator().manual_seed(7))
    kwargs = forward_args(metadata, seed=7)
    task = build_task(method, checkpoint=root / "models/model.pt",
                      config_files=[str(root / "configs" / f) for f in _config_files(method)], device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(program.module()(image, **kwargs), task.network(image, **kwargs),
                                   rtol=1e-4, atol=1e-5)


def test_ckpt_export_cannot_script_the_network(bundles, tmp_path):
    """Why the export offers torch.export: MONAI's ckpt_export (TorchScript scripting) fails on the score network,
    which has no attention levels but a self-attention block in its middle block."""
    root, _ = bundles["petdds"]
    command = [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath",
               str(tmp_path / "model.ts"), "--meta_file", str(root / "configs/metadata.json"), "--config_file",
               str(root / "configs/inference.json"), "--ckpt_file", str(root / "models/model.pt"),
               "--key_in_ckpt", "network", "--bundle_root", str(root)]
    result = subprocess.run(command, cwd=_elsewhere(tmp_path), env=_env(root), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0 and "cannot statically infer the expected size of a list" in result.stderr
    assert not (tmp_path / "model.ts").exists()


def _config_files(method: str) -> list[str]:
    """The layered configs of an exported bundle (the export's recipe + its zoo.json)."""
    from bundle.app.config import INFERENCE_RECIPES
    from bundle.recipes import recipe

    return [*recipe(INFERENCE_RECIPES[method]).files, f"{method}/zoo.json"]


@pytest.mark.parametrize("method", METHODS)
def test_files_are_0644_and_the_card_describes_the_exported_network(bundles, method):
    root, _ = bundles[method]
    for path in root.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    card = (root / "docs/README.md").read_text(encoding="utf-8")
    assert str(root.parent) not in card and "/tmp" not in card and "/work" not in card  # no local paths
    count = sum(p.numel() for p in torch.load(root / "models/model.pt", weights_only=True)["network"].values())
    if method == "petdds":  # the tiny network: 2 levels of 8 channels, no attention
        assert '`channels`: `[8, 8]`' in card and '`attention_levels`: `[false, false]`' in card
    if method == "upete":
        assert '"channels": [8, 16]' in card
    buffers = 1 if method == "upete" else 0  # UPETe's latent_scale buffer is in the state dict, not a parameter
    stated = int(card.split(" parameters (as exported)")[0].rsplit(", ", 1)[1].replace(",", ""))
    assert stated == count - buffers
