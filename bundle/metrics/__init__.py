"""Evaluation metrics with stated conventions: the project's one :func:`image_metrics` (PSNR / SSIM / NRMSE, named
:class:`MetricConvention` options), its building blocks :func:`psnr` / :func:`ssim` / :func:`nrmse` (explicit data
range, optional mask), bias-variance over noise realisations, voxel-wise coefficient of variation, lesion contrast
recovery / SUV bias and uniform-region CoV (:mod:`.lesions`).  Table writers live in
:mod:`bundle.evaluation`.  Importing runs nothing."""

from __future__ import annotations

from .bias_variance import ZeroMeanPolicy, bias_variance, coefficient_of_variation
from .convention import MetricConvention, image_metrics, ssim_kernel_size, units
from .image_quality import DataRange, NRMSENormalisation, SSIMKernel, SSIMMaskPolicy, nrmse, psnr, ssim
from .lesions import erode, lesion_metrics, region_cov, summarise_lesions

__all__ = [
    "DataRange",
    "MetricConvention",
    "NRMSENormalisation",
    "SSIMKernel",
    "SSIMMaskPolicy",
    "ZeroMeanPolicy",
    "bias_variance",
    "coefficient_of_variation",
    "erode",
    "image_metrics",
    "lesion_metrics",
    "nrmse",
    "psnr",
    "region_cov",
    "ssim",
    "ssim_kernel_size",
    "summarise_lesions",
    "units",
]
