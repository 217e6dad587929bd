"""KeyMetricState (bundle.handlers.key_metric_state): the best metric and the key-metric saver's list survive a
resume."""

from __future__ import annotations

import pytest
from ignite.engine import Engine

from bundle.handlers.key_metric_state import KeyMetricState


def _engine(epoch_length: int = 4) -> Engine:
    engine = Engine(lambda e, batch: None)
    engine.state.epoch_length = epoch_length
    engine.state.max_epochs = 3
    return engine


class _KeyMetricCheckpoint:
    def __init__(self) -> None:
        self._saved = [(3.5, "best.pt")]

    def state_dict(self):
        return {"_saved": list(self._saved)}


class _Saver:
    def __init__(self) -> None:
        self._key_metric_checkpoint = _KeyMetricCheckpoint()
        self.loaded = None

    def load_state_dict(self, state_dict):
        self.loaded = state_dict


def test_key_metric_state_roundtrip_and_argument_checks():
    evaluator = _engine()
    evaluator.state.best_metric, evaluator.state.best_metric_epoch = 3.5, 2
    saved = KeyMetricState(evaluator=evaluator, saver=_Saver()).state_dict()
    assert saved == {"best_metric": 3.5, "best_metric_epoch": 2, "saved": [(3.5, "best.pt")]}
    fresh, saver = _engine(), _Saver()
    KeyMetricState(evaluator=fresh, saver=saver).load_state_dict(saved)
    assert (fresh.state.best_metric, fresh.state.best_metric_epoch) == (3.5, 2)
    assert saver.loaded == {"_saved": [(3.5, "best.pt")]}
    with pytest.raises(ValueError, match="evaluator must be an ignite Engine"):
        KeyMetricState(evaluator="evaluator", saver=_Saver())
    with pytest.raises(ValueError, match="saver must be a MONAI CheckpointSaver with save_key_metric=True"):
        KeyMetricState(evaluator=evaluator, saver=object())
    with pytest.raises(ValueError, match="best_metric_epoch"):
        KeyMetricState(evaluator=evaluator, saver=_Saver()).load_state_dict({"best_metric": 1.0})
