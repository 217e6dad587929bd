"""A precomputed dose ladder of a uPETe dataset: sinogram-domain Poisson degradations made once, drawn in training.

uPETe's Poisson diffusion degrades a standard-dose scan x_0 to the dose d_t of step t in the sinogram domain
(Jiang et al., MICCAI 2023, eq. (1); :mod:`bundle.diffusion.poisson`)::

    x_t = OSEM(Binomial(y, d_t)) / d_t,      y the subject's measured standard-dose counts (scan.npz)

Binomial thinning of measured counts is an exact Poisson scan at the lower dose (list-mode dose reduction), so x_t
has the correlated noise and the resolution of a real low-dose reconstruction, as the test LPETs do.  Drawing it
on the fly (:class:`~bundle.transforms.upete.RandDoseReductiond`) costs one OSEM per training draw: about 4 s for a
96 × 96 × 32 volume on 2 CPU cores, twice the network's iteration.  The ladder makes ``realisations`` thinned
reconstructions per subject at each of a few ``doses`` once (``python -m bundle.data ladder``), and training draws
one of them (:class:`~bundle.transforms.upete.RandDoseLadderd`): the same process restricted to the rungs, with a
fixed pool of noise realisations per rung.

Files: ``samples/<id>/ladder/pet_d<dose>_r<k>.nii.gz`` (activity units, the SPET's grid and OSEM);
``ladder.json`` in the dataset root records the doses, realisations, seed and OSEM, and the datalist entries of the
laddered splits gain ``ladder_pet`` (the files) and ``ladder_dose`` (their doses), which
``load_decathlon_datalist`` resolves like any other path.  Rebuilding with other settings is refused; an
interrupted build resumes (every file is written atomically).  Importing runs nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..progress import progress_bar
from .io import atomic_write, save_image
from .manifest import read_manifest

__all__ = ["LADDER_DOSE_KEY", "LADDER_FILE", "LADDER_PET_KEY", "build_dose_ladder", "ladder_file_name"]

LADDER_FILE = "ladder.json"
LADDER_PET_KEY = "ladder_pet"
LADDER_DOSE_KEY = "ladder_dose"
_SPLITS = ("training", "validation", "test")


def ladder_file_name(dose: float, realisation: int) -> str:
    """``pet_d<dose>_r<k>.nii.gz`` (dose with ``:g``)."""
    return f"pet_d{dose:g}_r{realisation}.nii.gz"


def _check_doses(doses: object) -> tuple[float, ...]:
    try:
        values = tuple(float(d) for d in doses)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"doses must be a sequence of dose fractions in (0, 1), got {doses!r}") from None
    if not values or any(not (math.isfinite(d) and 0 < d < 1) for d in values):
        raise ValueError(f"doses must be a non-empty sequence of dose fractions in (0, 1), got {doses!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"doses must be distinct, got {doses!r}")
    return tuple(sorted(values))


def build_dose_ladder(
    dataset_dir: str | Path,
    *,
    doses: Sequence[float],
    realisations: int = 2,
    splits: Sequence[str] = ("training",),
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the dose ladder of the uPETe dataset in ``dataset_dir`` (module docstring); returns ``ladder.json``.

    Args (keyword-only):
        doses: dose fractions in (0, 1) of the rungs (the standard dose itself is the SPET, d = 1).
        realisations: thinned scans per subject and dose (independent Binomial draws of the same counts).
        splits: datalist splits to ladder (training only by default: validation and test keep their own LPETs).
        seed: seed of the thinning; subject s (the entry's ``subject`` index, else its position among the laddered
            entries), dose index i and realisation k use SeedSequence([seed, s, i, k]).
        progress: a progress bar over the reconstructions.

    Raises ``ValueError`` for a dataset that is not a complete uPETe dataset, bad arguments, or a ladder already in
    the folder with other settings (it is never overwritten).
    """
    from ..physics import binomial_thinning
    from .simulate import load_scan

    root = Path(dataset_dir)
    manifest = read_manifest(root, "upete")
    if not manifest.get("complete", False):
        raise ValueError(f"dataset_dir {str(root)!r} is not a complete uPETe dataset (its build did not finish)")
    dose_values = _check_doses(doses)
    if isinstance(realisations, bool) or not isinstance(realisations, int) or realisations < 1:
        raise ValueError(f"realisations must be an int >= 1, got {realisations!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    split_names = tuple(str(s) for s in splits)
    unknown = [s for s in split_names if s not in _SPLITS]
    if not split_names or unknown:
        raise ValueError(f"splits must be a non-empty subset of {list(_SPLITS)}, got {list(splits)!r}")
    osem = {"num_subsets": int(manifest["config"]["osem_subsets"]),
            "num_iterations": int(manifest["config"]["osem_iterations"])}
    settings = {"doses": list(dose_values), "realisations": realisations, "splits": list(split_names), "seed": seed,
                "osem": osem, "files": "samples/<id>/ladder/pet_d<dose>_r<k>.nii.gz"}
    ladder_path = root / LADDER_FILE
    if ladder_path.is_file():
        existing = json.loads(ladder_path.read_text(encoding="utf-8"))
        if existing != settings:
            raise ValueError(f"{str(ladder_path)!r} holds a ladder with other settings ({existing}); requested "
                             f"{settings}. Remove the ladder (ladder.json and samples/*/ladder/) to rebuild it")
    else:
        atomic_write(ladder_path, lambda p: p.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8"))
    datalist_path = root / "datalist.json"
    datalist = json.loads(datalist_path.read_text(encoding="utf-8"))
    jobs = [entry for split in split_names for entry in datalist.get(split, [])]
    bar = progress_bar(total=len(jobs) * len(dose_values) * realisations, desc="dose ladder", unit="OSEM",
                       progress=progress)
    for number, entry in enumerate(jobs):
        subject = int(entry.get("subject", number))
        scan, image = load_scan(root / entry["scan"])
        folder = Path(entry["scan"]).parent / "ladder"
        names, rung_doses = [], []
        for i, dose in enumerate(dose_values):
            for k in range(realisations):
                name = str(folder / ladder_file_name(dose, k))
                names.append(name)
                rung_doses.append(dose)
                if not (root / name).is_file():
                    state = np.random.SeedSequence([seed, subject, i, k]).generate_state(1)[0]
                    thinned = binomial_thinning(scan.counts, fraction=dose,
                                                generator=torch.Generator().manual_seed(int(state)))
                    volume = scan.at_dose(dose).reconstruct_osem(counts=thinned, **osem)
                    save_image(root / name, volume, image)
                bar.update(1)
        entry[LADDER_PET_KEY], entry[LADDER_DOSE_KEY] = names, rung_doses
    bar.close()
    atomic_write(datalist_path,
                 lambda p: p.write_text(json.dumps(datalist, indent=2) + "\n", encoding="utf-8"))
    return settings
