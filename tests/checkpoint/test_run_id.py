"""Run ids (bundle.checkpoint.run_id) and the folder scan that uses them (scan_checkpoints, choose_checkpoint)."""

from __future__ import annotations

import os

import pytest
import torch

from bundle.checkpoint import (
    RunId,
    choose_checkpoint,
    latest_checkpoint,
    resumable_checkpoint,
    save_checkpoint,
    scan_checkpoints,
    stored_run_id,
)


def test_run_id_is_drawn_per_run_and_adopted_on_load():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first, second = RunId(), RunId()
    assert torch.equal(torch.get_rng_state(), before)  # drawing an id leaves the seeded generators alone
    assert first.value != second.value and len(first.value) == 32 and int(first.value, 16) >= 0
    second.load_state_dict(first.state_dict())
    assert second.value == first.value  # a resumed run keeps the id of the run it continues
    assert stored_run_id({"run_id": first.state_dict()}) == first.value
    assert stored_run_id({"network": {}}) is None  # a checkpoint written before run ids were recorded


def test_run_id_rejects_empty_values():
    with pytest.raises(ValueError, match="value must be a non-empty string"):
        RunId("")
    with pytest.raises(ValueError, match="state_dict must be a mapping with a 'run_id' string"):
        RunId().load_state_dict({"id": "abc"})
    with pytest.raises(ValueError, match=r"state_dict\['run_id'\] must be a non-empty string"):
        RunId().load_state_dict({"run_id": 3})


def _save(folder, name, iteration, run, mtime):
    state = {"trainer": {"iteration": iteration, "epoch_length": 2}}
    if run is not None:
        state["run_id"] = {"run_id": run}
    path = save_checkpoint(state, folder / name)
    os.utime(path, (mtime, mtime))
    return path


def test_scan_lists_iterations_epochs_runs_and_unreadable_files(tmp_path):
    _save(tmp_path, "checkpoint_epoch=2.pt", 4, "a" * 32, 100)
    _save(tmp_path, "checkpoint_epoch=1.pt", 2, None, 50)
    save_checkpoint({"network": {}}, tmp_path / "network_best.pt")  # weights only: neither listed nor unreadable
    (tmp_path / "checkpoint_epoch=3.pt").write_bytes(b"truncated")
    (tmp_path / ".checkpoint_epoch=3.pt.tmp").write_bytes(b"partial")  # an interrupted atomic write: ignored
    scan = scan_checkpoints(tmp_path)
    assert [(r.path.name, r.iteration, r.epoch, r.run_id) for r in scan.records] == [
        ("checkpoint_epoch=1.pt", 2, 1, None), ("checkpoint_epoch=2.pt", 4, 2, "a" * 32)]
    assert [p.name for p, _ in scan.unreadable] == ["checkpoint_epoch=3.pt"]
    assert "cannot be read" in scan.unreadable[0][1]
    assert choose_checkpoint(scan).path.name == "checkpoint_epoch=2.pt"  # an unrecorded run beside one run: allowed


def test_checkpoints_of_different_runs_are_refused_unless_one_is_chosen(tmp_path):
    run_a, run_b = "a" * 32, "b" * 32
    _save(tmp_path, "checkpoint_epoch=5.pt", 10, run_a, 100)  # the earlier run's newest checkpoint ...
    _save(tmp_path, "network_final.pt", 12, run_a, 110)
    _save(tmp_path, "checkpoint_epoch=1.pt", 2, run_b, 200)  # ... beside a newer run's first one
    with pytest.raises(ValueError) as caught:
        latest_checkpoint(tmp_path)
    message = str(caught.value)
    assert f"{tmp_path} belong to 2 different training runs" in message
    for name, run, iteration in (("network_final.pt", run_a, 12), ("checkpoint_epoch=5.pt", run_a, 10),
                                 ("checkpoint_epoch=1.pt", run_b, 2)):
        assert f"{name} (run {run}, iteration {iteration})" in message
    assert "--resume_run_id" in message
    with pytest.raises(ValueError, match="different training runs"):
        resumable_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path, run_id=run_b).name == "checkpoint_epoch=1.pt"
    assert resumable_checkpoint(tmp_path, run_id=run_a).name == "network_final.pt"
    with pytest.raises(ValueError, match=r"run_id 'c+' matches no checkpoint in .*checkpoint_epoch=1.pt \(run b+"):
        latest_checkpoint(tmp_path, run_id="c" * 32)
