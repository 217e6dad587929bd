"""AtomicCheckpointSaver refuses a fresh run over an earlier run's checkpoints (and does not save on that refusal)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from bundle.handlers.checkpoint_saver import AtomicCheckpointSaver, ExistingCheckpointsError


def _run(folder, *, overwrite: bool = False, value: float = 0.0) -> Engine:
    network = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(network.weight, value)
    engine = Engine(lambda engine, batch: None)
    saver = AtomicCheckpointSaver(save_dir=str(folder), save_dict={"network": network}, save_final=True,
                                  final_filename="net_final.pt", save_interval=1, overwrite=overwrite)
    saver.attach(engine)
    engine.run([0, 1], max_epochs=2)
    return engine


def test_fresh_run_over_earlier_checkpoints_is_refused_before_anything_is_written(tmp_path):
    _run(tmp_path, value=1.0)
    final = tmp_path / "net_final.pt"
    before = final.read_bytes()
    with pytest.raises(ExistingCheckpointsError, match=r"already holds checkpoints of an earlier run \(net_final\.pt"):
        _run(tmp_path, value=2.0)
    assert final.read_bytes() == before  # MONAI's save-on-exception did not run for the refusal
    _run(tmp_path, value=3.0, overwrite=True)
    assert torch.load(final, weights_only=True)["weight"].eq(3.0).all()  # one entry: ignite saves it bare
    with pytest.raises(TypeError, match="overwrite must be true or false"):
        AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"n": torch.nn.Linear(1, 1)}, overwrite="yes")
