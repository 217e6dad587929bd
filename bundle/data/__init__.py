"""Phantoms, scan simulation and dataset builders.  Nothing is downloaded; nothing runs on import.

Embedded defaults: :func:`mni152_brain_phantom` (MNI152 templates shipped inside the nilearn wheel) and
:func:`torso_phantom` (procedural total-body PET/CT); :func:`brainweb_phantom` reads a local brainweb cache.
"""

from __future__ import annotations

from .brain import BrainPhantom
from .brainweb import BRAINWEB_SUBJECTS, brainweb_phantom, load_brainweb_labels
from .build import DatasetKind, DatasetPreset, build_dataset, dataset_config
from .ellipsoid_head import EllipsoidHead, ellipsoid_head_phantom
from .io import load_image, load_sinogram, save_image, save_sinogram
from .mni152 import mni152_brain_phantom
from .simulate import SimulatedScan, simulate_scan, slicewise_layout
from .slicing import axial_slice_indices, rotation_angles_deg, split_by_subject
from .torso import TorsoPhantom, hu_to_mu_per_mm, torso_phantom

__all__ = [
    "BRAINWEB_SUBJECTS",
    "BrainPhantom",
    "DatasetKind",
    "DatasetPreset",
    "EllipsoidHead",
    "SimulatedScan",
    "TorsoPhantom",
    "axial_slice_indices",
    "brainweb_phantom",
    "build_dataset",
    "dataset_config",
    "ellipsoid_head_phantom",
    "hu_to_mu_per_mm",
    "load_brainweb_labels",
    "load_image",
    "load_sinogram",
    "mni152_brain_phantom",
    "rotation_angles_deg",
    "save_image",
    "save_sinogram",
    "simulate_scan",
    "slicewise_layout",
    "split_by_subject",
    "torso_phantom",
]
