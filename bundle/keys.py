"""Data-dictionary keys shared by transforms, dataset builders, configs and tests."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Keys"]


class Keys(StrEnum):
    """Names of the entries in MONAI data dictionaries and datalists."""

    ACTIVITY = "activity"  # ground-truth activity image
    MU_MAP = "mu_map"  # 511 keV attenuation map, 1/mm
    T1 = "t1"  # T1-like anatomical image
    SINOGRAM = "sinogram"  # measured counts (n_planes, n_views, n_radial)
    SINOGRAM_HIGH = "sinogram_high"  # high-count counterpart of the measured sinogram
    REFERENCE = "reference"  # reference reconstruction (high count / full dose)
    OSEM = "osem"  # OSEM of the measured sinogram
    PET = "pet"  # PET image (standard dose unless stated)
    PET_LOW = "pet_low"  # low-dose PET image
    CT = "ct"  # CT in Hounsfield units
    LABELS = "labels"  # organ labels of a phantom (bundle.data.torso.LABELS)
    LESIONS = "lesions"  # lesion index map of a phantom (0 none, k the k-th lesion)
    SUBJECT = "subject"
    SLICE = "slice_index"
    DOSE = "dose_fraction"
    COUNT_SCALE = "count_scale"
    SCAN = "scan"  # a measured scan on disk (counts + forward model, bundle.data.simulate.save_scan)
    TIMESTEP = "timestep"  # diffusion step drawn by a training transform
