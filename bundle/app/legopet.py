"""LegoPET / cDPM infer task: a 2D sinogram ``.npy`` (1, views, radial) counts -> a 2D activity image (NIfTI).

The pipeline is configs/legopet/inference.json's: ``LoadSinogramd`` → ``ToNetworkUnitsd`` (÷ k_s) →
``PadToSquared`` → :class:`~bundle.inferers.LegoPETInferer` (guided sampling, crop back) →
``FromNetworkUnitsd`` (× scale / c) → NIfTI in the scanner preset's image geometry.

Request keys: ``image`` (the sinogram), ``count_scale`` (c, the sample's counts per activity unit, as the datalist's
``count_scale``; default from the task), ``samples`` (N >= 1, default the task's, 4), ``output``, ``seed``.

With N > 1 the output is the pixel-wise mean of N samples (x_T drawn one after the other from one generator seeded
with ``seed``, :meth:`~bundle.inferers.LegoPETInferer.sample_many`) and ``<stem>_std.nii.gz`` next to it holds their
per-pixel standard deviation (sample std, activity units): the uncertainty map.  The JSON result names both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from bundle._checks import check_int, check_positive
from bundle.data.io import save_image
from bundle.physics import preset
from bundle.transforms.legopet import LoadSinogramd, PadToSquared
from bundle.transforms.scaling import FromNetworkUnitsd, ToNetworkUnitsd

from .task import InferTask, RequestKey, companion_path

__all__ = ["LegoPETInferTask"]


class LegoPETInferTask(InferTask):
    """LegoPET (or cDPM, when the inferer has no PnPNet) as a MONAI Label-style task.

    Args (keyword-only): those of :class:`~bundle.app.task.InferTask` plus
        sinogram_scale: k_s, counts per bin of the training data (``manifest_counts_per_bin``).
        image_scale: the training image scale (``reference_max``).
        count_scale: default c when the request has none; ``None`` makes ``count_scale`` a required request key.
        count_scale_key: ``None`` when the model was trained without count scaling (then c is not used).
        sinogram_shape: (views, radial).
        pad_size: the square the network works on.
        scanner_preset: the preset whose image geometry the output gets (``mmr_2d``).
        samples: default number N >= 1 of samples (module docstring).
    """

    method = "legopet"
    request_keys: Sequence[RequestKey] = (
        RequestKey("image", expected="a .npy sinogram of counts (1, views, radial)", required=True, path=True),
        RequestKey("count_scale", expected="a number > 0: counts per activity unit of the sample (datalist value)"),
        RequestKey("samples", expected="an int >= 1: samples; > 1 writes their mean and <stem>_std.nii.gz"),
    )

    def __init__(
        self,
        *,
        sinogram_scale: float,
        image_scale: float,
        count_scale: float | None = None,
        count_scale_key: str | None = "count_scale",
        sinogram_shape: Sequence[int] = (252, 172),
        pad_size: int = 256,
        scanner_preset: str = "mmr_2d",
        samples: int = 4,
        **kwargs: Any,
    ) -> None:
        from bundle.inferers.legopet import LegoPETInferer

        super().__init__(**kwargs)
        if not isinstance(self.inferer, LegoPETInferer):
            raise TypeError(f"inferer must be a LegoPETInferer, got {type(self.inferer).__name__}")
        self.sinogram_scale = check_positive(sinogram_scale, "sinogram_scale")
        self.image_scale = check_positive(image_scale, "image_scale")
        self.count_scale = None if count_scale is None else check_positive(count_scale, "count_scale")
        self.count_scale_key = count_scale_key
        self.samples = check_int(samples, "samples", minimum=1)
        self.geometry = preset(scanner_preset).image
        self.load = LoadSinogramd(keys="sinogram", expected_shape=tuple(sinogram_shape))
        self.to_network_units = ToNetworkUnitsd(keys="sinogram", scale=self.sinogram_scale, arithmetic="input")
        self.pad = PadToSquared(keys="sinogram", size=pad_size)
        self.to_image_units = FromNetworkUnitsd(keys="pred", scale=self.image_scale, count_scale_key=count_scale_key,
                                                arithmetic="input")

    def _request(self, data: dict) -> dict:
        d = dict(data, sinogram=data["image"])
        if self.count_scale_key is not None:
            c = d.pop("count_scale", self.count_scale)
            if c is None:
                raise ValueError("request['count_scale'] is required: counts per activity unit of the sample (the "
                                 "datalist's count_scale), since the model was trained with count scaling")
            d[self.count_scale_key] = check_positive(c, "count_scale")
        return d

    def pre_transforms(self, data: Mapping[str, Any]) -> Sequence:
        return (self._request, self.load, self.to_network_units, self.pad)

    def run_inferer(self, data: dict) -> dict:
        d = dict(data)
        x = d["sinogram"][None].to(self.device)
        generator = torch.Generator(device=x.device).manual_seed(d["seed"])
        d["samples"] = check_int(d.get("samples", self.samples), "request['samples']", minimum=1)
        draws = self.inferer.sample_many(x, self.network, num_samples=d["samples"], generator=generator)[:, 0]
        draws = draws.to("cpu", torch.float32)  # (N, 1, h, w)
        d["pred"] = draws.mean(dim=0)
        d["pred_std"] = draws.std(dim=0) if d["samples"] > 1 else None
        return d

    def _to_image_units(self, data: dict) -> dict:
        d = dict(data)
        spread = d.pop("pred_std", None)
        if spread is not None:  # x = x' · k: a standard deviation scales by the same k
            d["pred_std"] = self.to_image_units({**d, "pred": spread})["pred"]
        return {**self.to_image_units(d), "pred_std": d.get("pred_std")}

    def post_transforms(self, data: Mapping[str, Any]) -> Sequence:
        return (self._to_image_units,)

    def write(self, data: dict, path: Path) -> dict:
        image = torch.as_tensor(data["pred"]).as_subclass(torch.Tensor)
        if tuple(image.shape) != tuple(self.geometry.shape):
            raise ValueError(f"prediction shape {tuple(image.shape)} must equal the output geometry's "
                             f"{self.geometry.shape}; check pad_size / crop / scanner_preset")
        save_image(path, image, self.geometry)
        entries = {"shape_zyx": list(image.shape), "voxel_size_mm": list(self.geometry.voxel_size_mm),
                   "units": "activity units of the training references", "max": float(image.max()),
                   "samples": data["samples"]}
        if data.get("pred_std") is not None:
            std_file = companion_path(path, "std")
            save_image(std_file, torch.as_tensor(data["pred_std"]).as_subclass(torch.Tensor), self.geometry)
            entries.update(image_is="mean of the samples", std_file=str(std_file),
                           std="per-pixel sample standard deviation of the samples (activity units)")
        return entries
