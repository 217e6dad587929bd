"""The main-job check: the shipped weights' numbers on the main job's reduced case list, recorded for the model cards.

    python -m bundle.story --output results/ci --budget ci --methods physics,petdds,legopet,upete
    python -m bundle.main_job_check record results/ci    # writes models/main_job_check.json from that run
    python -m bundle.main_job_check check results/ci     # exit 1 when a number is off the record
    python -m bundle.main_job_check cards                # the tables the cards' "Main-job check" sections quote

:data:`CHECK_COMMAND` runs the main job's real path (:func:`bundle.story.plan`, ``run_stages``, ``write_report``) at
the ``ci`` budget and case list (:data:`bundle.story.BUDGETS`, :data:`bundle.story.CASE_LISTS`): the physics stage,
PET-DDS-δ, LegoPET and uPETe with the shipped weights, nothing trained.  ``models/main_job_check.json`` is the one
home of the numbers it measured for each learned method (:data:`SOURCES`: which summary file and rows); ``record``
writes it from a run's output (never typed by hand), each card's "Main-job check" section quotes :func:`card_table`, and
tests/test_main_job_check.py reruns the command and compares with :func:`compare`.

The run is deterministic on CPU: sampling is seeded (the configs' ``seed``), the same thread count repeats every
number bit for bit (two runs of the command: every number equal), and 1 against 2 threads moved LegoPET's PSNR by
< 1e-6 dB.  :data:`TOLERANCE` (0.05 dB PSNR, 0.001 SSIM / NRMSE) leaves room for other CPUs and BLAS builds and
still catches a small change of the sampler: PET-DDS-δ with 20 instead of 25 steps moved the mean-of-2 row by
+0.13 dB PSNR, -0.0022 NRMSE, -0.0018 SSIM and the single sample's SSIM by -0.005, and ``check`` failed on them (a
changed weight file fails earlier, at its sha256).  Importing this module runs nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CHECK_COMMAND", "CHECK_METHODS", "MAIN_JOB_CHECK", "SOURCES", "TOLERANCE", "card_table", "compare",
           "main", "measured_numbers", "read_main_job_check", "record_main_job_check"]

MAIN_JOB_CHECK = "main_job_check.json"
"""The record's file name inside the models folder."""
CHECK_METHODS = ("physics", "petdds", "legopet", "upete")
CHECK_COMMAND = f"python -m bundle.story --output results/ci --budget ci --methods {','.join(CHECK_METHODS)}"
TOLERANCE: dict[str, float] = {"PSNR": 0.05, "SSIM": 0.001, "NRMSE": 0.001}
"""Largest accepted |measured - recorded| per metric (PSNR in dB, SSIM and NRMSE as fractions; module docstring)."""

# shipped model -> (its evaluation's summary.json in the main job's output, the key holding the rows, the label of its
# rows: the row itself and its "(mean of N)" row, the metrics of that table)
SOURCES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "petdds_score": ("petdds_run/petdds/evaluation/summary.json", "summary", "PET-DDS-δ", ("NRMSE", "PSNR", "SSIM")),
    "legopet": ("legopet_run/legopet_evaluation/summary.json", "methods", "LegoPET", ("PSNR", "SSIM")),
    "cdpm": ("legopet_run/legopet_evaluation/summary.json", "methods", "cDPM", ("PSNR", "SSIM")),
    "legopet_deeppet": ("legopet_run/legopet_evaluation/summary.json", "methods", "DeepPET", ("PSNR", "SSIM")),
    "upete_image": ("upete_run/evaluation/results.json", "rows", "IMG-P-CT", ("PSNR", "SSIM")),
}


def _mean(value: object) -> float:
    """The mean of a summary entry: ``{"mean": m, ...}`` (PET-DDS-δ, LegoPET) or ``[mean, std]`` (uPETe)."""
    return float(value["mean"] if isinstance(value, Mapping) else value[0])  # type: ignore[index]


