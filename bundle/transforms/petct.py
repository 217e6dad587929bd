"""MONAI dictionary transforms for real total-body PET/CT (uPETe preprocessing) and their inversion.

:func:`petct_preprocessing` builds, from stock MONAI transforms plus three of ours, the pipeline of the uPETe
paper (METHODS.md): resample to 2 mm, pad/crop to 256×256×160, PET min-max to [0, 1], CT window to [0, 1],
optionally overlapping 96³ training patches.  Stages, in order:

1. ``LoadImaged`` with the readers ``("ITKReader", "NibabelReader")``, tried last-first: NIfTI files are
   read by nibabel (ITK's NIfTI reader turns NaN into 0, which would hide non-finite input), a folder holding
   one DICOM series and the other ITK formats (MetaImage, NRRD, ...) by ITK.  Then ``EnsureChannelFirstd``
   and ``Orientationd`` (RAS by default).
2. :class:`ValidatePETCTd`: PET present, CT present when required, finite values, PET ≥ 0, PET and CT on the
   same grid (spatial shape and affine) before any resampling.  Nothing is clipped or resampled silently:
   bad input raises :class:`PETCTInputError` (a ``ValueError``), which the pipeline re-raises as such
   instead of MONAI's ``RuntimeError("applying transform ...")`` wrapper.
3. ``Spacingd`` to ``pixdim_mm`` (bilinear for PET and CT).
4. :class:`~bundle.transforms.scaling.ToNetworkUnitsd` with ``statistic="min_max"``: x ↦ (x − min)/(max − min)
   in float64; (min, max) in the file's units (e.g. Bq/ml for DICOM PET, kBq/ml for our phantoms) go into the
   data dict under ``"<pet_key>_scale"`` (a float64 tensor (2,)) and into the PET's ``applied_operations``, so
   :func:`invert_petct_preprocessing` / MONAI ``Invertd`` restore the original units.
5. :class:`CTWindowd`: HU window [lo, hi] (default [−1000, 1000]) ↦ [0, 1]; values outside the window are
   clipped *on purpose* (that is what a window is), so air and everything below lo map to 0.
6. ``ResizeWithPadOrCropd`` to ``spatial_size`` (symmetric; padding with 0 = zero activity for PET and the
   window's lower end, i.e. air, for CT, which is why windowing comes first).
7. Optional ``RandSpatialCropSamplesd`` (``patch_size``, ``num_samples``) seeded by ``seed``.

Array layout follows MONAI, not the physics core: channel-first (C, x, y, z) in the ``axcodes`` orientation
(RAS: x → left, y → anterior, z → superior), so ``spatial_size = (256, 256, 160)`` has 160 axial slices.
The physics arrays (z, y, x) of :mod:`bundle.physics` are ``volume[0].permute(2, 1, 0)`` of these.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandSpatialCropSamplesd,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
)

from ..keys import Keys
from .scaling import ScaleStatistic, ToNetworkUnitsd

__all__ = [
    "CT_WINDOW_HU",
    "PATCH_SIZE",
    "PIXDIM_MM",
    "SPATIAL_SIZE",
    "CTWindowd",
    "PETCTInputError",
    "ValidatePETCTd",
    "invert_petct_preprocessing",
    "petct_preprocessing",
]

PIXDIM_MM: tuple[float, float, float] = (2.0, 2.0, 2.0)
"""Output voxel size of the uPETe preprocessing (mm)."""
SPATIAL_SIZE: tuple[int, int, int] = (256, 256, 160)
"""Output grid (x, y, z) of the uPETe preprocessing (voxels)."""
PATCH_SIZE: tuple[int, int, int] = (96, 96, 96)
"""Training patch size of the uPETe paper (voxels)."""
CT_WINDOW_HU: tuple[float, float] = (-1000.0, 1000.0)
"""Default CT window (HU) mapped to [0, 1]."""
_ORIENTATION_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))  # axcodes letters mean RAS-world directions


class PETCTInputError(ValueError):
    """Bad PET/CT input data (missing key, non-finite or negative values, mismatched grids)."""


class _PETCTCompose(Compose):
    """``Compose`` that lets a :class:`PETCTInputError` through instead of wrapping it in a ``RuntimeError``."""

    def __call__(self, input_, start=0, end=None, threading=False, lazy: bool | None = None):
        try:
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        except RuntimeError as error:
            cause: BaseException | None = error
            while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, PETCTInputError):
                raise cause from None
            raise


def _plain_keys(keys: tuple[Hashable, ...]) -> tuple[Hashable, ...]:
    """``Keys`` members as plain ``str`` so that messages and derived keys read ``'pet'``."""
    return tuple(str(k) if isinstance(k, str) else k for k in keys)


def _check_key(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str, got {value!r}")


def _describe(image: Any) -> str:
    shape = tuple(image.shape[1:]) if hasattr(image, "shape") else "?"
    if isinstance(image, MetaTensor):
        affine = np.array2string(image.affine.numpy(), precision=4, suppress_small=True).replace("\n", "")
        return f"spatial shape {shape}, affine {affine}"
    return f"spatial shape {shape}"


class ValidatePETCTd(MapTransform):
    """Reject PET/CT input that the rest of the pipeline would otherwise hide (failures: :class:`PETCTInputError`).

    Checks: the PET key is present; the CT key is present when ``require_ct``; every present volume is finite;
    PET ≥ 0 (reconstructed activity; negative values are reported, never clipped); PET and CT have the same
    spatial shape and affines equal within ``grid_tolerance_mm`` (element-wise, mm).  Data pass unchanged.
    """

    def __init__(
        self,
        *,
        pet_key: str = Keys.PET,
        ct_key: str | None = Keys.CT,
        require_ct: bool = True,
        grid_tolerance_mm: float = 1e-3,
    ) -> None:
        _check_key(pet_key, "pet_key")
        if ct_key is not None:
            _check_key(ct_key, "ct_key")
        if (
            isinstance(grid_tolerance_mm, bool)
            or not isinstance(grid_tolerance_mm, int | float)
            or not (math.isfinite(grid_tolerance_mm) and grid_tolerance_mm >= 0)
        ):
            raise ValueError(f"grid_tolerance_mm must be a finite number >= 0, got {grid_tolerance_mm!r}")
        keys = [str(pet_key)] if ct_key is None else [str(pet_key), str(ct_key)]
        super().__init__(keys, allow_missing_keys=True)
        self.pet_key, self.ct_key = str(pet_key), None if ct_key is None else str(ct_key)
        self.require_ct = bool(require_ct) and ct_key is not None
        self.grid_tolerance_mm = float(grid_tolerance_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = sorted(str(k) for k in d)
        if self.pet_key not in d:
            raise PETCTInputError(f"data must contain the PET key {self.pet_key!r}, got keys {present}")
        if self.require_ct and self.ct_key not in d:
            raise PETCTInputError(
                f"data must contain the CT key {self.ct_key!r} (require_ct=True), got keys {present}; "
                "pass require_ct=False for PET-only data"
            )
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            finite = torch.isfinite(image)
            if not bool(finite.all()):
                raise PETCTInputError(
                    f"{key!r} must hold finite values only, found {int((~finite).sum())} NaN/inf voxels "
                    f"of {image.numel()}"
                )
        pet = torch.as_tensor(d[self.pet_key])
        if pet.numel() and float(pet.min()) < 0:
            raise PETCTInputError(
                f"{self.pet_key!r} must be non-negative activity, found {int((pet < 0).sum())} negative voxels "
                f"(min {float(pet.min()):.6g}); fix or clip the reconstruction explicitly before this pipeline"
            )
        if self.ct_key is not None and self.ct_key in d:
            self._check_same_grid(d[self.pet_key], d[self.ct_key])
        return d

    def _check_same_grid(self, pet: Any, ct: Any) -> None:
        same_shape = tuple(pet.shape[1:]) == tuple(ct.shape[1:])
        same_affine = True
        if isinstance(pet, MetaTensor) and isinstance(ct, MetaTensor):
            same_affine = bool(
                torch.allclose(pet.affine.double(), ct.affine.double(), rtol=0.0, atol=self.grid_tolerance_mm)
            )
        if not (same_shape and same_affine):
            raise PETCTInputError(
                f"PET {self.pet_key!r} and CT {self.ct_key!r} must be on the same grid (tolerance "
                f"{self.grid_tolerance_mm} mm) before resampling; got PET {_describe(pet)} and CT {_describe(ct)}. "
                "Resample the CT to the PET grid first (e.g. MONAI ResampleToMatchd with HU-aware padding)."
            )


class CTWindowd(ScaleIntensityRanged):
    """CT window: HU in [lo, hi] ↦ [0, 1] linearly, values outside the window clipped to 0 or 1 (float32).

    ``window_hu`` defaults to [−1000, 1000] HU (air → 0, water → 0.5, 1000 HU → 1; dense bone above 1000 HU
    saturates at 1).  The clipping is explicit: a window discards what lies outside it, so this transform is
    not invertible.  Built on MONAI ``ScaleIntensityRanged`` with ``clip=True``.
    """

    def __init__(
        self,
        keys: KeysCollection = Keys.CT,
        *,
        window_hu: Sequence[float] = CT_WINDOW_HU,
        allow_missing_keys: bool = False,
    ) -> None:
        window = tuple(window_hu)
        if len(window) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in window
        ):
            raise ValueError(f"window_hu must be two finite numbers (lo, hi), got {window_hu!r}")
        if not window[0] < window[1]:
            raise ValueError(f"window_hu must have lo < hi, got {window_hu!r}")
        super().__init__(
            keys, a_min=float(window[0]), a_max=float(window[1]), b_min=0.0, b_max=1.0, clip=True,
            dtype=np.float32, allow_missing_keys=allow_missing_keys,
        )
        self.keys = _plain_keys(self.keys)
        self.window_hu = (float(window[0]), float(window[1]))


def _check_sizes(values: Any, name: str, *, allow_keep: bool) -> tuple[int, int, int]:
    sizes = tuple(values) if isinstance(values, Sequence) else ()
    ok = len(sizes) == 3 and all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in sizes)
    if not ok or not all(s > 0 or (allow_keep and s == -1) for s in sizes):
        expected = "three positive ints (-1 keeps that axis)" if allow_keep else "three positive ints"
        raise ValueError(f"{name} must be {expected}, got {values!r}")
    return tuple(int(s) for s in sizes)  # type: ignore[return-value]


def petct_preprocessing(
    *,
    pet_key: str = Keys.PET,
    ct_key: str | None = Keys.CT,
    require_ct: bool = True,
    pixdim_mm: Sequence[float] = PIXDIM_MM,
    spatial_size: Sequence[int] = SPATIAL_SIZE,
    axcodes: str = "RAS",
    ct_window_hu: Sequence[float] = CT_WINDOW_HU,
    grid_tolerance_mm: float = 1e-3,
    patch_size: Sequence[int] | None = None,
    num_samples: int = 4,
    seed: int = 0,
    reader: str | Sequence[str] = ("ITKReader", "NibabelReader"),
) -> Compose:
    """The uPETe PET/CT preprocessing as a MONAI ``Compose`` (stages in the module docstring).

    Input: a dict with file paths (or DICOM series folders) under ``pet_key`` and, unless ``ct_key`` is None
    or ``require_ct`` is False, ``ct_key``.  Output: the same keys as MetaTensors (1, *spatial_size) in [0, 1]
    at ``pixdim_mm``, plus ``f"{pet_key}_scale"`` = [min, max] of the resampled PET in its file units.  With
    ``patch_size`` (e.g. :data:`PATCH_SIZE` for training) the output is a list of ``num_samples`` dicts
    with random (pet, ct) patches of that size, reproducible through ``seed``.
    ``spatial_size`` entries of −1 keep that axis' resampled size (e.g. the whole total-body length).
    ``reader``: MONAI reader name(s) for ``LoadImaged`` (several are tried last-first; see the module docstring).
    Input errors raise :class:`PETCTInputError` (a ``ValueError``) from the returned pipeline.
    """
    _check_key(pet_key, "pet_key")
    pet_key = str(pet_key)
    if ct_key is not None:
        _check_key(ct_key, "ct_key")
        ct_key = str(ct_key)
        if ct_key == pet_key:
            raise ValueError(f"ct_key must differ from pet_key, both are {pet_key!r}")
    pixdim = tuple(pixdim_mm) if isinstance(pixdim_mm, Sequence) else ()
    if len(pixdim) != 3 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in pixdim
    ):
        raise ValueError(f"pixdim_mm must be three positive finite numbers (mm), got {pixdim_mm!r}")
    size = _check_sizes(spatial_size, "spatial_size", allow_keep=True)
    if not isinstance(axcodes, str) or len(axcodes) != 3:
        raise ValueError(f"axcodes must be a 3-letter orientation code such as 'RAS', got {axcodes!r}")
    keys = [pet_key] if ct_key is None else [pet_key, ct_key]
    stages: list[Any] = [
        LoadImaged(keys, reader=reader if isinstance(reader, str) else list(reader), image_only=True,
                   allow_missing_keys=True),
        EnsureChannelFirstd(keys, allow_missing_keys=True),
        Orientationd(keys, axcodes=axcodes, labels=_ORIENTATION_LABELS, allow_missing_keys=True),
        ValidatePETCTd(
            pet_key=pet_key, ct_key=ct_key, require_ct=require_ct, grid_tolerance_mm=grid_tolerance_mm
        ),
        Spacingd(keys, pixdim=pixdim, mode=["bilinear"] * len(keys), allow_missing_keys=True),
        ToNetworkUnitsd(pet_key, statistic=ScaleStatistic.MIN_MAX),
    ]
    if ct_key is not None:
        stages.append(CTWindowd(ct_key, window_hu=ct_window_hu, allow_missing_keys=True))
    stages.append(ResizeWithPadOrCropd(keys, spatial_size=size, allow_missing_keys=True))
    if patch_size is not None:
        patch = _check_sizes(patch_size, "patch_size", allow_keep=False)
        if any(0 < s < p for s, p in zip(size, patch, strict=True)):
            raise ValueError(f"patch_size must fit into spatial_size={size}, got {patch}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        stages.append(RandSpatialCropSamplesd(
            keys, roi_size=patch, num_samples=num_samples, random_size=False, allow_missing_keys=True
        ))
    pipeline = _PETCTCompose(stages)
    if patch_size is not None:
        stages[-1].set_random_state(seed=seed)  # after Compose.__init__, which re-seeds its members
    return pipeline


def invert_petct_preprocessing(
    preprocessing: Compose, *, prediction: torch.Tensor, reference: MetaTensor, pet_key: str = Keys.PET
) -> MetaTensor:
    """Map a network output on the preprocessed grid back to the input PET's grid and units (MONAI ``Invertd``).

    ``prediction``: (C, *spatial_size) in the scaled [0, 1] PET units (one sample, no batch dimension; use
    ``monai.data.decollate_batch`` first).  ``reference``: the preprocessed PET MetaTensor of the same sample
    (its ``applied_operations`` say how to undo each stage).  ``preprocessing`` must be the (patch-free)
    ``Compose`` that produced ``reference``.  Returns a MetaTensor (C, *input spatial shape) in the input's
    units with the input's affine: inverse crop/pad, inverse resampling (bilinear), inverse orientation and
    x = x' (max − min) + min.
    """
    if not isinstance(preprocessing, Compose):
        raise TypeError(f"preprocessing must be a monai.transforms.Compose, got {type(preprocessing).__name__}")
    if any(isinstance(t, RandSpatialCropSamplesd) for t in preprocessing.flatten().transforms):
        raise ValueError("preprocessing must be built without patch_size to be inverted (whole volumes only)")
    if not isinstance(reference, MetaTensor) or not reference.applied_operations:
        raise ValueError("reference must be the preprocessed PET MetaTensor with its applied_operations")
    if not isinstance(prediction, torch.Tensor) or prediction.ndim != reference.ndim:
        raise ValueError(
            f"prediction must be a channel-first tensor with {reference.ndim} dims like reference "
            f"{tuple(reference.shape)}, got {getattr(prediction, 'shape', type(prediction).__name__)}"
        )
    if tuple(prediction.shape[1:]) != tuple(reference.shape[1:]):
        raise ValueError(
            f"prediction spatial shape must equal reference's {tuple(reference.shape[1:])}, "
            f"got {tuple(prediction.shape[1:])}"
        )
    pet_key = str(pet_key)
    pred_key = f"{pet_key}_prediction"
    inverter = Invertd(keys=pred_key, transform=preprocessing, orig_keys=pet_key, nearest_interp=False)
    # Invertd takes the transform trace from the reference; a plain tensor must become a MetaTensor to get it
    pred = prediction if isinstance(prediction, MetaTensor) else MetaTensor(prediction)
    return inverter({pred_key: pred, pet_key: reference})[pred_key]
