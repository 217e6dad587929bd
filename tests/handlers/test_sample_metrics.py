"""SampleValidationMetrics: analytic PSNR/SSIM after the crop, scalars, engine metrics, schedule, argument checks."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from ignite.engine import Engine

from bundle.handlers.sample_metrics import SampleValidationMetrics


class _Writer:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_image(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError("no images expected")

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, float(value), int(step)))

    def flush(self):
        pass


def _dataset(n: int = 3) -> list[dict]:
    """24 × 24 grids holding a 16 × 16 image at (4, 4) (PadToSquared's box); zeros outside."""
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        reference = torch.zeros(1, 24, 24)
        reference[:, 4:20, 4:20] = torch.rand(1, 16, 16, generator=g)
        items.append({"sinogram": torch.rand(1, 24, 24, generator=g), "reference": reference,
                      "reference_padding": torch.tensor([4, 4, 16, 16])})
    return items


def _oracle(offset: float):
    """An inferer that returns the padded reference + offset inside the box and garbage outside it."""
    references = torch.stack([d["reference"] for d in _dataset()])

    def inferer(inputs, network):
        out = torch.full((inputs.shape[0], 1, 24, 24), 50.0)  # outside the box: must be cropped away
        out[:, :, 4:20, 4:20] = references[: inputs.shape[0], :, 4:20, 4:20] + offset
        return out

    return inferer


def _handler(offset: float, **kwargs) -> tuple[SampleValidationMetrics, _Writer]:
    writer = _Writer()
    args = {"dataset": _dataset(), "network": torch.nn.Identity(), "inferer": _oracle(offset), "summary_writer": writer,
            "interval": 2, "num_samples": 3}
    args.update(kwargs)
    return SampleValidationMetrics(**args), writer


def test_scores_on_the_cropped_image_match_the_analytic_values():
    """A constant error c on the unpadded image gives PSNR = −20 log10(c / L) exactly; no error gives SSIM = 1."""
    handler, writer = _handler(0.1, max_val=2.0)
    scores = handler.score(step=5)
    assert scores["val_psnr"] == pytest.approx(-20 * math.log10(0.1 / 2.0), rel=1e-5)
    assert {(tag, step) for tag, _, step in writer.scalars} == {("val_psnr", 5), ("val_ssim", 5)}
    exact, _ = _handler(0.0, prefix="check")
    assert exact.score(step=1)["check_ssim"] == pytest.approx(1.0, abs=1e-6)


def test_runs_on_schedule_and_fills_engine_metrics():
    handler, writer = _handler(0.1)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)
    records = []
    capture = logging.Handler()
    capture.emit = records.append
    logger = logging.getLogger("bundle.handlers.sample_metrics")
    logger.addHandler(capture)
    try:
        engine.run([0, 1], max_epochs=3)  # epochs of 2 iterations: scored at epoch 2 (iteration 4) and at the end (6)
    finally:
        logger.removeHandler(capture)
    assert "Iteration 6: val_psnr 20.0000" in [r.getMessage() for r in records][-1]
    assert [int(r["iteration"]) for r in handler.history] == [4, 6]
    assert engine.state.metrics["val_psnr"] == pytest.approx(20.0, rel=1e-5)
    assert [step for tag, _, step in writer.scalars if tag == "val_psnr"] == [4, 6]


@pytest.mark.parametrize(("kwargs", "match"), [({"max_val": 0.0}, "max_val must be a finite number > 0"),
                                                ({"max_val": float("nan")}, "max_val must be a finite number > 0"),
                                                ({"prefix": ""}, "prefix must be a non-empty string"),
                                                ({"num_samples": 4}, "num_samples must be <= len")])
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _handler(0.1, **kwargs)