def measured_numbers(output: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """Model -> row -> metric -> mean over the evaluated cases, read from the main job's ``output`` folder.

    ``FileNotFoundError`` names a missing summary; ``ValueError`` a model whose rows are missing from it."""
    output = Path(output)
    numbers: dict[str, dict[str, dict[str, float]]] = {}
    for model, (summary, key, label, metrics) in SOURCES.items():
        path = output / summary
        if not path.is_file():
            raise FileNotFoundError(f"no summary {path} for {model!r}: run `{CHECK_COMMAND}` with --output {output}")
        table = json.loads(path.read_text(encoding="utf-8"))[key]
        rows = {row: {m: _mean(values[m]) for m in metrics} for row, values in table.items()
                if row == label or row.startswith(f"{label} (mean of ")}
        if label not in rows:
            raise ValueError(f"{path} has no row {label!r} for {model!r}, got rows {sorted(table)}")
        numbers[model] = rows
    return numbers


def _models_dir(models_dir: str | Path | None) -> Path:
    from bundle.checkpoint.shipped import default_models_dir

    return default_models_dir() if models_dir is None else Path(models_dir)


def read_main_job_check(models_dir: str | Path | None = None) -> dict:
    """``models_dir/main_job_check.json``: ``{"command", "budget", "case_list", "wall_seconds", "torch_version",
    "models": {model: {row: {metric: value}}}}``; ``FileNotFoundError`` when it is missing."""
    path = _models_dir(models_dir) / MAIN_JOB_CHECK
    if not path.is_file():
        raise FileNotFoundError(f"no main-job check record {path}: run `{CHECK_COMMAND}` and then "
                                "`python -m bundle.main_job_check record results/ci`")
    return json.loads(path.read_text(encoding="utf-8"))


def record_main_job_check(output: str | Path, models_dir: str | Path | None = None) -> Path:
    """Write ``models_dir/main_job_check.json`` from the ``ci`` run in ``output`` (its numbers, wall time, budget
    and case list, the torch version); returns its path.  ``ValueError`` when ``output`` is not a ``ci`` run."""
    import torch

    from bundle.story import BUDGETS, CASE_LISTS

    output = Path(output)
    report = output / "report.md"
    budget = f"Budget `ci` ({json.dumps(BUDGETS['ci'])}"
    if not report.is_file() or budget not in report.read_text(encoding="utf-8"):
        raise ValueError(f"output must hold a finished run of `{CHECK_COMMAND}` (its report.md names the current ci "
                         f"budget), got {output}")
    timings = json.loads((output / "story_timings.json").read_text(encoding="utf-8"))
    numbers = measured_numbers(output)
    record = {
        "_comment": "written by `python -m bundle.main_job_check record` from a run of `command`; the model cards' "
                    "'Main-job check' sections quote these numbers, tests/test_main_job_check.py reruns the command",
        "command": CHECK_COMMAND,
        "budget": BUDGETS["ci"],
        "case_list": CASE_LISTS["ci"],
        "wall_seconds": timings["total_seconds"],
        "torch_version": torch.__version__,
        "models": {model: {row: {m: round(v, 4) for m, v in metrics.items()} for row, metrics in rows.items()}
                   for model, rows in numbers.items()},
    }
    path = _models_dir(models_dir) / MAIN_JOB_CHECK
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def compare(measured: Mapping[str, Mapping[str, Mapping[str, float]]],
            recorded: Mapping[str, Mapping[str, Mapping[str, float]]],
            tolerance: Mapping[str, float] = TOLERANCE) -> list[str]:
    """One line per recorded model, row or metric that ``measured`` lacks or that differs by more than
    ``tolerance[metric]``, and per measured row the record lacks; empty when they agree."""
    problems = []
    for model, rows in recorded.items():
        for row, metrics in rows.items():
            for metric, value in metrics.items():
                got = measured.get(model, {}).get(row, {}).get(metric)
                if got is None:
                    problems.append(f"{model}: row {row!r} {metric} not measured (recorded {value})")
                elif abs(got - value) > tolerance[metric]:
                    problems.append(f"{model}: row {row!r} {metric} measured {got:.4f}, card {value:.4f} "
                                    f"(tolerance {tolerance[metric]})")
        problems += [f"{model}: row {row!r} measured but not recorded"
                     for row in measured.get(model, {}) if row not in rows]
    return problems


def card_table(model: str, record: Mapping) -> str:
    """The Markdown table of ``model``'s recorded rows (PSNR in dB with 2 decimals, SSIM and NRMSE with 4)."""
    rows = record["models"][model]
    metrics = list(next(iter(rows.values())))
    digits = {"PSNR": 2}
    header = " | ".join(f"{m} (dB)" if m == "PSNR" else m for m in metrics)
    lines = [f"| row | {header} |", "|" + " --- |" * (len(metrics) + 1)]
    lines += [f"| {row} | " + " | ".join(f"{values[m]:.{digits.get(m, 4)}f}" for m in metrics) + " |"
              for row, values in rows.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bundle.main_job_check {record,check,cards}`` (module docstring); exit 0, 1 (check: a number is
    off the record) or 2 (missing files, not a ci run)."""
    parser = argparse.ArgumentParser(prog="python -m bundle.main_job_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models-dir", type=Path, default=None, help="models folder (default: the repository's)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("record", "write models/main_job_check.json from a run's output"),
                       ("check", "compare a run's output with models/main_job_check.json")):
        commands.add_parser(name, help=text).add_argument("output", type=Path, help="the run's --output folder")
    commands.add_parser("cards", help="print the table each model card's 'Main-job check' section quotes")
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            print(f"recorded {record_main_job_check(args.output, args.models_dir)}")
            return 0
        record = read_main_job_check(args.models_dir)
        if args.command == "cards":
            for model in record["models"]:
                print(f"{model}:\n{card_table(model, record)}\n")
            return 0
        problems = compare(measured_numbers(args.output), record["models"])
        print("\n".join(problems) if problems else f"every number of {args.output} matches the record")
        return 1 if problems else 0
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
