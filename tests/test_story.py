"""The main job's plan: every stage names config files that exist and overrides ids those configs define."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from bundle.story import BUDGETS, METHODS, Stage, plan, run_stages, write_report

ROOT = Path(__file__).resolve().parents[1]


def _bundle_stages(stages):
    for stage in stages:
        argv = list(stage.argv)
        if argv[1:4] == ["-m", "monai.bundle", "run"]:
            yield stage, argv


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_bundle_stage_overrides_ids_its_configs_define(tmp_path, budget):
    stages = plan(tmp_path, METHODS, budget)
    checked = 0
    for stage, argv in _bundle_stages(stages):
        files = ast.literal_eval(argv[argv.index("--config_file") + 1])
        for f in files:
            assert (ROOT / f).is_file(), f"{stage.name}: {f} missing"
        parser = ConfigParser()
        parser.read_config([str(ROOT / f) for f in files])
        run_id = argv[4]
        assert run_id in parser.get(), f"{stage.name}: run id {run_id!r} not in {files}"
        options = argv[argv.index("--config_file") + 2:]
        for key in options[::2]:
            assert key.startswith("--") and key[2:] in parser.get(), f"{stage.name}: {key} is not a config id"
        checked += 1
    assert checked >= 14  # petdds 2, legopet 5, upete 7


def test_plan_rejects_unknown_methods_and_budgets(tmp_path):
    with pytest.raises(ValueError, match="methods must be among"):
        plan(tmp_path, ["petdds", "nope"])
    with pytest.raises(ValueError, match="budget must be one of"):
        plan(tmp_path, ["petdds"], "huge")


def test_report_collects_tables_figures_and_times(tmp_path):
    folder = tmp_path / "petdds_run" / "petdds" / "evaluation"
    folder.mkdir(parents=True)
    (folder / "table.md").write_text("# Results\n\n| Method | NRMSE |\n|---|---|\n| OSEM | 0.5 |\n\n![own](fig.png)\n",
                                     encoding="utf-8")
    (folder / "fig.png").write_bytes(b"png")
    stages = [Stage("petdds", "evaluate", ("true",), ("petdds_run/petdds/evaluation",))]
    timings = {"stages": [{"method": "petdds", "name": "evaluate", "command": "true", "seconds": 90.0,
                           "returncode": 0}], "total_seconds": 90.0}
    text = write_report(tmp_path, stages, timings, budget="demo").read_text(encoding="utf-8")
    assert "| OSEM | 0.5 |" in text and "### Results" in text
    assert "](fig.png)" not in text  # the table's own relative image link would break in the report
    assert "![fig](petdds_run/petdds/evaluation/fig.png)" in text
    assert "| 1 | petdds | evaluate | 90 |" in text
    assert json.dumps(BUDGETS["demo"]) in text


def test_runner_appends_commands_keeps_earlier_times_and_stops_at_a_failure(tmp_path):
    """The runner shared by the story and the studies: commands appended to <log>_commands.sh, the timings file
    keeps an earlier run's stages, a failing stage raises naming it and its return code (and is recorded)."""
    run_stages(tmp_path, [Stage("m", "first", ("true",))], log="study")
    with pytest.raises(RuntimeError, match=r"stage 1 \(m: second\) failed with return code 1; command: false"):
        run_stages(tmp_path, [Stage("m", "second", ("false",)), Stage("m", "never", ("true",))], log="study")
    assert (tmp_path / "study_commands.sh").read_text(encoding="utf-8").splitlines()[1:] == ["true", "false"]
    recorded = json.loads((tmp_path / "study_timings.json").read_text(encoding="utf-8"))["stages"]
    assert [(s["name"], s["returncode"]) for s in recorded] == [("first", 0), ("second", 1)]
