"""Checkpoint reliability: atomic writes, clear errors for corrupt / foreign files, kill-and-resume, NaN stop, the
random states of an exact resume (MONAI transforms' NumPy states), DDP-wrapped loading."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from bundle.handlers.checkpoint_saver import AtomicCheckpointSaver
from bundle.engines.checkpoints import (
    AtomicDiskSaver,
    CheckpointError,
    NonFiniteLossError,
    RandomStates,
    ResumeFromLatest,
    ResumeTraining,
    StopOnNonFiniteLoss,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    load_state_dicts,
    numpy_random_states,
    resumable_checkpoint,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "engines" / "_resume_worker.py"


def _state() -> dict:
    torch.manual_seed(0)
    return {"network": torch.nn.Linear(3, 2).state_dict(), "trainer": {"iteration": 7, "epoch_length": 4}}


def test_save_checkpoint_roundtrip_leaves_no_temporary_files(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "sub" / "ckpt.pt")
    loaded = load_checkpoint(path, expected_keys=["network", "trainer"])
    torch.testing.assert_close(loaded["network"]["weight"], _state()["network"]["weight"])
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]


def test_failed_save_keeps_the_old_file(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "ckpt.pt")
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({"network": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize("bad", [{"state": 1}, "ckpt.pt", ""])
def test_save_checkpoint_rejects_bad_arguments(tmp_path, bad):
    if isinstance(bad, dict):
        with pytest.raises(ValueError, match="path must be a non-empty file path"):
            save_checkpoint(bad, "")
    else:
        with pytest.raises(TypeError, match="state must be a mapping"):
            save_checkpoint(bad, tmp_path / "x.pt")  # type: ignore[arg-type]


def test_truncated_checkpoint_names_file_and_expected_keys(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "ckpt.pt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"ckpt\.pt cannot be read.*truncated.*\['network', 'trainer'\]"):
        load_checkpoint(path, expected_keys=["network", "trainer"])


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"notes\.pt cannot be read"):
        load_checkpoint(path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"network": torch.nn.Linear(2, 2)}, path)  # a whole module, not a state dict
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)


def test_missing_keys_are_listed(tmp_path):
    path = save_checkpoint({"model": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"lacks the entries \['network'\].*found keys \['model'\]"):
        load_checkpoint(path, expected_keys=["network"])


def test_non_mapping_and_missing_file(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(2), path)
    with pytest.raises(CheckpointError, match="holds a Tensor, expected a mapping"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=r"missing\.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_architecture_names_the_entry(tmp_path):
    path = save_checkpoint({"network": torch.nn.Linear(3, 2).state_dict()}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"entry 'network' does not fit the configured Linear"):
        load_state_dicts({"network": torch.nn.Linear(4, 2)}, path)
    with pytest.raises(TypeError, match="load_state_dict"):
        load_state_dicts({"network": object()}, path)


def test_latest_checkpoint_picks_the_largest_iteration(tmp_path):
    for it in (10, 30, 20):
        save_checkpoint({"trainer": {"iteration": it}}, tmp_path / f"ckpt_{it}.pt")
    (tmp_path / "broken.pt").write_bytes(b"\x00")
    assert latest_checkpoint(tmp_path).name == "ckpt_30.pt"
    assert latest_checkpoint(tmp_path / "nothing") is None


def test_resume_requires_the_trainer_entry(tmp_path):
    with pytest.raises(ValueError, match="must be a mapping that includes the trainer under 'trainer'"):
        ResumeFromLatest(checkpoint_dir=tmp_path, load_dict={"network": torch.nn.Linear(1, 1)})


def test_atomic_saver_writes_through_fsyncing_saver(tmp_path):
    network = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"network": network}, save_final=True,
                                  save_interval=1)
    assert isinstance(saver._interval_checkpoint.save_handler, AtomicDiskSaver)
    assert isinstance(saver._final_checkpoint.save_handler, AtomicDiskSaver)


def test_atomic_saver_keeps_the_final_file_name(tmp_path):
    """MONAI's ``final_filename`` (what inference configs load) survives the switch to the atomic saver."""
    from ignite.engine import Engine

    network = torch.nn.Linear(2, 1)
    engine = Engine(lambda engine, batch: 0.0)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"network": network}, save_final=True,
                          final_filename="network_final.pt").attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["network_final.pt"]
    state = torch.load(tmp_path / "network_final.pt", weights_only=True)  # one object: ignite stores it unnested
    torch.testing.assert_close(state["weight"], network.weight.detach())


