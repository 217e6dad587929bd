"""PET-DDS-δ score-model training through `python -m monai.bundle run` on a tiny petdds dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data.build import build_dataset
from bundle.data.slices import LoadVolumeSliced, slice_datalist
from bundle.recipes import recipe
from bundle.transforms.scaling import ToNetworkUnitsd

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = "[" + ",".join(f"'{p}'" for p in recipe("petdds/train").paths()) + "]"
TINY_NET = ["--network_def#channels", "[8,16,16]", "--network_def#num_head_channels", "8",
            "--network_def#norm_num_groups", "8"]


def _dataset(tmp_path: Path) -> Path:
    out = tmp_path / "petdds"
    build_dataset("petdds", output=out, seed=0, progress=False, subjects=1, split=(1, 0, 0), realisations=1,
                  osem_subsets=8, osem_iterations=1)
    return out


def test_slice_datalist_and_normalisation(tmp_path):
    dataset = _dataset(tmp_path)
    entries = slice_datalist(dataset, "training")
    assert entries and all(Path(e["image"]).is_file() for e in entries)
    normalise = ToNetworkUnitsd(keys="image", statistic="positive_mean", arithmetic="input")
    item = normalise(LoadVolumeSliced(keys="image")(entries[0]))
    image = item["image"]
    assert image.shape == (1, 64, 64)
    assert abs(float(image[image > 0].mean()) - 1.0) < 1e-5  # divided by its mean over positive voxels
    assert item["image_scale"] > 0


def test_training_workflow_runs_and_writes_loadable_checkpoints(tmp_path):
    dataset = _dataset(tmp_path)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", CONFIGS,
               "--dataset_dir", str(dataset), "--bundle_root", str(run), "--max_epochs", "1", "--batch_size", "4",
               "--log_interval", "1", *TINY_NET]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_loss" in result.stdout + result.stderr
    final = run / "results" / "petdds" / "checkpoints" / "network_final.pt"  # the name inference.json expects
    assert final.is_file()
    state = torch.load(final, weights_only=True)
    parser = ConfigParser()
    parser.read_config([str(p) for p in recipe("petdds/train").paths()])
    parser["network_def"]["channels"] = [8, 16, 16]
    parser["network_def"]["num_head_channels"] = 8
    parser["network_def"]["norm_num_groups"] = 8
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(state["network"])  # the checkpoint fits the configured architecture
    assert list((run / "results" / "petdds" / "logs").glob("events.out.tfevents.*"))  # TensorBoard log


# ---------------------------------------------------------------------------------------------- resume from checkpoint

RESUME_CONFIGS = recipe("petdds/train").paths()


def _fabricated_dataset(root: Path) -> Path:
    """A minimal petdds-shaped dataset (datalist + one 16 × 16 × 4 reference volume, 4 training slices): no build."""
    from bundle.data.io import save_image
    from bundle.physics import ImageGeometry

    geometry = ImageGeometry(shape=(4, 16, 16), voxel_size_mm=(4.0, 4.0, 4.0), origin_mm=(0.0, 0.0, 0.0))
    volume = torch.rand((4, 16, 16), generator=torch.Generator().manual_seed(0)) + 0.1
    save_image(root / "s00_reference.nii.gz", volume, geometry)
    entry = {"id": "s00", "subject": "s00", "reference": "s00_reference.nii.gz", "training_slices": [0, 1, 2, 3]}
    datalist = {"training": [entry]}
    (root / "datalist.json").write_text(json.dumps(datalist), encoding="utf-8")
    return root


def _parser(dataset: Path, bundle_root: Path, max_epochs: int, *, resume: bool) -> ConfigParser:
    parser = ConfigParser()
    files = RESUME_CONFIGS + ([ROOT / "configs/petdds/resume.json"] if resume else [])
    parser.read_config([str(f) for f in files])
    overrides = {"dataset_dir": str(dataset), "bundle_root": str(bundle_root), "max_epochs": max_epochs,
                 "batch_size": 2, "checkpoint_interval": 1, "device": "$torch.device('cpu')",
                 "network_def#channels": [8, 16, 16], "network_def#num_head_channels": 8,
                 "network_def#norm_num_groups": 8}
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_resume_overlay_continues_iterations_weights_and_optimizer(tmp_path):
    from ignite.engine import Events

    from bundle.checkpoint import latest_checkpoint

    dataset = _fabricated_dataset(tmp_path)
    run = tmp_path / "run"
    first = _parser(dataset, run, 2, resume=False)
    first.get_parsed_content("training")  # 4 slices / batch 2 = 2 iterations per epoch -> 4 iterations
    ckpt_dir = run / "results" / "petdds" / "checkpoints"
    saved = torch.load(ckpt_dir / "checkpoint_epoch=2.pt", weights_only=True)
    assert (saved["trainer"]["epoch_length"], saved["trainer"]["iteration"]) == (2, 4)  # epoch 2 = iteration 4
    latest = latest_checkpoint(ckpt_dir)
    assert torch.load(latest, weights_only=True)["trainer"]["iteration"] == 4  # not checkpoint_epoch=1.pt (2)

    second = _parser(dataset, run, 3, resume=True)
    trainer = second.get_parsed_content("trainer")
    network = second.get_parsed_content("network")
    fresh = {k: v.clone() for k, v in network.state_dict().items()}
    seen: dict = {}

    @trainer.on(Events.EPOCH_STARTED)
    def _record(engine):  # first epoch of the resumed run, after ResumeTraining (Events.STARTED)
        if "epoch" not in seen:
            seen["epoch"], seen["iteration"] = engine.state.epoch, engine.state.iteration
            seen["weights"] = {k: v.clone() for k, v in network.state_dict().items()}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _first_iteration(engine):
        seen.setdefault("first_iteration", engine.state.iteration)

    second.get_parsed_content("training")
    assert seen["epoch"] == 3 and seen["iteration"] == 4  # continues after epoch 2 / iteration 4
    assert seen["first_iteration"] == 5
    assert (trainer.state.epoch, trainer.state.iteration) == (3, 6)
    for name, value in saved["network"].items():
        torch.testing.assert_close(seen["weights"][name], value, rtol=0, atol=0)  # exactly the saved weights
    assert any(not torch.equal(fresh[k], saved["network"][k]) for k in fresh)  # ... which a fresh init is not
    optimizer = second.get_parsed_content("optimizer")
    steps = {int(state["step"]) for state in optimizer.state_dict()["state"].values()}
    assert steps == {6}  # Adam's step count continued from the checkpoint's 4
    final = torch.load(ckpt_dir / "network_final.pt", weights_only=True)
    assert final["trainer"]["iteration"] == 6


def test_resume_from_an_epoch_end_is_bit_exact(tmp_path):
    """3 epochs in one run and 2 epochs + a resumed third (after the global RNG moved on, as in a new process) give
    identical weights: the checkpoint holds the RNG states that shuffling, noise, timesteps and augmentation draw."""
    dataset = _fabricated_dataset(tmp_path)
    torch.manual_seed(0)
    uninterrupted = _parser(dataset, tmp_path / "a", 3, resume=False)
    uninterrupted.get_parsed_content("training")
    expected = uninterrupted.get_parsed_content("network").state_dict()

    torch.manual_seed(0)
    _parser(dataset, tmp_path / "b", 2, resume=False).get_parsed_content("training")
    torch.manual_seed(12345)  # a killed run's process is gone: nothing of its RNG survives outside the checkpoint
    resumed = _parser(dataset, tmp_path / "b", 3, resume=True)
    resumed.get_parsed_content("training")
    got = resumed.get_parsed_content("network").state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=f"{name} differs after resume")


KILL_AT = 5  # mid epoch 3 (2 iterations per epoch): the newest checkpoint is checkpoint_epoch=2.pt (iteration 4)


def _cli(dataset: Path, bundle_root: Path, files: list) -> list[str]:
    overrides = ["--dataset_dir", str(dataset), "--bundle_root", str(bundle_root), "--max_epochs", "3",
                 "--batch_size", "2", "--checkpoint_interval", "1", "--device", "$torch.device('cpu')", *TINY_NET]
    return [sys.executable, "-m", "monai.bundle", "run", "training",
            "--config_file", "[" + ",".join(f"'{f}'" for f in files) + "]", *overrides]


def test_kill_9_and_resume_is_bit_exact_and_logs_its_start_and_progress(tmp_path):
    """A real ``monai.bundle run training`` killed with SIGKILL mid-epoch 3, resumed (resume.json) from its
    end-of-epoch-2 checkpoint in a new process, ends with the weights and Adam state of an uninterrupted run
    (torch.equal): shuffle order, noise, timesteps and augmentations continue from the stored RNG states."""
    import os
    import signal

    dataset = _fabricated_dataset(tmp_path / "data")
    kill = tmp_path / "kill.json"
    kill.write_text(json.dumps({
        "kill_imports": ["$import os", "$import signal", "$import ignite"],
        "training": ["$@checkpoint_saver.attach(@trainer)",
                     f"$@trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once={KILL_AT}), "
                     "lambda engine: os.kill(os.getpid(), signal.SIGKILL))", "$@trainer.run()"],
    }), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "BUNDLE_PROGRESS": "off"}
    files = [str(f) for f in RESUME_CONFIGS]
    killed = subprocess.run(_cli(dataset, tmp_path / "killed", [*files, str(kill)]), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt_dir = tmp_path / "killed" / "results" / "petdds" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    start = torch.load(ckpt_dir / "checkpoint_epoch=2.pt", weights_only=True)
    resumed = subprocess.run(_cli(dataset, tmp_path / "killed", [*files, str(ROOT / "configs/petdds/resume.json")]),
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert (f"resuming from {ckpt_dir / 'checkpoint_epoch=2.pt'} (run {start['run_id']['run_id']}) at iteration 4, "
            "epoch 2") in log
    assert "epoch [" not in log  # BUNDLE_PROGRESS=off: no bar
    reference = subprocess.run(_cli(dataset, tmp_path / "reference", files), cwd=ROOT,
                               env={**env, "BUNDLE_PROGRESS": "on"}, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "PET-DDS epoch [3/3]: [2/2]" in reference.stderr  # the training's progress bar, forced on

    got = torch.load(ckpt_dir / "network_final.pt", weights_only=True)
    expected = torch.load(tmp_path / "reference" / "results" / "petdds" / "checkpoints" / "network_final.pt",
                          weights_only=True)
    assert got["trainer"]["iteration"] == expected["trainer"]["iteration"] == 6
    assert got["run_id"] == start["run_id"] != expected["run_id"]  # the resumed run kept the killed run's id
    for name, value in expected["network"].items():
        assert torch.equal(got["network"][name], value), f"{name} differs after kill -9 and resume"
    for index, state in expected["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(got["optimizer"]["state"][index][key], value), f"Adam {key} of {index} differs"
    assert any(not torch.equal(start["network"][k], v) for k, v in expected["network"].items())  # epoch 3 trained


def _resume_error(parser: ConfigParser) -> FileNotFoundError:
    with pytest.raises(RuntimeError) as caught:  # MONAI wraps expression errors; the cause is ours
        parser.get_parsed_content("resume_checkpoint")
    cause = caught.value
    while cause.__cause__ is not None and not isinstance(cause, FileNotFoundError):
        cause = cause.__cause__
    assert isinstance(cause, FileNotFoundError)
    return cause


def test_resume_overlay_names_a_missing_or_empty_checkpoint_folder(tmp_path):
    ckpt_dir = tmp_path / "run" / "results" / "petdds" / "checkpoints"
    error = str(_resume_error(_parser(tmp_path / "data", tmp_path / "run", 1, resume=True)))
    assert f"{ckpt_dir} does not exist; run training with configs/petdds/train.json first" in error
    ckpt_dir.mkdir(parents=True)
    torch.save({"network": {}}, ckpt_dir / "weights_only.pt")
    error = str(_resume_error(_parser(tmp_path / "data", tmp_path / "run", 1, resume=True)))
    assert f"in {ckpt_dir}: no checkpoint with 'trainer' state" in error


def test_paper_preset_layers_over_training_and_evaluation():
    """configs/petdds/paper.json: the published sampling sizes (N = 100, p = 5) and a GPU-scale U-Net that builds."""
    from bundle.physics import preset

    parser = ConfigParser()
    parser.read_config([str(p) for p in recipe("petdds/evaluate").paths("petdds/paper.json")])
    assert parser.get_parsed_content("num_inference_steps") == 100
    assert parser.get_parsed_content("steps_per_diffusion_step") == 5
    network = parser.get_parsed_content("network_def")
    assert sum(p.numel() for p in network.parameters()) > 10_000_000
    assert preset("mmr_brain").image.shape == (120, 128, 128)  # the paper's 128 x 128 x 120 at 2 mm
