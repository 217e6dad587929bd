"""Dataset builders for the three methods: deterministic by seed, resumable, with progress bars.

    python -m bundle.data build {legopet,petdds,upete} --output DIR [--preset tiny|small|paper] [--seed N]

Presets: ``tiny`` (default; CPU scale in the paper's geometries), ``paper`` (the published sizes) and ``small``
(LegoPET only: the ``brain_2d`` scanner, 64 × 64 sinograms and images, so a CPU can train the diffusion models for
thousands of steps; docs/legopet.md).

Each build writes ``DIR/manifest.json`` (every simulation parameter, the seed, the package version, the sinogram
layout) and ``DIR/datalist.json`` (MONAI datalist with ``training``, ``validation`` and ``test`` lists; paths
relative to DIR, so ``monai.data.load_decathlon_datalist(..., base_dir=DIR)`` resolves them).  Every sample's
files go to ``DIR/samples/<sample id>/`` and are written atomically; a sample counts as done when its
``sample.json`` exists, so an interrupted build continues where it stopped.  Rebuilding into a folder whose
manifest has other parameters is refused rather than mixing two datasets.

Images are NIfTI ((z, y, x) in memory, see :mod:`bundle.data.io`), sinograms ``.npy`` (n_planes, n_views,
n_radial).  Randomness: one ``numpy.random.SeedSequence(seed)`` spawns an independent stream per subject and per
sample, so a sample does not depend on which other samples were built before it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..keys import Keys
from ..physics import ImageGeometry, binomial_thinning, poisson_noise, preset
from ..progress import progress_bar
from .io import atomic_write, save_image, save_sinogram
from .simulate import save_scan, simulate_scan, slicewise_layout

__all__ = ["BUILDERS", "DatasetKind", "DatasetPreset", "build_dataset", "dataset_config"]


class DatasetKind(enum.StrEnum):
    LEGOPET = "legopet"
    PETDDS = "petdds"
    UPETE = "upete"


class DatasetPreset(enum.StrEnum):
    """Named sizes of a dataset (not every kind has every preset; see ``_CONFIGS``)."""

    TINY = "tiny"
    SMALL = "small"
    PAPER = "paper"


class BrainSource(enum.StrEnum):
    MNI152 = "mni152"  # embedded default, built from nilearn's packaged templates
    BRAINWEB = "brainweb"  # the 20 BrainWeb subjects from a local brainweb cache


@dataclass(frozen=True, kw_only=True)
class LegoPETConfig:
    """2D sinogram/PET pairs (METHODS.md, LegoPET data)."""

    scanner_preset: str = "mmr_2d"
    source: BrainSource = BrainSource.MNI152
    subjects: int = 4
    split: tuple[int, int, int] = (2, 1, 1)
    rotations: int = 2
    max_rotation_deg: float = 15.0
    slices: int = 4
    slice_step: int = 2
    slice_thickness_mm: float = 2.03125
    measured_counts: float = 3e5
    high_counts: float = 3e7
    fwhm_mm: float = 4.5
    background_fraction: float = 0.3
    osem_subsets: int = 12
    osem_iterations: int = 6


@dataclass(frozen=True, kw_only=True)
class PETDDSConfig:
    """3D volumes with full-count and 1 %-count realisations (METHODS.md, PET-DDS-δ)."""

    scanner_preset: str = "small_3d"
    subjects: int = 4
    split: tuple[int, int, int] = (2, 1, 1)
    full_counts: float = 3e7
    low_count_fraction: float = 0.01
    realisations: int = 3
    fwhm_mm: float = 4.5
    background_fraction: float = 0.3
    osem_subsets: int = 16
    osem_iterations: int = 3


@dataclass(frozen=True, kw_only=True)
class UPETEConfig:
    """Total-body PET/CT with standard- and low-dose reconstructions (METHODS.md, uPETe)."""

    image_shape: tuple[int, int, int] = (24, 48, 48)
    voxel_size_mm: tuple[float, float, float] = (16.0, 10.0, 10.0)
    subjects: int = 4
    split: tuple[int, int, int] = (2, 1, 1)
    full_counts: float = 5e7
    dose_fraction: float = 0.1
    generalisation_fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.2, 0.5)
    fwhm_mm: float = 6.0
    background_fraction: float = 0.3
    osem_subsets: int = 8
    osem_iterations: int = 4
    lesion_count: tuple[int, int] = (0, 4)
    lesion_radius_mm: tuple[float, float] = (5.0, 15.0)
    texture_std: float = 0.0


_CONFIGS: dict[tuple[DatasetKind, DatasetPreset], object] = {
    (DatasetKind.LEGOPET, DatasetPreset.TINY): LegoPETConfig(),
    # CPU-scale LegoPET study and the shipped LegoPET weights (docs/legopet.md): brain_2d scanner (64 views x 64
    # radial, 64 x 64 image at 3.75 mm), 16 embedded MNI152 subjects split 12/2/2 (with 4 the denoising loss of the
    # held-out slices drifted away from the training loss; 12 closed the gap), 4 rotations x 8 slices per subject
    # (384 / 64 / 64 slices); the measured (3e5) and high (3e7) counts per slice of tiny: OSEM about 22 dB, noisy
    (DatasetKind.LEGOPET, DatasetPreset.SMALL): LegoPETConfig(
        scanner_preset="brain_2d", subjects=16, split=(12, 2, 2), rotations=4, slices=8, osem_subsets=8,
        osem_iterations=6,
    ),
    (DatasetKind.LEGOPET, DatasetPreset.PAPER): LegoPETConfig(
        source=BrainSource.BRAINWEB, subjects=20, split=(17, 1, 2), rotations=5, slices=55, slice_thickness_mm=1.0,
        measured_counts=3e5,
        high_counts=3e7, osem_subsets=21, osem_iterations=10,
    ),
    (DatasetKind.PETDDS, DatasetPreset.TINY): PETDDSConfig(),
    # CPU-scale PET-DDS-delta study (docs/petdds.md): tiny's scanner, counts and reference, with 16 training subjects
    # for the shipped score model, 4 validation subjects for tuning and 4 test subjects x 5 realisations
    (DatasetKind.PETDDS, DatasetPreset.SMALL): PETDDSConfig(subjects=24, split=(16, 4, 4), realisations=5),
    (DatasetKind.PETDDS, DatasetPreset.PAPER): PETDDSConfig(
        scanner_preset="mmr_brain", subjects=62, split=(55, 1, 6), full_counts=3e8, realisations=20, osem_subsets=21,
        osem_iterations=2,
    ),
    (DatasetKind.UPETE, DatasetPreset.TINY): UPETEConfig(),
    # CPU-scale uPETe study at a real resolution (docs/upete.md, issue 17): a 128 mm thorax/abdomen region (lung
    # bases, heart, liver, spleen, kidneys) on 32 x 96 x 96 voxels of 4 mm, 4.5 mm FWHM, 3-8 small lesions
    # (radius 4-10 mm, SUV 4-15) and a 15 % log-normal uptake texture outside the liver, so that a filter has
    # something to lose; 12 subjects 6/2/4
    (DatasetKind.UPETE, DatasetPreset.SMALL): UPETEConfig(
        image_shape=(32, 96, 96), voxel_size_mm=(4.0, 4.0, 4.0), subjects=12, split=(6, 2, 4), full_counts=2e8,
        fwhm_mm=4.5, lesion_count=(3, 8), lesion_radius_mm=(4.0, 10.0), texture_std=0.15,
    ),
    (DatasetKind.UPETE, DatasetPreset.PAPER): UPETEConfig(
        image_shape=(160, 256, 256), voxel_size_mm=(2.0, 2.0, 2.0), subjects=130, split=(100, 0, 30),
        full_counts=2e9, fwhm_mm=3.0, osem_subsets=20, osem_iterations=3,
    ),
}


def dataset_config(kind: DatasetKind | str, preset_name: DatasetPreset | str, **overrides):
    """The builder configuration for ``kind`` and ``preset_name``, with keyword ``overrides`` applied."""
    try:
        key = (DatasetKind(kind), DatasetPreset(preset_name))
    except ValueError:
        raise ValueError(
            f"kind must be one of {[k.value for k in DatasetKind]} and preset one of "
            f"{[p.value for p in DatasetPreset]}, got {kind!r}, {preset_name!r}"
        ) from None
    if key not in _CONFIGS:
        available = sorted(p.value for k, p in _CONFIGS if k is key[0])
        raise ValueError(f"preset_name must be one of {available} for a {key[0].value} dataset, got {preset_name!r}")
    config = _CONFIGS[key]
    unknown = set(overrides) - {f.name for f in dataclasses.fields(config)}
    if unknown:
        raise ValueError(f"unknown {key[0].value} option(s) {sorted(unknown)}")
    config = dataclasses.replace(config, **overrides)
    if sum(config.split) != config.subjects:
        raise ValueError(f"split {config.split} must add up to subjects={config.subjects}")
    if isinstance(config, UPETEConfig):
        fractions = config.generalisation_fractions
        if (not all(0.0 < f < 1.0 for f in fractions) or config.dose_fraction in fractions
                or len(set(fractions)) != len(fractions)):
            raise ValueError(f"generalisation_fractions (--curve-doses) must be distinct fractions in (0, 1) other "
                             f"than the dose_fraction {config.dose_fraction}, got {list(fractions)}")
    return config


def _jsonable(value):
    if dataclasses.is_dataclass(value):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(_jsonable(obj), indent=2), encoding="utf-8"))


def _seed(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])


def _rotate_transaxial(volume: torch.Tensor, angle_deg: float, *, order: int) -> torch.Tensor:
    """Rotate a (z, y, x) volume about the scanner axis (scipy, no reshape, zeros outside)."""
    if angle_deg == 0:
        return volume
    from scipy.ndimage import rotate

    # order 0 (labels, μ) or 1 (activity): interpolating non-negative data this way stays non-negative
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1 (values must stay non-negative), got {order}")
    out = rotate(volume.numpy(), angle_deg, axes=(1, 2), reshape=False, order=order, mode="constant", cval=0.0)
    return torch.from_numpy(out).to(volume.dtype)


@dataclass
class _Sample:
    sample_id: str
    split: str
    make: Callable[[Path], dict]  # writes the files, returns the datalist entry (paths relative to the sample dir)
    extra: dict = field(default_factory=dict)


def _brain_phantom(config: LegoPETConfig | PETDDSConfig, subject: int, image: ImageGeometry, seed: int,
                   brainweb_dir: Path | None):
    source = getattr(config, "source", BrainSource.MNI152)
    if source is BrainSource.BRAINWEB:
        from .brainweb import BRAINWEB_SUBJECTS, brainweb_phantom

        return brainweb_phantom(BRAINWEB_SUBJECTS[subject], image=image, cache_dir=brainweb_dir)
    from .mni152 import mni152_brain_phantom

    return mni152_brain_phantom(image=image, seed=seed, rotation_deg=0.0)


def _split_names(split: tuple[int, int, int], seed: int) -> list[str]:
    """Datalist split name per subject index (disjoint by subject, deterministic by the seed)."""
    from .slicing import split_by_subject

    groups = split_by_subject(list(range(sum(split))), split, seed=seed)
    names = {"train": "training", "validation": "validation", "test": "test"}
    label = {subject: names[group] for group, members in groups.items() for subject in members}
    return [label[s] for s in range(sum(split))]


def _legopet_samples(config: LegoPETConfig, root: np.random.SeedSequence, brainweb_dir: Path | None):
    from .slicing import axial_slice_indices, rotation_angles_deg

    geometry = preset(config.scanner_preset)
    image2d = geometry.image
    n_y, n_x = image2d.shape[1:]
    n_z = config.slices * config.slice_step + 16
    volume = ImageGeometry(shape=(n_z, n_y, n_x), voxel_size_mm=(config.slice_thickness_mm, *image2d.voxel_size_mm[1:]))
    subject_seqs = root.spawn(config.subjects)
    splits = _split_names(config.split, _seed(root))
    samples = []
    state: dict = {}  # the rotated phantom of the (subject, rotation) being built; samples run in order

    def rotated(subject: int, seq: np.random.SeedSequence, r: int, angle: float):
        if state.get("key") != (subject, r):
            if state.get("subject") != subject:
                state["phantom"] = _brain_phantom(config, subject, volume, _seed(seq), brainweb_dir)
                state["subject"] = subject
            p = state["phantom"]
            state["key"] = (subject, r)
            state["volumes"] = (_rotate_transaxial(p.activity, angle, order=1),
                                _rotate_transaxial(p.mu_map_per_mm, angle, order=0))
        return state["volumes"]

    for subject, seq in enumerate(subject_seqs):
        angles = rotation_angles_deg(config.rotations, config.max_rotation_deg, seed=_seed(seq))
        for r, angle in enumerate(angles):
            for s in range(config.slices):
                sample_seq = np.random.SeedSequence(_seed(seq), spawn_key=(r, s))

                def make(out: Path, subject=subject, seq=seq, r=r, angle=angle, s=s, sample_seq=sample_seq):
                    activity, mu = rotated(subject, seq, r, angle)
                    z = axial_slice_indices(activity > 0, config.slices, config.slice_step)[s]
                    act2d, mu2d = activity[z : z + 1].contiguous(), mu[z : z + 1].contiguous()
                    g_low, g_high = (torch.Generator().manual_seed(_seed(q)) for q in sample_seq.spawn(2))
                    common = dict(layout=geometry.layout, image=image2d, fwhm_mm=config.fwhm_mm,
                                  background_fraction=config.background_fraction)
                    measured = simulate_scan(act2d, mu2d, total_counts=config.measured_counts, generator=g_low,
                                             **common)
                    high = simulate_scan(act2d, mu2d, total_counts=config.high_counts, generator=g_high, **common)
                    recon = dict(num_subsets=config.osem_subsets, num_iterations=config.osem_iterations)
                    save_sinogram(out / "sinogram.npy", measured.counts)
                    save_sinogram(out / "sinogram_high.npy", high.counts)
                    save_image(out / "reference.nii.gz", high.reconstruct_osem(**recon), image2d)
                    save_image(out / "osem.nii.gz", measured.reconstruct_osem(**recon), image2d)
                    save_image(out / "activity.nii.gz", act2d, image2d)
                    save_image(out / "mu_map.nii.gz", mu2d, image2d)
                    return {Keys.SINOGRAM: "sinogram.npy", Keys.SINOGRAM_HIGH: "sinogram_high.npy",
                            Keys.REFERENCE: "reference.nii.gz", Keys.OSEM: "osem.nii.gz",
                            Keys.ACTIVITY: "activity.nii.gz", Keys.MU_MAP: "mu_map.nii.gz",
                            Keys.SLICE: int(z), "rotation_deg": float(angle), "count_scale": measured.count_scale}

                samples.append(_Sample(f"s{subject:02d}_r{r}_z{s:02d}", splits[subject], make, {Keys.SUBJECT: subject}))
    return samples, geometry.layout


def _petdds_samples(config: PETDDSConfig, root: np.random.SeedSequence, brainweb_dir: Path | None):
    geometry = preset(config.scanner_preset)
    splits = _split_names(config.split, _seed(root))
    samples = []
    for subject, seq in enumerate(root.spawn(config.subjects)):

        def make(out: Path, subject=subject, seq=seq):
            p = _brain_phantom(config, subject, geometry.image, _seed(seq), brainweb_dir)
            g_full, g_low = (torch.Generator().manual_seed(_seed(q)) for q in seq.spawn(2))
            scan = simulate_scan(p.activity, p.mu_map_per_mm, layout=geometry.layout, image=geometry.image,
                                 total_counts=config.full_counts, generator=g_full, fwhm_mm=config.fwhm_mm,
                                 background_fraction=config.background_fraction)
            save_sinogram(out / "sinogram_full.npy", scan.counts)
            entry = {Keys.SINOGRAM_HIGH: "sinogram_full.npy", "sinogram_low": []}
            # independent 1 % realisations: new Poisson draws of the scaled expectation (prompts and randoms)
            for k in range(config.realisations):
                low = poisson_noise(scan.expected * config.low_count_fraction, generator=g_low)
                save_sinogram(out / f"sinogram_low_{k:02d}.npy", low)
                entry["sinogram_low"].append(f"sinogram_low_{k:02d}.npy")
            reference = scan.reconstruct_osem(num_subsets=config.osem_subsets, num_iterations=config.osem_iterations)
            save_image(out / "reference.nii.gz", reference, geometry.image)
            save_image(out / "activity.nii.gz", p.activity, geometry.image)
            save_image(out / "mu_map.nii.gz", p.mu_map_per_mm, geometry.image)
            factors = scan.model.multiplicative_factors
            save_sinogram(out / "multiplicative_factors.npy", factors)
            save_sinogram(out / "background_full.npy", scan.background)
            entry.update({Keys.REFERENCE: "reference.nii.gz", Keys.ACTIVITY: "activity.nii.gz",
                          Keys.MU_MAP: "mu_map.nii.gz", "multiplicative_factors": "multiplicative_factors.npy",
                          "background_full": "background_full.npy", "count_scale_full": scan.count_scale,
                          "low_count_fraction": config.low_count_fraction,
                          "training_slices": [int(z) for z in torch.nonzero(p.activity.sum((1, 2)) > 0)[:, 0]]})
            return entry

        samples.append(_Sample(f"s{subject:02d}", splits[subject], make, {Keys.SUBJECT: subject}))
    return samples, geometry.layout


def _upete_samples(config: UPETEConfig, root: np.random.SeedSequence):
    image = ImageGeometry(shape=config.image_shape, voxel_size_mm=config.voxel_size_mm)
    layout = slicewise_layout(image)
    splits = _split_names(config.split, _seed(root))
    samples = []
    for subject, seq in enumerate(root.spawn(config.subjects)):

        def make(out: Path, subject=subject, seq=seq, split=splits[subject]):
            from .torso import torso_phantom

            p = torso_phantom(image=image, seed=_seed(seq), lesion_count=config.lesion_count,
                              lesion_radius_mm=config.lesion_radius_mm, texture_std=config.texture_std)
            g_scan, g_thin = (torch.Generator().manual_seed(_seed(q)) for q in seq.spawn(2))
            scan = simulate_scan(p.activity_kbq_per_ml, p.mu_map_per_mm, layout=layout, image=image,
                                 total_counts=config.full_counts, generator=g_scan, fwhm_mm=config.fwhm_mm,
                                 background_fraction=config.background_fraction)
            recon = dict(num_subsets=config.osem_subsets, num_iterations=config.osem_iterations)
            save_image(out / "pet.nii.gz", scan.reconstruct_osem(**recon), image)
            save_image(out / "ct.nii.gz", p.ct_hu, image)
            save_image(out / "activity.nii.gz", p.activity_kbq_per_ml, image)
            save_image(out / "labels.nii.gz", p.labels.to(torch.float32), image)  # organ labels (torso.LABELS)
            save_image(out / "lesions.nii.gz", p.lesion_index.to(torch.float32), image)  # k = k-th lesion, 0 none
            save_scan(out / "scan.npz", scan, image=image, fwhm_mm=config.fwhm_mm)  # for sinogram-domain training
            fractions = [config.dose_fraction] + (list(config.generalisation_fractions) if split == "test" else [])
            entry = {Keys.PET: "pet.nii.gz", Keys.CT: "ct.nii.gz", Keys.ACTIVITY: "activity.nii.gz",
                     Keys.SCAN: "scan.npz", Keys.DOSE: config.dose_fraction, Keys.LABELS: "labels.nii.gz",
                     Keys.LESIONS: "lesions.nii.gz",
                     "lesion_table": [{"index": k, "suv": les.suv, "radius_mm": les.radius_mm, "host": les.host,
                                       "centre_mm": list(les.centre_mm)} for k, les in enumerate(p.lesions, start=1)]}
            low_doses = {}
            for f in fractions:
                # exact dose reduction of the measured counts (list-mode style), reconstructed like the full dose
                thinned = binomial_thinning(scan.counts, fraction=f, generator=g_thin)
                scaled = scan.at_dose(f)
                name = f"pet_low_{f:g}.nii.gz"
                save_image(out / name, scaled.reconstruct_osem(counts=thinned, **recon), image)
                low_doses[f"{f:g}"] = name
            entry[Keys.PET_LOW] = low_doses[f"{config.dose_fraction:g}"]
            entry["pet_low_by_dose"] = low_doses
            return entry

        samples.append(_Sample(f"s{subject:03d}", splits[subject], make, {Keys.SUBJECT: subject}))
    return samples, layout


BUILDERS = {
    DatasetKind.LEGOPET: _legopet_samples,
    DatasetKind.PETDDS: _petdds_samples,
    DatasetKind.UPETE: lambda config, root, brainweb_dir: _upete_samples(config, root),
}


def build_dataset(
    kind: DatasetKind | str,
    *,
    output: Path,
    preset_name: DatasetPreset | str = DatasetPreset.TINY,
    seed: int = 0,
    brainweb_dir: Path | None = None,
    progress: bool = True,
    **overrides,
) -> dict:
    """Build (or resume) a dataset; returns the datalist dict."""
    kind = DatasetKind(kind)
    config = dataset_config(kind, preset_name, **overrides)
    output = Path(output)
    manifest = {"kind": kind.value, "preset": DatasetPreset(preset_name).value, "seed": int(seed),
                "bundle_version": __version__, "config": config}
    manifest_path = output / "manifest.json"
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {str(output)!r} is a file; expected a folder (new, or holding an unfinished build "
                         "of the same parameters to resume)")
    if manifest_path.exists():
        existing = json.loads(manifest_path.read_text(encoding="utf-8"))
        wanted = _jsonable(manifest)
        differing = _differences(existing, wanted)
        if differing:
            raise ValueError(
                f"output {str(output)!r} already holds a dataset built with other parameters ({'; '.join(differing)}); "
                "nothing was written. Choose another --output folder, or repeat the stored parameters to resume"
            )
    samples, layout = BUILDERS[kind](config, np.random.SeedSequence(seed), brainweb_dir)
    manifest["sinogram_layout"] = {
        "shape_planes_views_radial": list(layout.shape), "num_rings": layout.scanner.num_rings,
        "max_ring_difference": layout.max_ring_difference, "scanner": dataclasses.asdict(layout.scanner),
        "axis_order": "(plane, view, radial); planes ordered by ring difference 0, +1, -1, ... (bundle.physics)",
    }
    _write_json(manifest_path, {**manifest, "complete": False})
    datalist: dict[str, list] = {"training": [], "validation": [], "test": []}
    for sample in progress_bar(samples, desc=f"building {kind.value}", unit="sample", progress=progress):
        folder = output / "samples" / sample.sample_id
        done = folder / "sample.json"
        if done.exists():
            entry = json.loads(done.read_text(encoding="utf-8"))
        else:
            entry = sample.make(folder)
            entry = {k: _prefix(v, f"samples/{sample.sample_id}/") for k, v in _jsonable(entry).items()}
            entry.update({"id": sample.sample_id, **_jsonable(sample.extra)})
            _write_json(done, entry)
        datalist[sample.split].append(entry)
    _write_json(output / "datalist.json", datalist)
    _write_json(manifest_path, {**manifest, "complete": True})
    return datalist


def _differences(existing: dict, wanted: dict) -> list[str]:
    """``"seed: stored 0, asked 1"`` for each manifest entry (``config`` entries one by one) that differs."""
    stored = {k: v for k, v in existing.items() if k not in ("complete", "sinogram_layout")}
    flat_stored = {**{k: v for k, v in stored.items() if k != "config"},
                   **{f"config.{k}": v for k, v in (stored.get("config") or {}).items()}}
    flat_wanted = {**{k: v for k, v in wanted.items() if k != "config"},
                   **{f"config.{k}": v for k, v in wanted["config"].items()}}
    return [f"{key}: stored {flat_stored.get(key)!r}, asked {flat_wanted.get(key)!r}"
            for key in sorted(set(flat_stored) | set(flat_wanted)) if flat_stored.get(key) != flat_wanted.get(key)]


def _prefix(value, prefix: str):
    """Make file names relative to the dataset root."""
    if isinstance(value, str) and value.endswith((".npy", ".npz", ".nii.gz")):
        return prefix + value
    if isinstance(value, list):
        return [_prefix(v, prefix) for v in value]
    if isinstance(value, dict):
        return {k: _prefix(v, prefix) for k, v in value.items()}
    return value
