"""AtomicDiskSaver / AtomicCheckpointSaver (bundle.handlers.checkpoint_saver): fsynced atomic writes, MONAI's
fixed file names kept."""

from __future__ import annotations

import torch
from ignite.engine import Engine

from bundle.handlers.checkpoint_saver import AtomicCheckpointSaver, AtomicDiskSaver


def test_atomic_saver_writes_through_fsyncing_saver(tmp_path):
    network = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"network": network}, save_final=True,
                                  save_interval=1)
    assert isinstance(saver._interval_checkpoint.save_handler, AtomicDiskSaver)
    assert isinstance(saver._final_checkpoint.save_handler, AtomicDiskSaver)


def test_atomic_saver_keeps_the_final_file_name(tmp_path):
    """MONAI's ``final_filename`` (what inference configs load) survives the switch to the atomic saver."""

    network = torch.nn.Linear(2, 1)
    engine = Engine(lambda engine, batch: 0.0)
    AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"network": network}, save_final=True,
                          final_filename="network_final.pt").attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["network_final.pt"]
    state = torch.load(tmp_path / "network_final.pt", weights_only=True)  # one object: ignite stores it unnested
    torch.testing.assert_close(state["weight"], network.weight.detach())
