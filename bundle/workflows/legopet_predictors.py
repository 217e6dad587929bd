"""LegoPET evaluation predictors: adapters ``(B, 1, S, S)`` padded sinograms in network units → ``(B, 1, h, w)``
images in network units (the :data:`Predictor` contract), one per kind of row of the method table, and
:func:`predict`, which runs one over dataset slices and converts to activity units.

- :class:`RegressionPredictor`: DeepPET / PnPNet / the GAN generators, one forward pass cropped to the image.
- :class:`DiffusionPredictor`: cDPM / LegoPET, a :class:`~bundle.inferers.legopet.LegoPETInferer` sample with one
  seeded generator per predictor; its network is wrapped in :class:`CountingNetwork` for the NFE.
- :func:`gan_predictors`: the optional cGAN / Pix2Pix rows from their checkpoints.
- :func:`image_condition_predictors`: the optional rows of the image-condition extension (beyond the paper).

They are evaluation glue (crop to the unpadded slice, a random stream shared across batches, NFE counting), used only
by the studies in :mod:`bundle.workflows.legopet`, :mod:`bundle.workflows.legopet_studies` and
:mod:`bundle.workflows.legopet_diagnostics`; inference uses the inferer itself (:mod:`bundle.app.legopet`).
Importing runs nothing.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle.checkpoint import load_weights
from bundle.data.legopet import LegoPETSample
from bundle.inferers.legopet import LegoPETInferer
from bundle.transforms.legopet import crop_box

from .._checks import check_int

__all__ = [
    "GAN_METHODS",
    "IMAGE_CONDITION_METHODS",
    "CountingNetwork",
    "DiffusionPredictor",
    "Predictor",
    "RegressionPredictor",
    "gan_predictors",
    "image_condition_predictors",
    "predict",
]

GAN_METHODS: tuple[str, ...] = ("cGAN", "Pix2Pix")
"""The optional GAN rows (:func:`gan_predictors`)."""

Predictor = Callable[[torch.Tensor], torch.Tensor]
"""``(B, 1, S, S)`` padded sinograms in network units → ``(B, 1, h, w)`` unpadded images in network units."""


class CountingNetwork(torch.nn.Module):
    """Wraps a network and counts its calls and the images passed through it (for NFE)."""

    def __init__(self, network: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network).__name__}")
        self.network = network
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        self.images += int(x.shape[0])
        return self.network(x, *args, **kwargs)


class RegressionPredictor:
    """DeepPET / PnPNet: ``network(s)`` cropped to the unpadded image ``crop = (top, left, h, w)``."""

    def __init__(self, *, network: Callable[[torch.Tensor], torch.Tensor], crop: Sequence[int]) -> None:
        if not callable(network):
            raise TypeError(f"network must be callable, got {type(network).__name__}")
        self.network = network
        self.crop = tuple(int(c) for c in crop)

    @torch.no_grad()
    def __call__(self, sinogram: torch.Tensor) -> torch.Tensor:
        return crop_box(self.network(sinogram), self.crop)


class DiffusionPredictor:
    """cDPM / LegoPET: ``inferer(s, network, generator=…)`` with one generator per predictor (seeded once, on the
    inputs' device at the first call), so consecutive batches continue one random stream.

    With ``num_samples`` N > 1 it returns the N samples of every slice as channels, ``(B, N, h, w)``
    (:meth:`LegoPETInferer.sample_many`; sample 0 is the single-sample row, the mean of the N the posterior-mean row
    and their per-pixel standard deviation the uncertainty map of the evaluation)."""

    def __init__(self, *, network: Callable[..., torch.Tensor], inferer: LegoPETInferer, seed: int = 0,
                 num_samples: int = 1) -> None:
        if not isinstance(inferer, LegoPETInferer):
            raise TypeError(f"inferer must be a LegoPETInferer, got {type(inferer).__name__}")
        self.network = CountingNetwork(network)
        self.inferer = inferer
        self.seed = check_int(seed, "seed", minimum=0)
        self.num_samples = check_int(num_samples, "num_samples", minimum=1)
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def __call__(self, sinogram: torch.Tensor) -> torch.Tensor:
        if self.generator is None or self.generator.device.type != sinogram.device.type:
            self.generator = torch.Generator(device=sinogram.device).manual_seed(self.seed)
        if self.num_samples == 1:
            return self.inferer(sinogram, self.network, generator=self.generator)
        samples = self.inferer.sample_many(sinogram, self.network, num_samples=self.num_samples,
                                           generator=self.generator)
        return samples[:, :, 0].transpose(0, 1)  # (N, B, 1, h, w) -> (B, N, h, w)


def _requested_rows(rows: object, *, option: str, allowed: Sequence[str]) -> list[str]:
    """``rows`` as a list of distinct names among ``allowed`` (``TypeError`` / ``ValueError`` naming ``option``)."""
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise TypeError(f"{option} must be a list of names among {list(allowed)}, got {rows!r}")
    rows = list(rows)
    if any(r not in allowed for r in rows) or len(set(rows)) != len(rows):
        raise ValueError(f"{option} must name distinct rows among {list(allowed)}, got {rows!r}")
    return rows


def _row_checkpoints(
    rows: list[str], checkpoints: object, *, option: str, hint: Callable[[str], str]
) -> dict[str, Path]:
    """``{row: existing checkpoint}``: ``ValueError`` for a row without an entry, ``FileNotFoundError`` naming the
    missing file and ``hint(row)`` (how to make it)."""
    if not isinstance(checkpoints, Mapping) or any(r not in checkpoints for r in rows):
        raise ValueError(f"checkpoints must map every requested row {rows} to a checkpoint path, got {checkpoints!r}")
    paths = {}
    for row in rows:
        paths[row] = Path(checkpoints[row])
        if not paths[row].is_file():
            raise FileNotFoundError(f"{option} requests the {row} row, but its checkpoint {paths[row]} does not "
                                    f"exist: {hint(row)}")
    return paths


IMAGE_CONDITION_METHODS: tuple[str, ...] = ("cDPM + image condition", "LegoPET + image condition")
"""The optional rows of the image-condition extension (:func:`image_condition_predictors`)."""


def image_condition_predictors(
    rows: Sequence[str],
    *,
    network: torch.nn.Module,
    sampler: LegoPETInferer,
    checkpoints: Mapping[str, str | Path],
    use_ema: bool = True,
    num_samples: int = 1,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, DiffusionPredictor]:
    """The image-condition rows (beyond the paper): ``{row: DiffusionPredictor}`` for every name in ``rows``.

    Args:
        rows: names among :data:`IMAGE_CONDITION_METHODS` (``[]``: returns ``{}``).
        network: the denoiser with ``condition_channels=2`` (copied per row, weights from ``checkpoints[row]``).
        sampler: LegoPET's sampler (PnPNet, steps, λ2, crop, standardisation); the rows use it with
            ``pnpnet_image`` on and, for the cDPM row, ``pnpnet_features`` off.
        checkpoints: ``{row: path}`` of the trainings (``results/<legopet_image|cdpm_image>/checkpoints/…``).

    Raises:
        ValueError: an unknown or repeated row, a row without a checkpoint entry, or a sampler without PnPNet.
        FileNotFoundError: a requested row's checkpoint does not exist (the message names it).
    """
    rows = _requested_rows(rows, option="extension_rows", allowed=IMAGE_CONDITION_METHODS)
    if not rows:
        return {}
    if not isinstance(sampler, LegoPETInferer) or sampler.pnpnet is None:
        raise ValueError("the image-condition rows need LegoPET's sampler with its PnPNet (legopet_sampler)")
    paths = _row_checkpoints(rows, checkpoints, option="extension_rows", hint=lambda row: (
        "train it (recipe legopet/legopet_image or legopet/cdpm_image) or set --legopet_image_ckpt / "
        "--cdpm_image_ckpt"))
    predictors = {}
    for row, path in paths.items():
        inferer = copy.copy(sampler)
        inferer.pnpnet_image = True
        inferer.pnpnet_features = row.startswith("LegoPET")
        net = load_weights(copy.deepcopy(network), path, use_ema=use_ema)
        predictors[row] = DiffusionPredictor(network=net if device is None else net.to(device), inferer=inferer,
                                             seed=seed, num_samples=num_samples)
    return predictors


def gan_predictors(
    rows: Sequence[str],
    *,
    generator: torch.nn.Module | None,
    checkpoints: Mapping[str, str | Path],
    crop: Sequence[int],
    device: torch.device | str | None = None,
) -> dict[str, RegressionPredictor]:
    """The GAN rows of the table: ``{row: RegressionPredictor}`` for every name in ``rows``, each a copy of
    ``generator`` with the ``network`` weights of ``checkpoints[row]`` (no EMA), in eval mode on ``device``.

    Args:
        rows: names among :data:`GAN_METHODS` (``[]`` = no GAN rows: returns ``{}`` and needs nothing else).
        generator: the generator architecture (``configs/legopet/gan.json``'s ``generator_def``); ``None`` is
            allowed only without rows.
        checkpoints: ``{row: path}``, e.g. ``<output_dir>/cgan/checkpoints/cgan_final.pt``.
        crop: ``(top, left, h, w)`` of the unpadded image, as :class:`RegressionPredictor`.

    Raises:
        TypeError: ``rows`` is no sequence of names, or rows are requested without a generator module.
        ValueError: an unknown or repeated row, or a row without an entry in ``checkpoints``.
        FileNotFoundError: a requested row's checkpoint does not exist (the message names the file and the option
            that sets it).
    """
    rows = _requested_rows(rows, option="gan_rows", allowed=GAN_METHODS)
    if not rows:
        return {}
    if not isinstance(generator, torch.nn.Module):
        raise TypeError(f"gan_rows {rows} need the generator network (generator_def: layer configs/legopet/gan.json "
                        f"after configs/legopet/evaluate.json), got {type(generator).__name__}")
    paths = _row_checkpoints(rows, checkpoints, option="gan_rows", hint=lambda row: (
        f"train it (configs/legopet/gan.json + configs/legopet/{row.lower()}.json) or set --{row.lower()}_ckpt"))
    predictors = {}
    for row, path in paths.items():
        network = load_weights(copy.deepcopy(generator), path)
        predictors[row] = RegressionPredictor(network=network if device is None else network.to(device), crop=crop)
    return predictors


# ---------------------------------------------------------------------------------------------------- running
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict(
    predictor: Predictor, samples: Sequence[LegoPETSample], *, batch_size: int, device: torch.device
) -> tuple[list[torch.Tensor], list[float]]:
    """``predictor`` on ``samples`` in batches of ``batch_size`` on ``device``: activity-unit images ``(h, w)`` (CPU;
    x = x' · ``image_divisor`` of each sample), or ``(N, h, w)`` for a predictor that returns N > 1 samples per slice,
    and wall-clock seconds per slice (batch time / batch size, CUDA synchronised)."""
    images, seconds = [], []
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        s = torch.stack([b.sinogram for b in batch]).to(device)
        _sync(device)
        t0 = time.perf_counter()
        out = predictor(s)
        _sync(device)
        elapsed = (time.perf_counter() - t0) / len(batch)
        h, w = batch[0].reference.shape
        if out.ndim != 4 or out.shape[0] != len(batch) or tuple(out.shape[2:]) != (h, w):
            raise ValueError(f"predictor must return (B, 1 or N samples, {h}, {w}) images, got {tuple(out.shape)}")
        for b, image in zip(batch, out.float().cpu(), strict=True):
            images.append((image[0] if image.shape[0] == 1 else image) * b.image_divisor)
            seconds.append(elapsed)
    return images, seconds
