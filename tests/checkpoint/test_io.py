"""Checkpoint I/O (bundle.checkpoint.io): atomic writes, clear errors for corrupt / foreign files, the newest
checkpoint of a folder, DDP-wrapped loading, the one weight loader."""

from __future__ import annotations

import pytest
import torch

from bundle.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_state_dicts,
    load_weights,
    save_checkpoint,
)


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


def test_load_state_dicts_unwraps_data_parallel_modules(tmp_path):
    """ignite / MONAI savers store DDP / DataParallel networks unwrapped; loading goes into ``module``."""
    source = torch.nn.Linear(3, 2)
    path = save_checkpoint({"network": source.state_dict()}, tmp_path / "ckpt.pt")
    target = torch.nn.DataParallel(torch.nn.Linear(3, 2))
    load_state_dicts({"network": target}, path)
    torch.testing.assert_close(target.module.weight, source.weight, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------- load_weights
def test_load_weights_reads_the_key_or_the_ema_entry(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"network": {"weight": torch.ones(1, 1)}, "ema": {"weight": torch.zeros(1, 1)}}, path)
    net = load_weights(torch.nn.Linear(1, 1, bias=False).train(), path)
    assert not net.training and float(net.weight.detach()) == 1.0
    assert float(load_weights(torch.nn.Linear(1, 1, bias=False), path, use_ema=True).weight.detach()) == 0.0
    torch.save({"network": {"weight": torch.ones(1, 1)}}, path)  # no EMA entry: the raw weights
    assert float(load_weights(torch.nn.Linear(1, 1, bias=False), path, use_ema=True).weight.detach()) == 1.0
    torch.save({"autoencoder": {"weight": torch.full((1, 1), 3.0)}}, path)
    assert float(load_weights(torch.nn.Linear(1, 1, bias=False), path, key="autoencoder").weight.detach()) == 3.0
    torch.save({"weight": torch.full((1, 1), 4.0)}, path)  # a bare state dict
    assert float(load_weights(torch.nn.Linear(1, 1, bias=False), path, key=None).weight.detach()) == 4.0
    wrapped = torch.nn.DataParallel(torch.nn.Linear(1, 1, bias=False))
    assert float(load_weights(wrapped, path, key=None).module.weight.detach()) == 4.0


def test_load_weights_errors_are_checkpoint_errors_naming_file_and_key(tmp_path):
    net = torch.nn.Linear(1, 1, bias=False)
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match=f"{missing} does not exist: .*entry 'network'.*Linear"):
        load_weights(net, missing)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        load_weights("net", missing)
    torch.save({"optimizer": {}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt has no 'network' entry.*found keys \['optimizer'\]"):
        load_weights(net, tmp_path / "bad.pt")
    torch.save({"network": {"unexpected": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: entry 'network' does not fit the configured Linear"):
        load_weights(net, tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt cannot be read"):
        load_weights(net, tmp_path / "garbage.pt")


def test_list_checkpoints_sorted_by_epoch(tmp_path):
    for name in ("checkpoint_epoch=20.pt", "checkpoint_epoch=5.pt", "legopet_final.pt", "x_checkpoint_epoch=10.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [e for e, _ in list_checkpoints(tmp_path)] == [5, 10, 20]
    with pytest.raises(FileNotFoundError):
        list_checkpoints(tmp_path / "nope")


def test_wrong_architecture_message_counts_and_shows_three_examples(tmp_path):
    """Not torch's list of every key: counts, three examples each, and the shapes that differ."""
    stored = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(10)))
    path = save_checkpoint({"network": stored.state_dict()}, tmp_path / "other.pt")
    configured = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 3))
    with pytest.raises(CheckpointError) as raised:
        load_state_dicts({"network": configured}, path)
    message = str(raised.value)
    assert "16 of the 20 stored entries are unexpected (e.g. 2.weight, 2.bias, 3.weight)" in message
    assert "1 entries have another shape (e.g. 0.weight: stored (3, 3), configured (3, 4))" in message
    assert "missing" not in message and len(message) < 500
