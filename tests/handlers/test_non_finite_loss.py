"""StopOnNonFiniteLoss (bundle.handlers.non_finite_loss): a NaN loss stops training naming the iteration."""

from __future__ import annotations

import logging

import pytest
import torch
from monai.engines import SupervisedTrainer

from bundle.handlers.non_finite_loss import NonFiniteLossError, StopOnNonFiniteLoss


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
    with caplog.at_level(logging.ERROR, logger="bundle.handlers.non_finite_loss"):
        with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at iteration 3 \(epoch 1\)"):
            trainer.run()
    assert "iteration 3" in caplog.text
    assert trainer.state.iteration == 3


def test_nan_loss_can_terminate_instead(caplog):
    trainer, _ = _nan_trainer(raise_error=False)
    with caplog.at_level(logging.ERROR, logger="bundle.handlers.non_finite_loss"):
        trainer.run()
    assert trainer.state.iteration == 3 and "training stopped" in caplog.text


def test_stop_on_non_finite_loss_argument_checks():
    with pytest.raises(TypeError, match="output_transform must be callable"):
        StopOnNonFiniteLoss(output_transform=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="raise_error must be a bool"):
        StopOnNonFiniteLoss(raise_error=1)  # type: ignore[arg-type]
