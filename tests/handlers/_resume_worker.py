"""A tiny ignite training run for tests/handlers/test_checkpoints.py, run as a script in a subprocess.

ignite is the engine under MONAI's SupervisedTrainer; without MONAI's imports the subprocess starts faster.

python tests/handlers/_resume_worker.py CHECKPOINT_DIR OUT_DIR [--sleep S]

Resumes from the newest checkpoint in CHECKPOINT_DIR when there is one, checkpoints every 5 iterations
(network, optimizer, trainer) atomically, and writes OUT_DIR/start.pt (weights after resuming, before the first
iteration), OUT_DIR/first_iteration.txt and, when it completes, OUT_DIR/final.pt.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from ignite.engine import Events, create_supervised_trainer
from ignite.handlers import Checkpoint

from bundle.checkpoint import save_checkpoint
from bundle.handlers.checkpoint_saver import AtomicDiskSaver
from bundle.handlers.resume import ResumeFromLatest

EPOCH_LENGTH = 12
MAX_EPOCHS = 3
SAVE_INTERVAL = 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, 4, generator=g), torch.randn(2, 1, generator=g)) for _ in range(EPOCH_LENGTH)]
    network = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    trainer = create_supervised_trainer(network, optimizer, torch.nn.MSELoss())
    objects = {"network": network, "optimizer": optimizer, "trainer": trainer}
    ResumeFromLatest(checkpoint_dir=args.checkpoint_dir, load_dict=objects).attach(trainer)
    saver = Checkpoint(objects, AtomicDiskSaver(args.checkpoint_dir, require_empty=False), n_saved=2)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=SAVE_INTERVAL), saver)

    @trainer.on(Events.STARTED)
    def _record_start(engine):  # registered after ResumeFromLatest: sees the resumed weights
        save_checkpoint({"network": network.state_dict(), "iteration": engine.state.iteration}, out / "start.pt")

    @trainer.on(Events.ITERATION_STARTED)
    def _record_first(engine):
        path = out / "first_iteration.txt"
        if not path.exists():
            path.write_text(str(engine.state.iteration), encoding="utf-8")

    @trainer.on(Events.ITERATION_COMPLETED)
    def _slow(engine):
        time.sleep(args.sleep)

    trainer.run(data, max_epochs=MAX_EPOCHS)
    save_checkpoint({"network": network.state_dict(), "iteration": trainer.state.iteration,
                     "epoch": trainer.state.epoch}, out / "final.pt")


if __name__ == "__main__":
    main()
