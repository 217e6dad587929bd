"""TensorBoardSampleImages: tags, crops, network mode, RNG neutrality, schedule, argument checks.

A recording writer stands in for TensorBoard here; tests/configs/test_legopet_resume.py reads real event files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from bundle.handlers.image_logging import TensorBoardSampleImages


class _Writer:
    def __init__(self) -> None:
        self.images: list[tuple[str, tuple[int, ...], int]] = []
        self.flushes = 0

    def add_image(self, tag, image, step, dataformats="CHW"):
        self.images.append((tag, tuple(np.asarray(image).shape), int(step)))

    def flush(self):
        self.flushes += 1


def _dataset(n: int = 3, padded: bool = False) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        item = {"sinogram": torch.rand(1, 8, 8, generator=g), "reference": torch.rand(1, 8, 8, generator=g)}
        if padded:  # a 6 × 4 sinogram and 4 × 4 image padded to 8 × 8 (PadToSquared's boxes)
            item["sinogram_padding"] = torch.tensor([1, 2, 6, 4])
            item["reference_padding"] = torch.tensor([2, 2, 4, 4])
        items.append(item)
    return items


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.conv(x)


def _handler(**kwargs) -> tuple[TensorBoardSampleImages, _Writer]:
    writer = _Writer()
    args = {"dataset": _dataset(), "network": _Net(), "summary_writer": writer, "interval": 2, "num_samples": 2}
    args.update(kwargs)
    return TensorBoardSampleImages(**args), writer


def test_writes_every_sample_with_the_expected_tags_and_step():
    handler, writer = _handler()
    handler.write(step=7)
    tags = {tag for tag, _, _ in writer.images}
    assert tags == {f"samples/{i}/{name}_HW" for i in (0, 1)
                    for name in ("input", "reference", "prediction", "reference_prediction")}
    assert {step for _, _, step in writer.images} == {7} and writer.flushes == 1
    shapes = {tag: shape for tag, shape, _ in writer.images}
    assert shapes["samples/0/prediction_HW"] == (8, 8) and shapes["samples/0/reference_prediction_HW"] == (8, 16)


def test_padded_samples_are_cropped_with_their_boxes():
    handler, writer = _handler(dataset=_dataset(padded=True), tag_prefix="val/")
    handler.write(step=1)
    shapes = {tag: shape for tag, shape, _ in writer.images}
    assert shapes["val/0/input_HW"] == (6, 4)  # the sinogram's own box
    assert shapes["val/0/reference_HW"] == (4, 4)
    assert shapes["val/0/prediction_HW"] == (4, 4)  # on the padded grid: the reference's box
    assert shapes["val/0/reference_prediction_HW"] == (4, 8)


def test_prediction_runs_in_eval_mode_without_grad_and_restores_the_mode():
    network = _Net()
    handler, _ = _handler(network=network)
    network.train()
    prediction = handler.predict()
    assert network.modes == [False] and network.training and not prediction.requires_grad
    network.eval()
    handler.predict()
    assert not network.training


def test_does_not_draw_from_the_global_rng():
    def noisy_inferer(inputs, network):
        return network(inputs) + torch.randn(inputs.shape, generator=torch.Generator().manual_seed(1))

    handler, _ = _handler(inferer=noisy_inferer)
    before = torch.get_rng_state()
    handler.write(step=1)
    assert torch.equal(torch.get_rng_state(), before)


def test_attached_schedule_every_interval_and_at_the_end():
    handler, writer = _handler(interval=2)
    engine = Engine(lambda e, batch: None)
    handler.attach(engine)
    engine.run([0, 1], max_epochs=3)  # epochs end at iterations 2, 4, 6: interval 2 -> 4; the end -> 6
    assert sorted({step for _, _, step in writer.images}) == [4, 6]
    handler, writer = _handler(interval=1, log_at_end=True)
    engine = Engine(lambda e, batch: None)
    handler.attach(engine)
    engine.run([0], max_epochs=2)
    assert sorted({step for _, _, step in writer.images}) == [1, 2]  # the end was already written


def test_writes_a_real_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    handler = TensorBoardSampleImages(dataset=_dataset(), network=_Net(), log_dir=tmp_path, num_samples=1)
    assert not list(tmp_path.iterdir())  # nothing is written before the first call
    handler.write(step=3)
    handler.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(path), size_guidance={IMAGES: 0})
    accumulator.Reload()
    assert sorted(accumulator.Tags()[IMAGES]) == [
        "samples/0/input_HW", "samples/0/prediction_HW", "samples/0/reference_HW", "samples/0/reference_prediction_HW"
    ]
    assert accumulator.Images("samples/0/prediction_HW")[0].step == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"interval": 0}, "interval must be a positive int"),
        ({"num_samples": 4}, r"num_samples must be <= len\(dataset\) = 3"),
        ({"num_samples": True}, "num_samples must be a positive int"),
        ({"dataset": 5}, "dataset must be an indexable sequence"),
        ({"network": 3}, "network must be a callable"),
        ({"inferer": "ddim"}, "inferer must be callable"),
        ({"summary_writer": None}, "log_dir must be a folder path"),
        ({"summary_writer": object()}, "summary_writer must have add_image"),
        ({"input_key": ""}, "input_key must be a non-empty string"),
        ({"log_at_end": "yes"}, "log_at_end must be a bool"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _handler(**kwargs)


def test_bad_samples_and_predictions_are_named():
    handler, _ = _handler(dataset=[{"sinogram": torch.zeros(1, 4, 4)}] * 2)
    with pytest.raises(KeyError, match="dataset\\[0\\] has no 'reference' entry"):
        handler.write(step=0)
    handler, _ = _handler(dataset=[{"sinogram": torch.zeros(4, 4), "reference": torch.zeros(4, 4)}] * 2)
    with pytest.raises(ValueError, match=r"must have shape \(1, H, W\), got \(4, 4\)"):
        handler.write(step=0)
    handler, _ = _handler(inferer=lambda inputs, network: inputs[:, 0])
    with pytest.raises(ValueError, match=r"the inferer must return \(N, 1, H, W\)"):
        handler.write(step=0)
