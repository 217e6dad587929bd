"""Table writers: mean ± std summaries, markdown tables (exact text), JSON / CSV files; argument checks."""

from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
import torch

from bundle.evaluation import format_mean_std, mean_std, metrics_table, summarise, write_csv, write_json


def _exact(message: str) -> str:
    """Regex matching exactly ``message`` (pytest.raises searches)."""
    return f"^{re.escape(message)}$"


def test_summarise_sample_and_population_std() -> None:
    assert summarise([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(5 / 3)))
    assert summarise(np.array([1.0, 2.0, 3.0, 4.0]), correction=0) == pytest.approx((2.5, math.sqrt(1.25)))
    mean, std = summarise(torch.tensor([[1.0, 3.0]]))
    assert (mean, std) == pytest.approx((2.0, math.sqrt(2.0))) and isinstance(mean, float)
    assert summarise([5.0], correction=0) == (5.0, 0.0)


def test_format_mean_std() -> None:
    assert format_mean_std(28.4012, 0.512, 2) == "28.40 ± 0.51"
    assert format_mean_std(0.74219, 0.0104, 3) == "0.742 ± 0.010"
    assert format_mean_std(30, 1, 0) == "30 ± 1"


def test_metrics_table_exact_markdown() -> None:
    rows = {
        "OSEM": {"PSNR": (28.4, 0.51), "SSIM": (0.742, 0.0104), "NRMSE": (0.261, 0.01)},
        "PET-DDS-δ": {"PSNR": (30.1, 0.3), "SSIM": (0.794, 0.009)},
    }
    assert metrics_table(rows, ["PSNR", "SSIM"]) == (
        "| method | PSNR | SSIM |\n| --- | --- | --- |\n| OSEM | 28.40 ± 0.51 | 0.74 ± 0.01 |\n"
        "| PET-DDS-δ | 30.10 ± 0.30 | 0.79 ± 0.01 |"
    )
    assert metrics_table(rows, ("SSIM", "PSNR"), digits={"PSNR": 1, "SSIM": 3}) == (
        "| method | SSIM | PSNR |\n| --- | --- | --- |\n| OSEM | 0.742 ± 0.010 | 28.4 ± 0.5 |\n"
        "| PET-DDS-δ | 0.794 ± 0.009 | 30.1 ± 0.3 |"
    )
    assert metrics_table({"x": {"PSNR": None, "SSIM": (0.5, 0.0)}}, ["PSNR", "SSIM"], digits=1) == (
        "| method | PSNR | SSIM |\n| --- | --- | --- |\n| x | n/a | 0.5 ± 0.0 |")  # None: no case had a value
    assert metrics_table({"a|b": {"PSNR": (1.0, 0.0)}}, ["PSNR"], digits=1) == (
        "| method | PSNR |\n| --- | --- |\n| a\\|b | 1.0 ± 0.0 |"
    )


# ----------------------------------------------------------------------------------------------- argument checks

_T = torch.ones(8, 8, dtype=torch.float64)


@pytest.mark.parametrize(
    ("values", "correction", "exc", "message"),
    [
        ([], 1, ValueError, "summarise needs more than correction=1 values, got 0"),
        ([3.0], 1, ValueError, "summarise needs more than correction=1 values, got 1"),
        ([1.0, math.inf], 1, ValueError, "values must be finite (they hold NaN or ±inf)"),
        ([1.0, math.nan], 0, ValueError, "values must be finite (they hold NaN or ±inf)"),
        (["a", "b"], 1, TypeError, "values must be real numbers, got list"),
        ([1.0, 2.0], -1, ValueError, "correction must be >= 0, got -1"),
        ([1.0, 2.0], 1.0, TypeError, "correction must be an int >= 0, got 1.0"),
    ],
)
def test_summarise_checks(values: object, correction: object, exc: type, message: str) -> None:
    with pytest.raises(exc, match=_exact(message)):
        summarise(values, correction=correction)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "exc", "message"),
    [
        ((1.0, 0.1, -1), ValueError, "digits must be >= 0, got -1"),
        ((1.0, 0.1, 2.0), TypeError, "digits must be an int >= 0, got 2.0"),
        (("1.0", 0.1, 2), TypeError, "mean must be a real number, got '1.0'"),
        ((1.0, None, 2), TypeError, "std must be a real number, got None"),
    ],
)
def test_format_mean_std_checks(args: tuple, exc: type, message: str) -> None:
    with pytest.raises(exc, match=_exact(message)):
        format_mean_std(*args)


@pytest.mark.parametrize(
    ("rows", "order", "digits", "exc", "message"),
    [
        ({}, ["PSNR"], 2, ValueError, "rows must be a non-empty mapping {method: {metric: (mean, std)}}"),
        (
            {"a": {"PSNR": (1, 0)}},
            [],
            2,
            ValueError,
            "metric_order must be a non-empty sequence of metric names, got []",
        ),
        (
            {"a": {"PSNR": (1, 0)}},
            "PSNR",
            2,
            ValueError,
            "metric_order must be a non-empty sequence of metric names, got 'PSNR'",
        ),
        (
            {"a": {"PSNR": (1, 0)}},
            ["PSNR", "PSNR"],
            2,
            ValueError,
            "metric_order has repeated metrics: ['PSNR', 'PSNR']",
        ),
        ({"a": {"PSNR": (1, 0)}}, ["PSNR"], {"SSIM": 3}, ValueError, "digits has no entry for metric(s) ['PSNR']"),
        ({"a": {"PSNR": (1, 0)}}, ["PSNR", "SSIM"], 2, ValueError, "method 'a' has no value for metric 'SSIM'"),
        (
            {"a": {"PSNR": (1, 0, 2)}},
            ["PSNR"],
            2,
            TypeError,
            "rows['a']['PSNR'] must be a (mean, std) pair, got (1, 0, 2)",
        ),
        ({"a": [1.0, 0.0]}, ["PSNR"], 2, TypeError, "rows['a'] must be a mapping {metric: (mean, std)}, got list"),
        ({"a": {"PSNR": (1, 0)}}, ["PSNR"], -1, ValueError, "digits must be >= 0, got -1"),
    ],
)
def test_metrics_table_checks(rows: object, order: object, digits: object, exc: type, message: str) -> None:
    with pytest.raises(exc, match=_exact(message)):
        metrics_table(rows, order, digits=digits)  # type: ignore[arg-type]


def test_mean_std_uses_the_sample_std_and_zero_for_one_value() -> None:
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(5 / 3)))
    assert mean_std([7.0]) == (7.0, 0.0)


def test_metrics_table_first_column_title() -> None:
    table = metrics_table({"OSEM": {"PSNR": (28.4, 0.5)}}, ["PSNR"], first_column="Method")
    assert table.split("\n")[0] == "| Method | PSNR |"


def test_write_json_and_csv_round_trip(tmp_path) -> None:
    obj = {"table": "| a | 1.0 ± 0.1 |", "δ": [1, 2.5], "path": tmp_path}
    path = write_json(tmp_path / "x.json", obj)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and "±" in text and "δ" in text
    assert json.loads(text) == {**obj, "path": str(tmp_path)}
    rows = [{"id": "a", "PSNR": 1.5}, {"id": "b", "PSNR": 2.0}]
    with write_csv(tmp_path / "x.csv", ("id", "PSNR"), rows).open(encoding="utf-8", newline="") as f:
        assert list(csv.DictReader(f)) == [{"id": "a", "PSNR": "1.5"}, {"id": "b", "PSNR": "2.0"}]
