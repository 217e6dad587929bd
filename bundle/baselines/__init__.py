"""Baselines of the enhancement methods: Gaussian filter, non-local means (torch) and their validation tuning.
The supervised 3D U-Net baseline is MONAI's ``UNet`` trained by configs/upete/train_unet.json.  Importing runs
nothing."""

from __future__ import annotations

from .filters import estimate_noise_std, gaussian_filter, non_local_means, tune_parameter

__all__ = ["estimate_noise_std", "gaussian_filter", "non_local_means", "tune_parameter"]
