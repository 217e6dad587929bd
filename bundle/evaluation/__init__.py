"""Writers of the evaluations' outputs: tables (JSON, CSV, markdown mean ± std) and figures (panels, curves).

The metrics themselves live in :mod:`bundle.metrics`; the studies that call both in :mod:`bundle.workflows`.
Importing runs nothing."""

from __future__ import annotations

from .figures import (
    bias_variance_figure,
    denoising_loss_figure,
    dose_figure,
    metric_curves,
    monai_volume_panel,
    slice_figure,
    uncertainty_figure,
    volume_panel,
)
from .tables import format_mean_std, mean_std, metrics_table, output_folder, summarise, write_csv, write_json

__all__ = [
    "bias_variance_figure",
    "denoising_loss_figure",
    "dose_figure",
    "format_mean_std",
    "mean_std",
    "metric_curves",
    "metrics_table",
    "monai_volume_panel",
    "output_folder",
    "slice_figure",
    "summarise",
    "uncertainty_figure",
    "volume_panel",
    "write_csv",
    "write_json",
]
