"""Resume handlers (bundle.handlers.resume): kill-and-resume continues iterations and weights, MONAI trainers resume
from the atomic saver's files, TrainerState, the strict ResumeTraining and resumable_checkpoint's messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer

from bundle.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    resumable_checkpoint,
    save_checkpoint,
)
from bundle.handlers.checkpoint_saver import AtomicCheckpointSaver
from bundle.handlers.resume import ResumeFromLatest, ResumeTraining, TrainerState

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "handlers" / "_resume_worker.py"


def _state() -> dict:
    torch.manual_seed(0)
    return {"network": torch.nn.Linear(3, 2).state_dict(), "trainer": {"iteration": 7, "epoch_length": 4}}


def _engine(epoch_length: int = 4) -> Engine:
    engine = Engine(lambda e, batch: None)
    engine.state.epoch_length = epoch_length
    engine.state.max_epochs = 3
    return engine


def test_resume_requires_the_trainer_entry(tmp_path):
    with pytest.raises(ValueError, match="must be a mapping that includes the trainer under 'trainer'"):
        ResumeFromLatest(checkpoint_dir=tmp_path, load_dict={"network": torch.nn.Linear(1, 1)})


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


def test_trainer_state_proxies_the_attached_engine():
    state = TrainerState()
    with pytest.raises(RuntimeError, match="not attached"):
        state.state_dict()
    with pytest.raises(TypeError, match="engine must be an ignite Engine"):
        state.attach("trainer")
    engine = _engine()
    engine.state.iteration, engine.state.epoch = 8, 2
    state.attach(engine)
    saved = state.state_dict()
    assert (saved["iteration"], saved["epoch_length"], saved["max_epochs"]) == (8, 4, 3)
    other = _engine()
    proxy = TrainerState()
    proxy.attach(other)
    proxy.load_state_dict(saved)
    assert (other.state.iteration, other.state.epoch) == (8, 2)


def test_resumable_checkpoint_names_the_folder(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_dir must be a folder path"):
        resumable_checkpoint("")
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=f"checkpoint folder {missing} does not exist"):
        resumable_checkpoint(missing)
    save_checkpoint({"network": {}}, tmp_path / "pnpnet_best.pt")  # weights only: not resumable
    with pytest.raises(FileNotFoundError, match=f"no checkpoint to resume from in {tmp_path}: .*'trainer' state"):
        resumable_checkpoint(tmp_path)
    save_checkpoint({"trainer": {"iteration": 4}}, tmp_path / "checkpoint_epoch=1.pt")
    save_checkpoint({"trainer": {"iteration": 8}}, tmp_path / "checkpoint_epoch=2.pt")
    assert resumable_checkpoint(tmp_path) == tmp_path / "checkpoint_epoch=2.pt"


def test_resume_training_refuses_a_fresh_start_and_attaches_trainer_states(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        ResumeTraining(checkpoint_dir=tmp_path, load_dict={"trainer": TrainerState()})
    network = torch.nn.Linear(2, 1)
    source = _engine()
    source.state.iteration, source.state.epoch = 4, 1
    proxy = TrainerState()
    proxy.attach(source)
    save_checkpoint({"network": network.state_dict(), "trainer": proxy.state_dict()}, tmp_path / "a.pt")

    target, trainer_state = torch.nn.Linear(2, 1), TrainerState()
    handler = ResumeTraining(checkpoint_dir=tmp_path, load_dict={"network": target, "trainer": trainer_state})
    assert handler.checkpoint == tmp_path / "a.pt"
    engine = Engine(lambda e, batch: None)
    handler.attach(engine)
    assert trainer_state.engine is engine  # attached for ranks without train handlers
    seen = {}
    engine.add_event_handler(Events.ITERATION_STARTED(once=5), lambda e: seen.setdefault("epoch", e.state.epoch))
    engine.run([0] * 4, max_epochs=2)
    assert handler.resumed_from == tmp_path / "a.pt"
    assert seen == {"epoch": 2} and engine.state.iteration == 8
    for name, value in network.state_dict().items():
        assert torch.equal(target.state_dict()[name], value)


def test_resume_hint_names_the_overlay(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no checkpoint to resume from in {tmp_path}: .*use the other run"):
        resumable_checkpoint(tmp_path, hint="use the other run")
    with pytest.raises(FileNotFoundError, match="without the resume overlay"):
        ResumeTraining(checkpoint_dir=tmp_path, load_dict={"trainer": TrainerState()})
