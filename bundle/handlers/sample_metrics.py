"""Validation PSNR / SSIM of a sampling model during training (the cDPM / LegoPET trainings).

:class:`SampleValidationMetrics` is a train handler built on
:class:`bundle.handlers.image_logging.TensorBoardSampleImages` (same data loading, inferer call, eval mode and
crop of the padding).  Every ``interval`` epochs, and once more when training ends, it samples the first
``num_samples`` items of a dataset (the validation split in ``configs/legopet/train_legopet.json``) and computes,
per item, on the unpadded image in network units::

    PSNR = 10 log10(max_val² / MSE),   SSIM (Gaussian σ = 1.5, 11 taps) with data range max_val

(:func:`bundle.metrics.image_metrics` with ``data_range=max_val``; ``max_val`` = 1 is the convention of the PnPNet /
DeepPET validation, ``PeakSignalToNoiseRatio(max_val=1)``).  The means over the items go to TensorBoard as
``{prefix}_psnr`` / ``{prefix}_ssim`` at the trainer's iteration, to ``engine.state.metrics``, to :attr:`history`
and to the console (at attach this module's logger gets a console handler when it has none, as MONAI's
``StatsHandler`` does for its own).  The inferer's generator is seeded afresh on every call, so every validation
starts from the same x_T and an exact resume stays exact.  Importing this module runs nothing.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Any

from ignite.engine import Engine

from bundle.handlers.image_logging import TensorBoardSampleImages, crop_to_box
from bundle.metrics import image_metrics

__all__ = ["SampleValidationMetrics"]

logger = logging.getLogger(__name__)


class SampleValidationMetrics(TensorBoardSampleImages):
    """PSNR / SSIM of sampled predictions on fixed items (module docstring).

    Args (keyword-only):
        max_val: data range L of PSNR and SSIM in network units (> 0; default 1.0).
        prefix: metric name prefix (``"val"`` gives ``val_psnr`` and ``val_ssim``).
        Others: as :class:`~bundle.handlers.image_logging.TensorBoardSampleImages` (``num_samples`` = how many
        items are scored; ``tag_prefix`` is unused).
    """

    def __init__(self, *, max_val: float = 1.0, prefix: str = "val", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        real = isinstance(max_val, numbers.Real) and not isinstance(max_val, bool)
        if not real or not math.isfinite(max_val) or max_val <= 0:
            raise ValueError(f"max_val must be a finite number > 0, got {max_val!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        self.max_val = float(max_val)
        self.prefix = prefix
        self.history: list[dict[str, float]] = []

    def __call__(self, engine: Engine) -> None:
        """Score at ``engine.state.iteration`` and put the means into ``engine.state.metrics``."""
        scores = self.score(step=int(engine.state.iteration))
        engine.state.metrics.update({k: v for k, v in scores.items() if k != "iteration"})
        logger.info(
            "Iteration %d: %s %.4f, %s %.4f (%d sampled validation items)", int(engine.state.iteration),
            f"{self.prefix}_psnr", scores[f"{self.prefix}_psnr"], f"{self.prefix}_ssim", scores[f"{self.prefix}_ssim"],
            self.num_samples,
        )

    def attach(self, engine: Engine) -> None:
        """Schedule as the parent; give this module's logger a console handler at INFO when it has none (as MONAI's
        ``StatsHandler`` does for its own logger), so the scores show in the ``monai.bundle run`` output."""
        super().attach(engine)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False

    def write(self, *, step: int) -> None:  # the parent's image writer is replaced by the scores
        self.score(step=step)

    def score(self, *, step: int) -> dict[str, float]:
        """Sample, crop, score; write the means at global step ``step``; returns them (and ``iteration``)."""
        samples = self._load()
        prediction = self.predict()
        padded_shape = tuple(samples[self.reference_key].shape[-2:])
        values: dict[str, list[float]] = {"psnr": [], "ssim": []}
        for i in range(self.num_samples):
            reference = samples[self.reference_key][i]
            pred = prediction[i]
            box = samples[f"{self.reference_key}_padding"][i]
            if box is not None:
                reference = crop_to_box(reference, box)
                if tuple(pred.shape[-2:]) == padded_shape:
                    pred = crop_to_box(pred, box)
            if tuple(pred.shape) != tuple(reference.shape):
                raise ValueError(
                    f"prediction {i} has shape {tuple(pred.shape)} after the crop, the reference "
                    f"{tuple(reference.shape)}"
                )
            item = image_metrics(pred[0], reference[0], data_range=self.max_val)
            values["psnr"].append(item["PSNR"])
            values["ssim"].append(item["SSIM"])
        scores = {f"{self.prefix}_{k}": sum(v) / len(v) for k, v in values.items()}
        writer = self._summary_writer()
        for name, value in scores.items():
            writer.add_scalar(name, value, step)
        writer.flush()
        self.last_step = step
        logger.debug("scored %d sampled items at step %d: %s", self.num_samples, step, scores)
        record = {"iteration": float(step), **scores}
        self.history.append(record)
        return record
