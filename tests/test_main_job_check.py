"""The main-job check (issue 18): the main job's real path (plan, run_stages, write_report) on the ``ci`` budget's
reduced case list writes every stage's table and figure into the report, and each learned method's numbers are the
ones its model card records (models/main_job_check.json, quoted by the cards' "Main-job check" sections)."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest

from bundle.checkpoint import read_manifest
from bundle.main_job_check import (
    CHECK_COMMAND,
    CHECK_METHODS,
    SOURCES,
    TOLERANCE,
    card_table,
    compare,
    main,
    measured_numbers,
    read_main_job_check,
)
from bundle.story import BUDGETS, CASE_LISTS, plan, run_stages, write_report

ROOT = Path(__file__).resolve().parents[1]

# every stage's table and figure, named here independently of the stages' `results` (the report's source)
EXPECTED_FILES = {
    "physics": (["physics/demo.md"], ["physics/demo.png"]),
    "petdds": (["petdds_run/petdds/evaluation/table.md"], ["petdds_run/petdds/evaluation/figures/*.png"]),
    "legopet": (["legopet_run/legopet_evaluation/table.md"],
                ["legopet_run/legopet_evaluation/figure.png", "legopet_run/legopet_evaluation/uncertainty.png"]),
    "upete": (["upete_run/evaluation/table.md", "upete_run/evaluation/reading.md"],
              ["upete_run/evaluation/panels.png", "upete_run/evaluation/dose_generalisation.png"]),
}


@pytest.fixture(scope="module")
def record():
    return read_main_job_check()


def test_the_record_is_of_the_current_command_budget_and_case_list(record):
    """A changed ci budget or case list makes the recorded numbers stale: rerun the command and `record` again."""
    assert record["command"] == CHECK_COMMAND
    assert record["budget"] == BUDGETS["ci"]
    assert record["case_list"] == {stage: list(options) for stage, options in CASE_LISTS["ci"].items()}
    assert set(record["models"]) == set(SOURCES) <= set(read_manifest())
    petdds_options = CASE_LISTS["ci"]["petdds evaluate"]
    samples = {"petdds_score": petdds_options[petdds_options.index("--petdds_samples") + 1],
               "legopet": BUDGETS["ci"]["legopet_samples"], "cdpm": BUDGETS["ci"]["legopet_samples"]}
    for model, rows in record["models"].items():
        label, metrics = SOURCES[model][2], SOURCES[model][3]
        expected = [label] + ([f"{label} (mean of {samples[model]})"] if model in samples else [])  # DeepPET: 1 row
        assert list(rows) == expected and all(list(v) == list(metrics) for v in rows.values()), model


@pytest.mark.parametrize("model", sorted(SOURCES))
def test_each_card_quotes_the_recorded_numbers_and_the_command(model, record):
    card = (ROOT / "models" / read_manifest()[model]["card"]).read_text(encoding="utf-8")
    assert "## Main-job check" in card, f"models/{model}.md lacks its 'Main-job check' section"
    section = card.split("## Main-job check", 1)[1].split("\n## ", 1)[0]
    assert f"`{CHECK_COMMAND}`" in section
    assert card_table(model, record) in section


@pytest.mark.parametrize("budget", ["ci", "demo"])
def test_every_case_list_option_reaches_its_stage(tmp_path, budget):
    stages = {" ".join(s.argv) for s in plan(tmp_path, CHECK_METHODS, budget)}
    for key, options in CASE_LISTS[budget].items():
        assert sum(" ".join(options) in argv for argv in stages) == 1, key
    retrained = " ".join(" ".join(s.argv) for s in plan(tmp_path, CHECK_METHODS, budget, retrain=True))
    assert not any(" ".join(options) in retrained for options in CASE_LISTS[budget].values())
    assert CASE_LISTS["ci"] != CASE_LISTS["demo"]  # the check's cases are its own, the cards record them


def test_compare_names_every_number_off_the_record(record):
    recorded = record["models"]
    measured = copy.deepcopy(recorded)
    assert compare(measured, recorded) == []
    measured["legopet"]["LegoPET"]["PSNR"] += 0.9 * TOLERANCE["PSNR"]  # within tolerance
    assert compare(measured, recorded) == []
    measured["legopet"]["LegoPET"]["PSNR"] += 0.2 * TOLERANCE["PSNR"]
    del measured["petdds_score"]["PET-DDS-δ"]["NRMSE"]
    measured["cdpm"]["cDPM (mean of 9)"] = {"PSNR": 30.0, "SSIM": 0.9}
    problems = compare(measured, recorded)
    assert len(problems) == 3  # in the record's order: petdds_score, legopet, cdpm
    assert problems[0].startswith("petdds_score: row 'PET-DDS-δ' NRMSE not measured")
    assert problems[1].startswith("legopet: row 'LegoPET' PSNR measured") and "(tolerance 0.05)" in problems[1]
    assert problems[2] == "cdpm: row 'cDPM (mean of 9)' measured but not recorded"


def test_measured_numbers_names_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run `python -m bundle\.story"):
        measured_numbers(tmp_path)
    assert main(["check", str(tmp_path)]) == 2
    models = tmp_path / "models"
    assert main(["--models-dir", str(models), "record", str(tmp_path)]) == 2  # no report.md of a ci run
    assert not models.exists()


@pytest.mark.slow
def test_reduced_main_job_writes_every_table_and_figure_and_matches_the_cards(tmp_path, record):
    """About 5.3 minutes on 2 shared CPU cores: the ci run of the command the cards name, into tmp_path."""
    start = time.perf_counter()
    stages = plan(tmp_path, CHECK_METHODS, "ci")
    assert {s.method for s in stages} == set(EXPECTED_FILES)
    assert not any("training" in s.argv for s in stages)  # shipped weights only
    timings = run_stages(tmp_path, stages)
    report = write_report(tmp_path, stages, timings, budget="ci").read_text(encoding="utf-8")
    for method, (tables, figures) in EXPECTED_FILES.items():
        for pattern in tables:
            files = sorted(tmp_path.glob(pattern))
            assert files, f"{method}: no table {pattern}"
            assert all(f"From `{f.relative_to(tmp_path).as_posix()}`:" in report for f in files)
        for pattern in figures:
            files = sorted(tmp_path.glob(pattern))
            assert files, f"{method}: no figure {pattern}"
            assert all(f"![{f.stem}]({f.relative_to(tmp_path).as_posix()})" in report for f in files)
    assert compare(measured_numbers(tmp_path), record["models"]) == []
    assert main(["check", str(tmp_path)]) == 0
    print(f"main-job check: {time.perf_counter() - start:.0f} s")
