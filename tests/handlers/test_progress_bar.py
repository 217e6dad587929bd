"""TrainingProgressBar (bundle.handlers.progress_bar): a MONAI trainer's bar with the loss when bars show."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from bundle.handlers.progress_bar import TrainingProgressBar
from bundle.progress import PROGRESS_ENV


def _train(handler: TrainingProgressBar) -> SupervisedTrainer:
    torch.manual_seed(0)
    data = [{"image": torch.randn(2, 3), "label": torch.randn(2, 1)} for _ in range(4)]
    network = torch.nn.Linear(3, 1)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=2, train_data_loader=data, network=network,
                                optimizer=torch.optim.SGD(network.parameters(), lr=0.01),
                                loss_function=torch.nn.MSELoss(), train_handlers=[handler])
    trainer.run()
    return trainer


def test_bar_with_epochs_and_loss_when_forced_on(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "on")
    handler = TrainingProgressBar(desc="demo ")
    _train(handler)
    err = capsys.readouterr().err
    assert handler.bar is not None
    assert "demo epoch [1/2]: [4/4]" in err and "demo epoch [2/2]: [4/4]" in err and "loss=" in err


@pytest.mark.parametrize(("env", "progress"), [("off", True), ("on", False), ("auto", True)])
def test_silent_when_off_asked_or_not_a_terminal(monkeypatch, capsys, env, progress):
    monkeypatch.setenv(PROGRESS_ENV, env)  # auto: pytest's captured stderr is not a terminal
    handler = TrainingProgressBar(progress=progress)
    trainer = _train(handler)
    assert trainer.state.iteration == 8 and handler.bar is None
    assert capsys.readouterr().err == ""


def test_progress_must_be_a_bool():
    with pytest.raises(TypeError, match="progress must be true or false"):
        TrainingProgressBar(progress="no")
