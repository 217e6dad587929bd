"""uPETe transforms: the dose-reduction forward process; the intensity scaling is :mod:`bundle.transforms.scaling`.

uPETe puts PET in network units with ``ToNetworkUnitsd(statistic="mean", scale=m)``: x' = x / (m · mean(x)).
Why not the paper's per-volume min-max?  The maximum of a low-dose reconstruction is set by its noise: at 10 %
dose the hottest voxels are far above the standard-dose maximum, so min-max puts an LPET and its SPET on
different scales, and a model trained on min-max-scaled SPET sees a darker LPET than any training image.  The
mean of a reconstruction is (nearly) dose-invariant (OSEM keeps the counts), so the mean scaling puts every dose
of a subject on the same scale (m = 10: the mean maps to 0.1).

:class:`RandDoseReductiond` is uPETe's Poisson forward process in the sinogram domain, for patch training: it draws
a step t of a :class:`~bundle.diffusion.poisson.PoissonDoseSchedule`, thins the subject's measured standard-dose
counts to the dose d_t (binomial thinning: an exact Poisson scan at d_t times the counts' expectation, nested in the
standard-dose scan), reconstructs them with OSEM like the dataset's reconstructions, and puts the volume in the
SPET's network units, on the SPET's grid, before the patches are cropped (so x_t and x_0 patches share locations).
:class:`RandDoseLadderd` draws the same x_t from a precomputed dose ladder (:mod:`bundle.data.ladder`) instead:
one OSEM per draw is too slow for CPU training at the small preset.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable

from .._checks import check_int
from ..keys import Keys

__all__ = ["RandDoseLadderd", "RandDoseReductiond"]


class RandDoseReductiond(Randomizable, MapTransform):
    """x_t = OSEM(Binomial(y, d_t)) / (c d_t) / scale_SPET: a dose-reduced reconstruction of the subject's own scan.

    Reads the scan file (:func:`bundle.data.simulate.save_scan`) named by ``scan_key``, draws t ~ U{0, …, T − 1}
    (``schedule``), thins its counts y with survival probability d_t and reconstructs them with
    OSEM(``num_subsets`` × ``num_iterations``) against the scan's forward model with the background scaled by d_t;
    the image (activity units) is divided by the SPET's network-unit divisor ``data[f"{pet_key}_scale"]``
    (``ToNetworkUnitsd(statistic="mean")``) and stored under ``output_key`` as a MetaTensor with ``data[pet_key]``'s
    meta data
    (channel-first, the NIfTI's (x, y, z) axes); t goes to ``timestep_key`` (int64 scalar tensor).  t = 0 (d = 1)
    returns the SPET's own counts' reconstruction.  Loaded scans are kept in memory per file.

    Args (keyword-only):
        schedule: the dose schedule of the Poisson process (its T and d_t).
        num_subsets, num_iterations: OSEM of the dataset's reconstructions (tiny preset: 8 × 4).
        scan_key, pet_key, output_key, timestep_key: data keys.
    """

    def __init__(
        self,
        *,
        schedule,
        num_subsets: int = 8,
        num_iterations: int = 4,
        scan_key: str = Keys.SCAN,
        pet_key: str = Keys.PET,
        output_key: str = "pet_t",
        timestep_key: str = Keys.TIMESTEP,
    ) -> None:
        from ..diffusion.poisson import PoissonDoseSchedule

        MapTransform.__init__(self, [scan_key, pet_key])
        if not isinstance(schedule, PoissonDoseSchedule):
            raise TypeError(f"schedule must be a PoissonDoseSchedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.num_subsets = check_int(num_subsets, "num_subsets", minimum=1)
        self.num_iterations = check_int(num_iterations, "num_iterations", minimum=1)
        self.scan_key, self.pet_key = str(scan_key), str(pet_key)
        self.output_key, self.timestep_key = str(output_key), str(timestep_key)
        self._scans: dict[str, Any] = {}
        self._step, self._seed = 0, 0

    def randomize(self, data: Any = None) -> None:
        self._step = int(self.R.randint(0, self.schedule.num_steps))
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def _scan(self, path: object):
        from ..data.simulate import load_scan

        key = str(Path(str(path)))
        if key not in self._scans:
            self._scans[key] = load_scan(key)
        return self._scans[key]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from ..physics import binomial_thinning

        d = dict(data)
        for key in (self.scan_key, self.pet_key, f"{self.pet_key}_scale"):
            if key not in d:
                raise ValueError(f"data must hold {key!r} (scan file, SPET and its mean-scaling divisor); "
                                 f"got keys {sorted(map(str, d))}")
        scan, image = self._scan(d[self.scan_key])
        pet = d[self.pet_key]
        expected_shape = (1, *reversed(image.shape))
        if tuple(pet.shape) != expected_shape:
            raise ValueError(
                f"data[{self.pet_key!r}] has shape {tuple(pet.shape)} but the scan {d[self.scan_key]} reconstructs "
                f"(1, x, y, z) = {expected_shape}: the PET and its scan file must come from the same subject and grid"
            )
        self.randomize()
        dose = float(self.schedule.dose_at(self._step))
        counts = scan.counts
        if dose < 1.0:
            counts = binomial_thinning(counts, fraction=dose, generator=torch.Generator().manual_seed(self._seed))
        volume = scan.at_dose(dose).reconstruct_osem(counts=counts, num_subsets=self.num_subsets,
                                          num_iterations=self.num_iterations)  # (z, y, x), activity units
        divisor = float(torch.as_tensor(d[f"{self.pet_key}_scale"]).flatten()[0])
        values = (volume.double() / divisor).permute(2, 1, 0)[None].to(torch.float32)
        d[self.output_key] = MetaTensor(values, meta=dict(pet.meta)) if isinstance(pet, MetaTensor) else values
        d[self.timestep_key] = torch.tensor(self._step, dtype=torch.long)
        return d



class RandDoseLadderd(Randomizable, MapTransform):
    """x_t from the subject's precomputed dose ladder (:mod:`bundle.data.ladder`), in the SPET's network units.

    Draws one rung uniformly from the entry's ladder (``ladder_key``: reconstructions, ``dose_key``: their doses)
    plus, with ``include_standard``, the SPET itself (d = 1, t = 0, as :class:`RandDoseReductiond` at t = 0); the
    rung's volume (activity units, channel-first (1, x, y, z) like ``LoadImaged`` + ``EnsureChannelFirstd``) is
    divided by the SPET's divisor ``data[f"{pet_key}_scale"]`` and stored under ``output_key`` with the SPET's
    meta data, its step t = ``schedule.step_for_dose(d)`` under ``timestep_key``.  Loaded rungs are kept in memory.

    Args (keyword-only):
        schedule: the Poisson dose schedule (:class:`~bundle.diffusion.poisson.PoissonDoseSchedule`).
        include_standard: draw the SPET itself as one more rung.
        ladder_key, dose_key, pet_key, output_key, timestep_key: data keys.
    """

    def __init__(
        self,
        *,
        schedule,
        include_standard: bool = True,
        ladder_key: str = "ladder_pet",
        dose_key: str = "ladder_dose",
        pet_key: str = Keys.PET,
        output_key: str = "pet_t",
        timestep_key: str = Keys.TIMESTEP,
    ) -> None:
        from ..diffusion.poisson import PoissonDoseSchedule

        MapTransform.__init__(self, [ladder_key, dose_key, pet_key])
        if not isinstance(schedule, PoissonDoseSchedule):
            raise TypeError(f"schedule must be a PoissonDoseSchedule, got {type(schedule).__name__}")
        if not isinstance(include_standard, bool):
            raise TypeError(f"include_standard must be a bool, got {include_standard!r}")
        self.schedule = schedule
        self.include_standard = include_standard
        self.ladder_key, self.dose_key, self.pet_key = str(ladder_key), str(dose_key), str(pet_key)
        self.output_key, self.timestep_key = str(output_key), str(timestep_key)
        self._volumes: dict[str, torch.Tensor] = {}
        self._fraction = 0.0

    def randomize(self, data: Any = None) -> None:
        self._fraction = float(self.R.uniform())

    def _volume(self, path: object) -> torch.Tensor:
        from ..data.io import load_image

        key = str(path)
        if key not in self._volumes:
            try:
                image, _ = load_image(Path(key))  # (z, y, x); corrupt files raise a ValueError naming the file
            except FileNotFoundError:
                raise FileNotFoundError(f"dose-ladder file {key} does not exist: rebuild the ladder "
                                        "(python -m bundle.data ladder DATASET --doses ...)") from None
            self._volumes[key] = image.permute(2, 1, 0).contiguous()[None]  # (1, x, y, z) as LoadImaged
        return self._volumes[key]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in (self.ladder_key, self.dose_key, self.pet_key, f"{self.pet_key}_scale"):
            if key not in d:
                raise ValueError(f"data must hold {key!r} (the dose ladder, the SPET and its mean-scaling divisor: "
                                 f"python -m bundle.data ladder DATASET --doses ...); got keys {sorted(map(str, d))}")
        files, doses = list(d[self.ladder_key]), [float(v) for v in d[self.dose_key]]
        if not files or len(files) != len(doses) or any(not 0 < v < 1 for v in doses):
            raise ValueError(f"data[{self.ladder_key!r}] and data[{self.dose_key!r}] must pair up ladder files with "
                             f"doses in (0, 1), got {len(files)} files and doses {doses}")
        self.randomize()
        rungs = len(files) + (1 if self.include_standard else 0)
        index = min(int(self._fraction * rungs), rungs - 1)
        pet = d[self.pet_key]
        if index == len(files):  # the SPET itself, d = 1
            values, step = torch.as_tensor(pet).clone(), 0
        else:
            volume = self._volume(files[index])
            if tuple(volume.shape) != tuple(pet.shape):
                raise ValueError(f"dose-ladder file {files[index]} has shape {tuple(volume.shape)} but "
                                 f"data[{self.pet_key!r}] has {tuple(pet.shape)}: the ladder must be built from "
                                 "this dataset's subjects")
            divisor = float(torch.as_tensor(d[f"{self.pet_key}_scale"]).flatten()[0])
            values = (volume.double() / divisor).to(torch.float32)
            step = self.schedule.step_for_dose(doses[index])
        if isinstance(pet, MetaTensor):
            values = MetaTensor(torch.as_tensor(values).as_subclass(torch.Tensor), meta=dict(pet.meta))
        d[self.output_key] = values
        d[self.timestep_key] = torch.tensor(step, dtype=torch.long)
        return d
