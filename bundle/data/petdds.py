"""Reader of a ``petdds`` dataset (``python -m bundle.data build petdds``): cases with their rebuilt forward model.

The builder simulated ȳ_full = c · n ⊙ a ⊙ A(G x) + s_full (``bundle.data.simulate``; c = ``count_scale_full``,
s_full = ``background_full.npy`` in count units of the full scan) and drew the low-count realisations from
f · ȳ_full (f = ``low_count_fraction``).  The rebuilt model (:meth:`PETDDSDataset.forward_model`) therefore is::

    ȳ = (f c n ⊙ a) ⊙ A(G x) + f s_full        (f = 1 for the full-count sinogram)

with A the ``SinogramProjector`` of the manifest's ``config.scanner_preset``, G the ``GaussianResolution`` with the
manifest's ``config.fwhm_mm``, and f·c·(n ⊙ a) passed as the normalisation (attenuation ``None``: the stored
factors already hold a), built by :func:`bundle.physics.forward_model_from_arrays`.  So x is in the activity units
of ``activity.nii.gz`` / ``reference.nii.gz`` and every reconstruction is directly comparable with the reference.
The evaluation mask is the head, μ > 0 in ``mu_map.nii.gz``.  Importing this module runs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_int
from ..physics import (
    ImageGeometry,
    PETForwardModel,
    PoissonDataModel,
    ScannerPreset,
    SinogramProjector,
    forward_model_from_arrays,
    select_views,
    view_subsets,
)
from ..physics import preset as scanner_preset
from .io import load_image
from .manifest import build_command, read_manifest

__all__ = ["PETDDSCase", "PETDDSDataset", "load_petdds_case"]


class PETDDSCase(NamedTuple):
    """One sinogram of a petdds dataset with its rebuilt forward model, reference and evaluation mask."""

    counts: torch.Tensor
    """Measured counts, ``(n_planes, n_views, n_radial)``, float32."""
    model: PETForwardModel
    """ȳ = (f c n ⊙ a) ⊙ A(G x) + f s_full, x in activity units (module docstring)."""
    reference: torch.Tensor
    """Full-count OSEM reference, ``(n_z, n_y, n_x)``, activity units."""
    mask: torch.Tensor
    """Head mask μ > 0, ``torch.bool``, image shape."""

    def subsets(self, num_subsets: int) -> tuple[list[PoissonDataModel], list[torch.Tensor]]:
        """The models and counts of the ``num_subsets`` interleaved view subsets (:func:`~bundle.physics.view_subsets`),
        as OSEM and MAP-EM take them."""
        if num_subsets > self.model.n_views:
            raise ValueError(f"number of subsets ({num_subsets}) must be <= the number of views ({self.model.n_views})")
        indices = view_subsets(self.model.n_views, num_subsets)
        return [self.model.subset(i) for i in indices], [select_views(self.counts, i) for i in indices]


@dataclass(frozen=True)
class PETDDSDataset:
    """An opened petdds dataset: its folder, manifest, datalist, scanner preset and (one, shared) projector."""

    root: Path
    manifest: dict
    datalist: dict
    scanner: ScannerPreset
    projector: SinogramProjector

    @property
    def image(self) -> ImageGeometry:
        return self.scanner.image

    @property
    def shape(self) -> tuple[int, int, int]:
        """Sinogram shape (planes, views, radial)."""
        return self.scanner.layout.shape

    @classmethod
    def open(cls, dataset_dir: str | Path) -> PETDDSDataset:
        """Read ``manifest.json`` / ``datalist.json``; ``FileNotFoundError`` (with the build command) when missing,
        ``ValueError`` for another dataset kind, an unfinished build or a layout that is not the preset's."""
        if not isinstance(dataset_dir, str | Path):
            raise TypeError(f"dataset_dir must be a str or Path, got {type(dataset_dir).__name__}")
        root = Path(dataset_dir)
        manifest = read_manifest(root, "petdds")
        datalist_path = root / "datalist.json"
        if not datalist_path.is_file():
            raise FileNotFoundError(f"{datalist_path} does not exist; rerun the build: {build_command('petdds', root)}")
        if not manifest.get("complete", False):
            raise ValueError(f"{root} holds an unfinished build (manifest 'complete' is false); rerun the build")
        scanner = scanner_preset(manifest["config"]["scanner_preset"])
        stored = manifest.get("sinogram_layout", {}).get("shape_planes_views_radial")
        if stored is not None and tuple(stored) != scanner.layout.shape:
            raise ValueError(
                f"manifest sinogram shape {tuple(stored)} differs from preset {scanner.name!r} shape "
                f"{scanner.layout.shape}"
            )
        projector = SinogramProjector(layout=scanner.layout, image=scanner.image)
        return cls(root, manifest, json.loads(datalist_path.read_text(encoding="utf-8")), scanner, projector)

    @classmethod
    def open_sample(cls, sample_dir: str | Path) -> tuple[PETDDSDataset, dict]:
        """(dataset, datalist entry) of a sample folder ``<dataset>/samples/<id>/`` (it holds ``sample.json``; the
        dataset is the nearest folder above it with ``manifest.json``).  ``FileNotFoundError`` / ``ValueError``
        naming ``sample_dir`` for a folder that is not a petdds sample."""
        if not isinstance(sample_dir, str | Path) or str(sample_dir) == "":
            raise TypeError(f"sample_dir must be a sample folder path (str or Path), got {sample_dir!r}")
        folder = Path(sample_dir).resolve()
        record = folder / "sample.json"
        if not record.is_file():
            raise FileNotFoundError(f"sample {str(sample_dir)!r} must be a sample folder of a petdds dataset "
                                    "(<dataset>/samples/<id>/ with sample.json); it has no sample.json")
        root = next((p for p in folder.parents if (p / "manifest.json").is_file()), None)
        if root is None:
            raise FileNotFoundError(f"sample {str(sample_dir)!r}: no folder above it holds the dataset's manifest.json")
        dataset = cls.open(root)
        sample_id = json.loads(record.read_text(encoding="utf-8")).get("id", folder.name)
        return dataset, dataset.find_entry(str(sample_id))

    def find_entry(self, entry: object) -> dict:
        """``entry`` itself (a datalist mapping) or the datalist entry whose ``id`` is ``entry``."""
        if isinstance(entry, Mapping):
            return dict(entry)
        if not isinstance(entry, str):
            raise TypeError(
                f"entry must be a datalist entry (mapping) or a sample id (str), got {type(entry).__name__}"
            )
        for items in self.datalist.values():
            for item in items:
                if item.get("id") == entry:
                    return item
        ids = [item.get("id") for items in self.datalist.values() for item in items]
        raise ValueError(f"no sample with id {entry!r} in {self.root / 'datalist.json'}; ids are {ids}")

    def test_entry(self, case: Mapping | str | None = None) -> dict:
        """:meth:`find_entry` of ``case``, or the first ``test`` entry for ``None`` (``ValueError`` if none)."""
        if case is not None:
            return self.find_entry(case)
        if not self.datalist.get("test"):
            raise ValueError(f"{self.root} has no test subjects; pass case=")
        return self.datalist["test"][0]

    @staticmethod
    def realisation_count(entry: Mapping, realisations: int | None = None) -> int:
        """How many low-count realisations of ``entry`` to use: all stored for ``None``, else ``realisations``
        (an int in [1, stored])."""
        available = len(entry["sinogram_low"])
        if realisations is None:
            return available
        count = check_int(realisations, "realisations", minimum=1)
        if count > available:
            raise ValueError(f"realisations must be <= {available} (stored for {entry.get('id')}), got {count}")
        return count

    def load_array(self, relative: str, what: str) -> torch.Tensor:
        """The ``.npy`` sinogram-shaped array at ``root / relative`` as float32 (``what`` names it in errors)."""
        path = self.root / relative
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {path} does not exist")
        array = np.load(path, allow_pickle=False)
        if tuple(array.shape) != self.shape:
            raise ValueError(
                f"{what} {path} has shape {tuple(array.shape)}, but the dataset's sinogram layout "
                f"({self.scanner.name}: planes, views, radial) has shape {self.shape}"
            )
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def forward_model(self, entry: Mapping, fraction: float) -> PETForwardModel:
        """ȳ = (f c n ⊙ a) ⊙ A(G x) + f s_full of ``entry`` at count fraction f (module docstring)."""
        factors = self.load_array(entry["multiplicative_factors"], "multiplicative factors (n ⊙ a)")
        background = self.load_array(entry["background_full"], "background")
        scale = float(entry["count_scale_full"]) * fraction
        return forward_model_from_arrays(
            projector=self.projector, fwhm_mm=float(self.manifest["config"]["fwhm_mm"]),
            normalisation=factors * scale, background=background * fraction,
        )

    def reference_and_mask(self, entry: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """The full-count OSEM reference and the head mask μ > 0 of ``entry``."""
        reference, _ = load_image(self.root / entry["reference"])
        mu, _ = load_image(self.root / entry["mu_map"])
        for name, image in (("reference", reference), ("mu_map", mu)):
            if tuple(image.shape) != self.image.shape:
                raise ValueError(
                    f"{name} of {entry.get('id')} has shape {tuple(image.shape)}, expected {self.image.shape}"
                )
        mask = mu > 0
        if not bool(mask.any()):
            raise ValueError(f"the μ-map of {entry.get('id')} has no voxel > 0: empty head mask")
        return reference, mask

    @staticmethod
    def sinogram_and_fraction(entry: Mapping, low_index: int | None) -> tuple[str, float]:
        """(sinogram path, f): the full-count sinogram with f = 1 for ``None``, else low-count realisation
        ``low_index`` with f = ``low_count_fraction``."""
        if low_index is None:
            return entry["sinogram_high"], 1.0
        lows = entry["sinogram_low"]
        index = check_int(low_index, "low_index", minimum=0)
        if index >= len(lows):
            raise ValueError(f"low_index must be < {len(lows)} (realisations of {entry.get('id')}), got {index}")
        return lows[index], float(entry["low_count_fraction"])

    def case(self, entry: Mapping, low_index: int | None) -> PETDDSCase:
        """Counts, rebuilt model, reference and mask of one sinogram of ``entry``."""
        sinogram, fraction = self.sinogram_and_fraction(entry, low_index)
        counts = self.load_array(sinogram, "sinogram")
        reference, mask = self.reference_and_mask(entry)
        return PETDDSCase(counts, self.forward_model(entry, fraction), reference, mask)


def load_petdds_case(dataset_dir: str | Path, entry: Mapping | str, *, low_index: int | None = None) -> PETDDSCase:
    """Load one sinogram of a petdds dataset and rebuild its forward model (module docstring).

    Args:
        dataset_dir: the dataset folder (``manifest.json``, ``datalist.json``, ``samples/``).
        entry: a datalist entry (as in ``datalist.json``) or its sample id.
        low_index: index of the low-count realisation (``sinogram_low_XX.npy``); ``None`` = the full-count sinogram.

    Returns:
        :class:`PETDDSCase` ``(counts, model, reference, mask)``.

    Raises:
        ValueError: a sinogram, factor or background file whose shape is not the layout's (both shapes named), an
            unknown id, ``low_index`` out of range, a dataset of another kind or an unfinished build.
        TypeError: ``low_index`` not an int or ``None``, ``entry`` neither a mapping nor a str.
    """
    dataset = PETDDSDataset.open(dataset_dir)
    return dataset.case(dataset.find_entry(entry), low_index)
