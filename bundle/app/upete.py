"""uPETe infer task: low-dose 3D PET (+ CT on the same grid) -> enhanced 3D PET (NIfTI, the input's grid and units).

Images are read with MONAI ``LoadImaged`` (NIfTI through nibabel, a DICOM series folder through ITK); the steps
are: ``ValidatePETCTd`` → ``ToNetworkUnitsd`` (÷ m · mean) → ``CTWindowd`` → ``LatentEnhancementInferer`` → × the
stored scale → NIfTI with the input affine.  The ``inferring`` id of configs/upete/inference.json runs this task too.

Request keys: ``image`` (low-dose PET), ``ct`` (required when the model uses CT-guided attention), ``dose`` (dose
fraction of the input, default: estimated by the inferer), ``output``, ``seed``.

The uPETe modules are imported when the task is built, not when this module is imported; if they are missing
:func:`require_upete` raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .task import InferTask, RequestKey

__all__ = ["UPETeInferTask", "require_upete"]


def require_upete() -> Any:
    """``bundle.inferers.upete`` (with ``LatentEnhancementInferer``), or an ``ImportError`` naming what is missing."""
    try:
        module = importlib.import_module("bundle.inferers.upete")
        module.LatentEnhancementInferer  # noqa: B018 - the attribute the task needs
    except (ImportError, AttributeError) as error:
        raise ImportError(
            "uPETe inference needs bundle.inferers.upete.LatentEnhancementInferer, which is not available in this "
            f"installation ({type(error).__name__}: {error}); update the package or use --method legopet / petdds"
        ) from error
    return module


_FLAGS = {"image": "--image (low-dose PET)", "ct": "--ct (CT)"}


def _load_volumes(data: dict, keys: Sequence[str]) -> dict:
    """MONAI ``LoadImage`` of each path in ``keys`` (NIfTI file or DICOM series folder) -> (x, y, z) MetaTensor;
    a file that cannot be read, or an image that is not one 3D volume, is a ``ValueError`` naming the argument."""
    from monai.transforms import LoadImage

    d = dict(data)
    for key in keys:
        path = d[key]
        try:
            volume = LoadImage(image_only=True)(path)
        except Exception as error:  # nibabel / ITK raise many types for truncated or garbage files
            cause = " ".join(f"{type(error).__name__}: {error}".split())[:200]
            raise ValueError(f"request[{key!r}] ({_FLAGS[key]}) must be a readable NIfTI file or DICOM series folder; "
                             f"{path} could not be read ({cause})") from None
        if volume.ndim != 3 and not (volume.ndim == 4 and volume.shape[-1] == 1):  # (x, y, z, 1): one volume
            kind = {2: "a 2D image (one slice)", 4: "a 4D image (a time series or several channels)"}.get(
                volume.ndim, f"a {volume.ndim}D image")
            raise ValueError(f"request[{key!r}] ({_FLAGS[key]}) must be one 3D volume (x, y, z); {path} holds {kind} "
                             f"of shape {tuple(volume.shape)}")
        d[key] = volume
    return d


class UPETeInferTask(InferTask):
    """uPETe enhancement as a MONAI Label-style task (module docstring for the request).

    Args (keyword-only): those of :class:`~bundle.app.task.InferTask` plus
        mean_multiple: m of the PET scaling x / (m · mean(x)) the model was trained with.
        ct_window_hu: CT window (HU) of the training transforms.
        uses_ct: whether the model needs a CT (default: the network's ``uses_ct`` attribute, else ``True``).
        variant: the ablation variant of the weights (``"LDM-P-CT"`` ...), reported in the result JSON.
        calibration: the :class:`~bundle.checkpoint.Calibration` the inferer was built with.
        settings: the training settings stored with the weights (config id -> value).
        ``variant``, ``calibration`` and ``settings`` come from the combined checkpoint
        (:mod:`bundle.checkpoint.upete`); the model-zoo export writes them back into ``models/model.pt``.
    """

    method = "upete"
    request_keys: Sequence[RequestKey] = (
        RequestKey("image", expected="a low-dose PET NIfTI file or DICOM series folder", required=True, path=True),
        RequestKey("ct", expected="a CT NIfTI file or DICOM series folder on the PET grid (Hounsfield units)",
                   path=True),
        RequestKey("dose", expected="the input's dose fraction in (0, 1] (default: estimated)"),
    )

    def __init__(
        self,
        *,
        mean_multiple: float = 10.0,
        ct_window_hu: Sequence[float] = (-1000.0, 1000.0),
        uses_ct: bool | None = None,
        variant: str | None = None,
        calibration: Any = None,
        settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(mean_multiple, bool) or not isinstance(mean_multiple, int | float) or not mean_multiple > 0:
            raise ValueError(f"mean_multiple must be a number > 0, got {mean_multiple!r}")
        if len(ct_window_hu) != 2 or not ct_window_hu[0] < ct_window_hu[1]:
            raise ValueError(f"ct_window_hu must be (low, high) with low < high, got {tuple(ct_window_hu)!r}")
        self.mean_multiple = float(mean_multiple)
        self.ct_window_hu = tuple(float(v) for v in ct_window_hu)
        self.uses_ct = bool(getattr(self.network, "uses_ct", True)) if uses_ct is None else bool(uses_ct)
        if variant is not None and not isinstance(variant, str):
            raise ValueError(f"variant must be a variant name such as 'LDM-P-CT' or None, got {variant!r}")
        if settings is not None and not isinstance(settings, Mapping):
            raise ValueError(f"settings must be a mapping config id -> value or None, got {type(settings).__name__}")
        self.variant = variant
        self.calibration = calibration
        self.settings = dict(settings or {})

    def pre_transforms(self, data: Mapping[str, Any]) -> Sequence:
        from monai.transforms import EnsureChannelFirstd

        from bundle.transforms.petct import CTWindowd, ValidatePETCTd
        from bundle.transforms.scaling import ToNetworkUnitsd

        if self.uses_ct and "ct" not in data:
            raise ValueError("request['ct'] is required: this model uses CT-guided attention; pass a CT NIfTI file or "
                             "DICOM series folder on the PET grid")
        has_ct = "ct" in data
        keys = ["image", "ct"] if has_ct else ["image"]
        steps = [lambda d: _load_volumes(d, keys), EnsureChannelFirstd(keys=keys),
                 ValidatePETCTd(pet_key="image", ct_key="ct" if has_ct else None, require_ct=has_ct),
                 ToNetworkUnitsd(keys="image", statistic="mean", scale=self.mean_multiple)]
        if has_ct:
            steps.append(CTWindowd(keys="ct", window_hu=self.ct_window_hu))
        return (self._keep_path, *steps)

    @staticmethod
    def _keep_path(data: dict) -> dict:
        return dict(data, image_path=data["image"])

    def run_inferer(self, data: dict) -> dict:
        d = dict(data)
        dose = d.get("dose")
        if dose is not None and (isinstance(dose, bool) or not isinstance(dose, int | float)
                                 or not math.isfinite(dose) or not 0 < dose <= 1):
            raise ValueError(f"dose must be a dose fraction in (0, 1], got {dose!r}")
        x = d["image"].as_tensor()[None].float().to(self.device)
        ct = d["ct"].as_tensor()[None].float().to(self.device) if self.uses_ct else None
        generator = torch.Generator().manual_seed(d["seed"])
        y = self.inferer(x, self.network, ct=ct, dose=dose, generator=generator)
        d["pred"] = (y[0, 0].double().cpu() * float(torch.as_tensor(d["image_scale"]).flatten()[0])).float()
        return d

    def write(self, data: dict, path: Path) -> dict:
        import nibabel as nib
        import numpy as np

        affine = np.asarray(data["image"].affine, dtype=np.float64)
        values = data["pred"].numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(values, affine), str(path))
        spacing = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
        return {"shape": list(values.shape), "voxel_size_mm": spacing, "variant": self.variant,
                "units": "the input PET's units", "max": float(values.max()), "image": data["image_path"]}
