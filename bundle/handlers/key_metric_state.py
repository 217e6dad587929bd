"""The evaluator's best key metric as a checkpoint entry (:class:`KeyMetricState`), so that a resumed PnPNet / DeepPET /
GAN training keeps its best-checkpoint tracking.  Importing this module runs nothing."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from ignite.engine import Engine

__all__ = ["KeyMetricState"]


class KeyMetricState:
    """The evaluator's best key metric and its key-metric ``CheckpointSaver``'s tracking, as one checkpoint entry.

    Without it a resumed PnPNet / DeepPET run forgets the best validation score and its first validation overwrites
    ``*_best.pt`` even with a worse model.  ``state_dict()`` = ``{"best_metric": float, "best_metric_epoch": int,
    "saved": [(score, file name), ...]}``.

    Args (keyword-only):
        evaluator: MONAI ``SupervisedEvaluator`` (its ``state.best_metric`` / ``state.best_metric_epoch``).
        saver: MONAI ``CheckpointSaver`` with ``save_key_metric=True`` attached to ``evaluator``.
    """

    def __init__(self, *, evaluator: Engine, saver: Any) -> None:
        if not isinstance(evaluator, Engine):
            raise ValueError(f"evaluator must be an ignite Engine (MONAI evaluator), got {type(evaluator).__name__}")
        checkpoint = getattr(saver, "_key_metric_checkpoint", None)
        if checkpoint is None or not callable(getattr(checkpoint, "state_dict", None)):
            raise ValueError(
                f"saver must be a MONAI CheckpointSaver with save_key_metric=True, got {type(saver).__name__}"
            )
        self.evaluator = evaluator
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        """Best metric, its epoch and the saver's ``(score, file name)`` list."""
        best = getattr(self.evaluator.state, "best_metric", -1)
        return {
            "best_metric": float(best) if isinstance(best, numbers.Real | torch.Tensor) else -1.0,
            "best_metric_epoch": int(getattr(self.evaluator.state, "best_metric_epoch", -1)),
            "saved": [(float(p), str(f)) for p, f in self.saver._key_metric_checkpoint.state_dict()["_saved"]],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        keys = ("best_metric", "best_metric_epoch", "saved")
        if not isinstance(state_dict, Mapping) or any(k not in state_dict for k in keys):
            raise ValueError(f"state_dict must be a mapping with the keys {list(keys)}, got {state_dict!r}")
        best = float(state_dict["best_metric"])
        self.evaluator.state.best_metric = best if math.isfinite(best) else -1
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])
        self.saver.load_state_dict({"_saved": [(p, str(f)) for p, f in state_dict["saved"]]})