def _worker(checkpoints: Path, out: Path, sleep: float) -> list[str]:
    return [sys.executable, str(WORKER), str(checkpoints), str(out), "--sleep", str(sleep)]


def test_kill_mid_epoch_and_resume_continues_iterations_and_weights(tmp_path):
    checkpoints, first, second = tmp_path / "ckpt", tmp_path / "run1", tmp_path / "run2"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(_worker(checkpoints, first, 0.1), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while latest_checkpoint(checkpoints) is None:
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint written within 60 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (first / "final.pt").exists()  # killed before the end
    path = latest_checkpoint(checkpoints)
    saved = load_checkpoint(path, expected_keys=["network", "optimizer", "trainer"])
    iteration = saved["trainer"]["iteration"]
    assert 0 < iteration < 36 and iteration % 12 != 0  # mid-epoch (12 iterations per epoch, 3 epochs)

    result = subprocess.run(_worker(checkpoints, second, 0.0), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    start = load_checkpoint(second / "start.pt")
    assert start["iteration"] == iteration  # the iteration count continues ...
    assert int((second / "first_iteration.txt").read_text(encoding="utf-8")) == iteration + 1
    for name, value in saved["network"].items():  # ... from the checkpointed weights
        torch.testing.assert_close(start["network"][name], value, rtol=0, atol=0)
    final = load_checkpoint(second / "final.pt")
    assert final["iteration"] == 36 and final["epoch"] == 3
    assert not torch.equal(final["network"]["weight"], saved["network"]["weight"])  # and training went on


def _nan_trainer(raise_error: bool) -> tuple[SupervisedTrainer, StopOnNonFiniteLoss]:
    calls = {"n": 0}

    def loss(pred, label):
        calls["n"] += 1
        value = torch.nn.functional.mse_loss(pred, label)
        return value * float("nan") if calls["n"] == 3 else value

    data = [{"image": torch.ones(1, 2), "label": torch.ones(1, 1)}] * 5
    network = torch.nn.Linear(2, 1)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=data, network=network,
                                optimizer=torch.optim.SGD(network.parameters(), lr=0.1), loss_function=loss)
    handler = StopOnNonFiniteLoss(raise_error=raise_error)
    handler.attach(trainer)
    return trainer, handler


def test_nan_loss_raises_naming_the_iteration(caplog):
    trainer, _ = _nan_trainer(raise_error=True)
    with caplog.at_level(logging.ERROR, logger="bundle.engines.checkpoints"):
        with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at iteration 3 \(epoch 1\)"):
            trainer.run()
    assert "iteration 3" in caplog.text
    assert trainer.state.iteration == 3


def test_nan_loss_can_terminate_instead(caplog):
    trainer, _ = _nan_trainer(raise_error=False)
    with caplog.at_level(logging.ERROR, logger="bundle.engines.checkpoints"):
        trainer.run()
    assert trainer.state.iteration == 3 and "training stopped" in caplog.text


def test_stop_on_non_finite_loss_argument_checks():
    with pytest.raises(TypeError, match="output_transform must be callable"):
        StopOnNonFiniteLoss(output_transform=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="raise_error must be a bool"):
        StopOnNonFiniteLoss(raise_error=1)  # type: ignore[arg-type]


def _monai_trainer(max_epochs: int) -> tuple[SupervisedTrainer, dict]:
    torch.manual_seed(0)
    data = [{"image": torch.randn(2, 3), "label": torch.randn(2, 1)} for _ in range(4)]
    network = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=data,
                                network=network, optimizer=optimizer, loss_function=torch.nn.MSELoss())
    return trainer, {"network": network, "optimizer": optimizer, "trainer": trainer}


