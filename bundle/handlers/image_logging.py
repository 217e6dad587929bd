"""TensorBoard sample images during training: input, reference and prediction of a few fixed samples.

:class:`TensorBoardSampleImages` is a train handler.  Every ``interval`` epochs (and once more when training ends, if
the last epoch was not logged) it runs ``inferer(inputs, network)`` on the first ``num_samples`` items of a dataset
(e.g. the validation set) and writes, for sample ``i``, with MONAI's ``plot_2d_or_3d_image`` (which appends ``_HW``):

* ``{tag_prefix}/{i}/input_HW``: the network input (the sinogram), min-max scaled;
* ``{tag_prefix}/{i}/reference_HW``: the reference image, min-max scaled;
* ``{tag_prefix}/{i}/prediction_HW``: the prediction, min-max scaled;
* ``{tag_prefix}/{i}/reference_prediction_HW``: reference | prediction side by side on one shared scale (shows an
  intensity bias that separate min-max scaling hides).

The global step is the trainer's iteration, as for the ``train_loss`` curve.  Images padded by
``bundle.transforms.legopet.PadToSquared`` are cropped back with their recorded box (``f"{key}_padding"``); a
prediction on the padded grid gets the reference's box.

Regression networks (PnPNet, DeepPET) use MONAI's ``SimpleInferer``; the diffusion models use a cheap
``bundle.inferers.LegoPETInferer`` (DDIM, few steps) whose generator is seeded afresh on every call, so the
previews of successive epochs start from the same x_T and the handler draws nothing from torch's global RNG (an
exact resume stays exact).  The network runs in eval mode under ``torch.no_grad`` and gets its mode back.

Importing this module runs nothing (the TensorBoard writer is created at the first write).
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.visualize import plot_2d_or_3d_image

__all__ = ["TensorBoardSampleImages", "crop_to_box"]

logger = logging.getLogger(__name__)


def _simple_inferer(inputs: torch.Tensor, network: Callable[..., torch.Tensor]) -> torch.Tensor:
    return network(inputs)


def _positive_int(value: object, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def crop_to_box(image: torch.Tensor, box: Any) -> torch.Tensor:
    """``image[..., top:top+height, left:left+width]`` for a ``(top, left, height, width)`` box."""
    top, left, height, width = (int(b) for b in torch.as_tensor(box).flatten().tolist())
    return image[..., top : top + height, left : left + width]


class TensorBoardSampleImages:
    """Write input / reference / prediction images of fixed samples to TensorBoard (module docstring for the tags).

    Args (keyword-only):
        dataset: indexable samples (a MONAI ``Dataset``): ``dataset[i]`` is a dict with ``input_key`` and
            ``reference_key`` tensors of shape ``(1, H, W)``; the first ``num_samples`` items are used, loaded once.
        network: the model to preview (for the diffusion models the EMA copy, ``$@ema.ema_model``).
        inferer: ``inferer(inputs (N, 1, H, W), network) -> (N, 1, H', W')``; ``None`` = ``network(inputs)``.
        log_dir: folder of the TensorBoard event file (required unless ``summary_writer`` is given).
        summary_writer: an existing ``torch.utils.tensorboard.SummaryWriter`` to write to instead.
        interval: write every ``interval`` epochs (>= 1).
        num_samples: number of samples (>= 1, at most ``len(dataset)``).
        input_key: data key of the network input (``"sinogram"``).
        reference_key: data key of the reference image (``"reference"``).
        tag_prefix: first part of every tag.
        device: where the network runs; ``None`` = the device of the network's first parameter (CPU without any).
        log_at_end: also write at ``Events.COMPLETED`` when the last epoch was not a multiple of ``interval``.
    """

    def __init__(
        self,
        *,
        dataset: Sequence[Any],
        network: torch.nn.Module | Callable[..., torch.Tensor],
        inferer: Callable[..., torch.Tensor] | None = None,
        log_dir: str | Path | None = None,
        summary_writer: Any | None = None,
        interval: int = 10,
        num_samples: int = 2,
        input_key: str = "sinogram",
        reference_key: str = "reference",
        tag_prefix: str = "samples",
        device: str | torch.device | None = None,
        log_at_end: bool = True,
    ) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ValueError(f"dataset must be an indexable sequence of sample dicts, got {type(dataset).__name__}")
        self.interval = _positive_int(interval, "interval")
        self.num_samples = _positive_int(num_samples, "num_samples")
        if len(dataset) < self.num_samples:
            raise ValueError(
                f"num_samples must be <= len(dataset) = {len(dataset)}, got {self.num_samples} (lower num_samples / "
                "image_log_samples)"
            )
        if not callable(network):
            raise ValueError(f"network must be a callable module, got {type(network).__name__}")
        if inferer is not None and not callable(inferer):
            raise ValueError(f"inferer must be callable (inputs, network) -> prediction or None, got {inferer!r}")
        if summary_writer is None and (log_dir is None or str(log_dir) == ""):
            raise ValueError(f"log_dir must be a folder path when no summary_writer is given, got {log_dir!r}")
        if summary_writer is not None and not callable(getattr(summary_writer, "add_image", None)):
            raise ValueError(
                f"summary_writer must have add_image (a SummaryWriter), got {type(summary_writer).__name__}"
            )
        for name, value in (("input_key", input_key), ("reference_key", reference_key), ("tag_prefix", tag_prefix)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(log_at_end, bool):
            raise ValueError(f"log_at_end must be a bool, got {log_at_end!r}")
        self.dataset = dataset
        self.network = network
        self.inferer = _simple_inferer if inferer is None else inferer
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.writer = summary_writer
        self.input_key = input_key
        self.reference_key = reference_key
        self.tag_prefix = tag_prefix.rstrip("/")
        self.device = None if device is None else torch.device(device)
        self.log_at_end = log_at_end
        self._samples: dict[str, Any] | None = None
        self.last_step: int | None = None

    # ------------------------------------------------------------------ ignite
    def attach(self, engine: Engine) -> None:
        """Write at ``EPOCH_COMPLETED(every=interval)`` (and at ``COMPLETED`` with ``log_at_end``)."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)
        if self.log_at_end:
            engine.add_event_handler(Events.COMPLETED, self._at_end)

    def _at_end(self, engine: Engine) -> None:
        if self.last_step != engine.state.iteration:
            self(engine)

    def __call__(self, engine: Engine) -> None:
        """Write the images of this step (``engine.state.iteration``)."""
        self.write(step=int(engine.state.iteration))

    # ------------------------------------------------------------------ work
    def _load(self) -> dict[str, Any]:
        if self._samples is None:
            items = [self.dataset[i] for i in range(self.num_samples)]
            samples: dict[str, Any] = {}
            for key in (self.input_key, self.reference_key):
                images = []
                for index, item in enumerate(items):
                    if key not in item:
                        raise KeyError(f"dataset[{index}] has no {key!r} entry; keys: {sorted(map(str, item))}")
                    image = torch.as_tensor(item[key]).detach().as_subclass(torch.Tensor).float().cpu()
                    if image.ndim != 3 or image.shape[0] != 1:
                        raise ValueError(
                            f"dataset[{index}][{key!r}] must have shape (1, H, W), got {tuple(image.shape)}"
                        )
                    images.append(image)
                samples[key] = torch.stack(images)
                samples[f"{key}_padding"] = [item.get(f"{key}_padding") for item in items]
            self._samples = samples
        return self._samples

    def _device(self) -> torch.device:
        if self.device is not None:
            return self.device
        if isinstance(self.network, torch.nn.Module):
            for parameter in self.network.parameters():
                return parameter.device
        return torch.device("cpu")

    def predict(self) -> torch.Tensor:
        """``inferer(inputs, network)`` for the fixed samples, ``(N, 1, H', W')`` on the CPU (network mode kept)."""
        samples = self._load()
        inputs = samples[self.input_key].to(self._device())
        was_training = self.network.training if isinstance(self.network, torch.nn.Module) else None
        if isinstance(self.network, torch.nn.Module):
            self.network.eval()
        try:
            with torch.no_grad():
                prediction = self.inferer(inputs, self.network)
        finally:
            if isinstance(self.network, torch.nn.Module) and was_training is not None:
                self.network.train(was_training)
        prediction = torch.as_tensor(prediction).detach().as_subclass(torch.Tensor).float().cpu()
        if prediction.ndim != 4 or prediction.shape[:2] != (inputs.shape[0], 1):
            raise ValueError(
                f"the inferer must return (N, 1, H, W) = ({inputs.shape[0]}, 1, ...), got {tuple(prediction.shape)}"
            )
        return prediction

    def _summary_writer(self) -> Any:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        return self.writer

    def write(self, *, step: int) -> None:
        """Predict and write every sample's images at global step ``step``; flushes the writer."""
        samples = self._load()
        prediction = self.predict()
        writer = self._summary_writer()
        padded_shape = tuple(samples[self.reference_key].shape[-2:])
        for i in range(self.num_samples):
            images = {}
            for key in (self.input_key, self.reference_key):
                image = samples[key][i]
                box = samples[f"{key}_padding"][i]
                images[key] = image if box is None else crop_to_box(image, box)
            pred = prediction[i]
            box = samples[f"{self.reference_key}_padding"][i]
            if box is not None and tuple(pred.shape[-2:]) == padded_shape:
                pred = crop_to_box(pred, box)
            reference = images[self.reference_key]
            panels = {
                "input": images[self.input_key],
                "reference": reference,
                "prediction": pred,
            }
            if tuple(pred.shape) == tuple(reference.shape):
                panels["reference_prediction"] = torch.cat([reference, pred], dim=-1)
            for name, image in panels.items():
                # (1, H, W) -> (H, W): plot_2d_or_3d_image min-max scales a 2D image and tags it f"{tag}_HW"
                plot_2d_or_3d_image(image, step, writer, index=0, tag=f"{self.tag_prefix}/{i}/{name}")
        writer.flush()
        self.last_step = step
        logger.debug("wrote %d TensorBoard sample images at step %d", self.num_samples, step)

    def close(self) -> None:
        """Close the writer this handler created (a given ``summary_writer`` is left open)."""
        if self.writer is not None and self.log_dir is not None:
            self.writer.close()
            self.writer = None
