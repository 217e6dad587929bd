"""Table writers of the evaluations: mean ± std summaries, markdown metric tables, JSON and CSV files.

Every study in :mod:`bundle.workflows` (and the main-job demo) writes its tables through these functions, so the
files share one format: JSON indented by 2 with a trailing newline (non-ASCII kept, unknown objects as ``str``),
CSV with a header row, markdown ``| method | metric … |`` tables of ``mean ± std``.  Importing runs nothing.
"""

from __future__ import annotations

import csv
import json
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from bundle._checks import check_int

__all__ = ["format_mean_std", "mean_std", "metrics_table", "output_folder", "summarise", "write_csv", "write_json"]

def summarise(values: Sequence[float] | np.ndarray | torch.Tensor, *, correction: int = 1) -> tuple[float, float]:
    """Mean and standard deviation of per-image metric values (for "mean ± std over test slices").

    ``std = sqrt(Σ (v − mean)² / (n − correction))``: ``correction=1`` (default) is the sample std (as
    ``torch.std``, ``numpy.std(ddof=1)``), ``0`` the population std (``numpy.std`` default).

    Args:
        values: numbers (any shape; flattened), at least ``correction + 1`` of them, all finite (a PSNR of
            ``+inf`` from an exact reproduction has no meaningful mean).

    Returns:
        ``(mean, std)`` as Python floats.
    """
    correction = check_int(correction, "correction", minimum=0)
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise TypeError(f"values must be real numbers, got {type(values).__name__}") from None
    if arr.size <= correction:
        raise ValueError(f"summarise needs more than correction={correction} values, got {arr.size}")
    if not np.isfinite(arr).all():
        raise ValueError("values must be finite (they hold NaN or ±inf)")
    return float(arr.mean()), float(arr.std(ddof=correction))


def format_mean_std(mean: float, std: float, digits: int) -> str:
    """``f"{mean:.{digits}f} ± {std:.{digits}f}"``, e.g. ``format_mean_std(28.4012, 0.512, 2) == "28.40 ± 0.51"``."""
    digits = check_int(digits, "digits", minimum=0)
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    return f"{float(mean):.{digits}f} ± {float(std):.{digits}f}"


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|")


def metrics_table(
    rows: Mapping[str, Mapping[str, tuple[float, float]]],
    metric_order: Sequence[str],
    *,
    digits: int | Mapping[str, int] = 2,
    first_column: str = "method",
) -> str:
    """Markdown table of ``mean ± std`` per method (rows, in ``rows``' order) and metric (columns).

    Example::

        metrics_table({"OSEM": {"PSNR": (28.4, 0.5), "SSIM": (0.742, 0.01)}}, ["PSNR", "SSIM"],
                      digits={"PSNR": 2, "SSIM": 3})
        == "| method | PSNR | SSIM |\\n| --- | --- | --- |\\n| OSEM | 28.40 ± 0.50 | 0.742 ± 0.010 |"

    Args:
        rows: ``{method: {metric: (mean, std)}}``; every method must have every metric of ``metric_order``
            (further metrics are left out); ``None`` instead of a pair is written ``n/a`` (no case had a value).
        metric_order: the column order (non-empty, no repeats); the header names the metrics as given.
        digits: decimals for every metric, or ``{metric: decimals}`` covering every metric of ``metric_order``.
        first_column: header of the method column (``"Method"`` in the LegoPET and uPETe tables).

    Returns:
        the table, lines joined by ``"\\n"``, no trailing newline; ``|`` in names is escaped as ``\\|``.
    """
    if not isinstance(rows, Mapping) or len(rows) == 0:
        raise ValueError("rows must be a non-empty mapping {method: {metric: (mean, std)}}")
    if isinstance(metric_order, str) or not isinstance(metric_order, Sequence) or len(metric_order) == 0:
        raise ValueError(f"metric_order must be a non-empty sequence of metric names, got {metric_order!r}")
    if len(set(metric_order)) != len(metric_order):
        raise ValueError(f"metric_order has repeated metrics: {list(metric_order)}")
    if isinstance(digits, Mapping):
        missing = [k for k in metric_order if k not in digits]
        if missing:
            raise ValueError(f"digits has no entry for metric(s) {missing}")
        places = {k: digits[k] for k in metric_order}
    else:
        places = dict.fromkeys(metric_order, digits)
    lines = [
        "| " + " | ".join([_cell_text(str(first_column)), *(_cell_text(str(k)) for k in metric_order)]) + " |",
        "| " + " | ".join(["---"] * (len(metric_order) + 1)) + " |",
    ]
    for method, values in rows.items():
        if not isinstance(values, Mapping):
            raise TypeError(f"rows[{method!r}] must be a mapping {{metric: (mean, std)}}, got {type(values).__name__}")
        cells = [_cell_text(str(method))]
        for metric in metric_order:
            if metric not in values:
                raise ValueError(f"method {method!r} has no value for metric {metric!r}")
            pair = values[metric]
            if pair is None:  # no case had this metric (e.g. lesion numbers of lesion-free subjects)
                cells.append("n/a")
                continue
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise TypeError(f"rows[{method!r}][{metric!r}] must be a (mean, std) pair, got {pair!r}")
            cells.append(format_mean_std(pair[0], pair[1], places[metric]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """:func:`summarise` of the table cells: sample std (ddof 1), or ``(value, 0.0)`` for a single value."""
    return summarise(list(values), correction=1 if len(values) > 1 else 0)


def output_folder(output_dir: object) -> Path:
    """``output_dir`` as a ``Path``, created with its parents; ``TypeError`` unless it is a ``str`` or ``Path``."""
    if not isinstance(output_dir, str | Path):
        raise TypeError(f"output_dir must be a str or Path, got {type(output_dir).__name__}")
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: Path, obj: object) -> Path:
    """``obj`` as JSON (indent 2, non-ASCII kept, other objects as ``str``) plus a newline; returns ``path``."""
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, fields: Sequence[str], rows: Sequence[Mapping[str, object]]) -> Path:
    """``rows`` as CSV with the header ``fields`` (every row key must be a field); returns ``path``."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path