def test_monai_trainer_resumes_from_atomic_saver_files(tmp_path):
    first, objects = _monai_trainer(max_epochs=1)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict=objects, save_interval=3, epoch_level=False,
                          n_saved=1).attach(first)
    first.run()
    saved = load_checkpoint(latest_checkpoint(tmp_path), expected_keys=["network", "optimizer", "trainer"])
    assert saved["trainer"]["iteration"] == 3
    second, objects = _monai_trainer(max_epochs=2)
    resume = ResumeFromLatest(checkpoint_dir=tmp_path, load_dict=objects)
    resume.attach(second)
    seen = []
    second.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(e.state.iteration))
    second.run()
    assert resume.resumed_from is not None and seen[0] == 4 and second.state.iteration == 8


# ---------------------------------------------------------------------------------------------------- exact resume
def test_load_state_dicts_unwraps_data_parallel_modules(tmp_path):
    """ignite / MONAI savers store DDP / DataParallel networks unwrapped; loading goes into ``module``."""
    source = torch.nn.Linear(3, 2)
    path = save_checkpoint({"network": source.state_dict()}, tmp_path / "ckpt.pt")
    target = torch.nn.DataParallel(torch.nn.Linear(3, 2))
    load_state_dicts({"network": target}, path)
    torch.testing.assert_close(target.module.weight, source.weight, rtol=0, atol=0)


def _pipeline(*, extra_flip: bool = False):
    from monai.transforms import Compose, RandFlipd, RandSpatialCropSamplesd

    flips = [RandFlipd(keys="x", prob=0.5, spatial_axis=0) for _ in range(2 if extra_flip else 1)]
    return Compose([*flips, RandSpatialCropSamplesd(keys="x", roi_size=[2, 2], num_samples=3, random_size=False)])


def _crops(pipeline) -> torch.Tensor:
    x = torch.arange(36.0).reshape(1, 6, 6)
    return torch.stack([torch.stack([torch.as_tensor(s["x"]) for s in pipeline({"x": x})]) for _ in range(4)])


def test_random_states_restore_monai_transform_states():
    """The NumPy states of MONAI random transforms, nested ones included: a fresh pipeline seeded differently (as a
    resumed run's DataLoader seeds it) draws the same flips and crops as the original after loading."""
    original = _pipeline()
    original.set_random_state(seed=3)
    _crops(original)  # move on; the cropper gets its own state at its first call
    states = RandomStates(randomizables={"train_dataset": original}, include_global=False)
    saved = states.state_dict()
    assert set(saved) == {"generators", "numpy"}
    paths = [s["path"] for s in saved["numpy"]["train_dataset"]]
    assert {"Compose.R", "Compose.transforms[0].R", "Compose.transforms[1].cropper.cropper.R"} <= set(paths)
    expected = _crops(original)
    fresh = _pipeline()
    fresh.set_random_state(seed=99)  # its croppers still use MONAI's class-level default state
    assert len(numpy_random_states(fresh)) < len(paths)
    RandomStates(randomizables={"train_dataset": fresh}, include_global=False).load_state_dict(saved)
    assert torch.equal(_crops(fresh), expected)


def test_random_states_name_a_changed_pipeline_or_missing_numpy_states():
    original = _pipeline()
    original.set_random_state(seed=3)
    saved = RandomStates(randomizables={"data": original}, include_global=False).state_dict()
    changed = _pipeline(extra_flip=True)
    changed.set_random_state(seed=3)
    with pytest.raises(ValueError, match="the random transforms changed since the checkpoint was written"):
        RandomStates(randomizables={"data": changed}, include_global=False).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"holds the NumPy states of \[\], the configuration has \['data'\]"):
        RandomStates(randomizables={"data": original}, include_global=False).load_state_dict({"generators": {}})
    with pytest.raises(ValueError, match="randomizables must be a mapping"):
        RandomStates(randomizables=[original])  # type: ignore[arg-type]


def test_resume_hint_names_the_overlay(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no checkpoint to resume from in {tmp_path}: .*use the other run"):
        resumable_checkpoint(tmp_path, hint="use the other run")
    with pytest.raises(FileNotFoundError, match="without the resume overlay"):
        ResumeTraining(checkpoint_dir=tmp_path, load_dict={"trainer": TrainerState()})


def test_legopet_reexports_the_generic_resume_pieces():
    from bundle.engines import checkpoints, legopet

    for name in ("TrainerState", "RandomStates", "ResumeTraining", "resumable_checkpoint"):
        assert getattr(legopet, name) is getattr(checkpoints, name)
