"""Baselines of the enhancement methods: Gaussian filter, non-local means (torch) and their validation tuning.
The supervised 3D U-Net baseline (:class:`ResidualUNet`, MONAI ``UNet`` + global residual) trains with
configs/upete/train_unet.json.  Importing runs
nothing."""

from __future__ import annotations

from .filters import estimate_noise_std, gaussian_filter, non_local_means, tune_parameter
from .unet import ResidualUNet

__all__ = ["ResidualUNet", "estimate_noise_std", "gaussian_filter", "non_local_means", "tune_parameter"]
