"""Resume and run ids (bundle.handlers.resume with bundle.checkpoint.run_id): a resumed run keeps its run id, a
folder mixing runs is refused unless one is chosen, old checkpoints without an id are accepted with a warning, the
start point is logged and every unreadable file is warned about."""

from __future__ import annotations

import logging

import pytest
import torch
from monai.engines import SupervisedTrainer

from bundle.checkpoint import RunId, load_checkpoint, save_checkpoint
from bundle.handlers.checkpoint_saver import AtomicCheckpointSaver
from bundle.handlers.resume import ResumeTraining

LOGGER = "bundle.handlers.resume"


def _trainer(max_epochs: int) -> tuple[SupervisedTrainer, dict]:
    torch.manual_seed(0)
    data = [{"image": torch.randn(2, 3), "label": torch.randn(2, 1)} for _ in range(2)]
    network = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=max_epochs, train_data_loader=data,
                                network=network, optimizer=optimizer, loss_function=torch.nn.MSELoss())
    return trainer, {"network": network, "optimizer": optimizer, "trainer": trainer, "run_id": RunId()}


def _train(folder, max_epochs: int, *, resume: bool = False, overwrite: bool = False, **resume_kwargs) -> dict:
    trainer, objects = _trainer(max_epochs)
    if resume:
        ResumeTraining(checkpoint_dir=folder, load_dict=objects, **resume_kwargs).attach(trainer)
    AtomicCheckpointSaver(save_dir=str(folder), save_dict=objects, save_interval=1, n_saved=None, save_final=True,
                          final_filename="network_final.pt", overwrite=overwrite).attach(trainer)
    trainer.run()
    return objects


def _run_of(path) -> str:
    return load_checkpoint(path)["run_id"]["run_id"]


def test_every_checkpoint_holds_the_run_id_and_a_resume_keeps_it(tmp_path, caplog):
    first = _train(tmp_path, 2)["run_id"].value
    assert {_run_of(tmp_path / n) for n in ("checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt", "network_final.pt")} \
        == {first}
    with caplog.at_level(logging.INFO, logger=LOGGER):
        resumed = _train(tmp_path, 3, resume=True)["run_id"].value
    assert resumed == first  # adopted from the checkpoint, not the id this process drew
    assert _run_of(tmp_path / "checkpoint_epoch=3.pt") == first
    start = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming from")]
    assert start == [f"resuming from {tmp_path / 'network_final.pt'} (run {first}) at iteration 4, epoch 2"]


def test_a_folder_with_two_runs_is_refused_unless_one_is_chosen(tmp_path, caplog):
    run_a = _train(tmp_path, 3)["run_id"].value  # the earlier run: checkpoint_epoch=1..3 + final, iteration 6
    run_b = _train(tmp_path, 1, overwrite=True)["run_id"].value  # a new run over it: epoch 1 + final (iteration 2)
    assert _run_of(tmp_path / "checkpoint_epoch=3.pt") == run_a and _run_of(tmp_path / "network_final.pt") == run_b
    with pytest.raises(ValueError) as caught:
        _train(tmp_path, 4, resume=True)
    message = str(caught.value)
    assert "belong to 2 different training runs" in message
    assert f"checkpoint_epoch=3.pt (run {run_a}, iteration 6)" in message
    assert f"network_final.pt (run {run_b}, iteration 2)" in message
    with caplog.at_level(logging.INFO, logger=LOGGER):
        chosen = _train(tmp_path, 4, resume=True, run_id=run_a)
    assert chosen["run_id"].value == run_a and chosen["trainer"].state.iteration == 8
    assert f"resuming from {tmp_path / 'checkpoint_epoch=3.pt'} (run {run_a}) at iteration 6, epoch 3" in caplog.text
    with pytest.raises(ValueError, match="run_id must be the id of the run to continue"):
        ResumeTraining(checkpoint_dir=tmp_path, load_dict=chosen, run_id="  ")


def test_checkpoints_without_a_run_id_resume_with_a_warning(tmp_path, caplog):
    _train(tmp_path, 2)
    for path in tmp_path.glob("*.pt"):  # as written before run ids were recorded
        state = load_checkpoint(path)
        del state["run_id"]
        save_checkpoint(state, path)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        objects = _train(tmp_path, 3, resume=True)
    assert objects["trainer"].state.iteration == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("network_final.pt holds no run id (written before run ids were recorded)" in w for w in warnings)
    assert _run_of(tmp_path / "checkpoint_epoch=3.pt") == objects["run_id"].value  # the resumed run records one


def test_unreadable_newer_checkpoints_are_warned_about_and_skipped(tmp_path, caplog):
    _train(tmp_path, 3)
    for name in ("checkpoint_epoch=3.pt", "network_final.pt"):
        (tmp_path / name).write_bytes((tmp_path / name).read_bytes()[:100])  # truncated
    with caplog.at_level(logging.INFO, logger=LOGGER):
        objects = _train(tmp_path, 3, resume=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in ("checkpoint_epoch=3.pt", "network_final.pt"):
        assert sum(f"resume: skipping {tmp_path / name}, it cannot be read" in w for w in warnings) == 1
    assert f"resuming from {tmp_path / 'checkpoint_epoch=2.pt'}" in caplog.text  # the older, readable one
    assert objects["trainer"].state.iteration == 6
