"""Evaluation metrics with stated conventions: PSNR / SSIM / NRMSE (explicit data range, optional mask),
mean ± std tables, bias-variance over noise realisations, voxel-wise coefficient of variation.  Importing runs
nothing."""

from __future__ import annotations

from .bias_variance import ZeroMeanPolicy, bias_variance, coefficient_of_variation
from .image_quality import (
    DataRange,
    NRMSENormalisation,
    SSIMKernel,
    SSIMMaskPolicy,
    format_mean_std,
    metrics_table,
    nrmse,
    psnr,
    ssim,
    summarise,
)

__all__ = [
    "DataRange",
    "NRMSENormalisation",
    "SSIMKernel",
    "SSIMMaskPolicy",
    "ZeroMeanPolicy",
    "bias_variance",
    "coefficient_of_variation",
    "format_mean_std",
    "metrics_table",
    "nrmse",
    "psnr",
    "ssim",
    "summarise",
]
