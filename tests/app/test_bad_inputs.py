"""bundle.app.bad_inputs: the classifier on known outcomes, and a few representative cases of the registry run
through it (scripts/check_bad_inputs.py runs the whole list)."""

from __future__ import annotations

import pytest

from bundle.app.bad_input_cases import CASES
from bundle.app.bad_inputs import Case, Outcome, Run, classify, run_cases, summary

NAMED = Run(2, "", "log line\nerror: --x must be >= 0, got -1\n")
ARGPARSE = Run(2, "", "usage: prog ...\nprog: error: argument --method: invalid choice: 'foo'\n")
TRACEBACK = Run(1, "", "Traceback (most recent call last):\n  File ...\nValueError: bad\n")


@pytest.mark.parametrize(
    ("runs", "changed", "problem", "expected"),
    [
        ([NAMED], (), None, Outcome.NAMED_ERROR),
        ([ARGPARSE], (), None, Outcome.NAMED_ERROR),
        ([Run(2, "", "Traceback (most recent call last):\n...\nerror: x\n")], (), None, Outcome.TRACEBACK),
        ([TRACEBACK], (), None, Outcome.TRACEBACK),
        ([Run(0, "{}", "")], (), None, Outcome.HANDLED),
        ([Run(0, "{}", "")], (), "exited 0 where an error was due", Outcome.SILENT_WRONG),
        ([NAMED], ("out.nii.gz",), None, Outcome.DATA_LOST),  # refused, yet a protected file changed
        ([Run(1, "", "error: x\n")], (), None, Outcome.UNCLEAR),  # not exit status 2
        ([Run(2, "", "something went wrong\n")], (), None, Outcome.UNCLEAR),  # no "error:" line
        ([NAMED], (), "the message lacks ['seed']", Outcome.UNCLEAR),
        ([TRACEBACK, Run(0, "", "")], (), None, Outcome.TRACEBACK),  # an earlier command's traceback counts
    ],
)
def test_classify(runs, changed, problem, expected):
    assert classify(runs, changed=changed, problem=problem) == expected


def _synthetic_cases() -> list[Case]:
    """Commands of the standard library whose outcome is known: an uncaught exception, a success where an error was
    due, and a file overwritten (python -m zipfile -c replaces its target)."""
    return [
        Case(name="uncaught", what="", setup=lambda ws, f: (f / "a.zip").write_text("not a zip"),
             commands=lambda ws, f: [["zipfile", "-l", str(f / "a.zip")]]),  # BadZipFile, uncaught
        Case(name="succeeds", what="", setup=lambda ws, f: (f / "a.json").write_text("{}"),
             commands=lambda ws, f: [["json.tool", str(f / "a.json")]]),
        Case(name="overwrites", what="", setup=lambda ws, f: (f / "t.zip").write_bytes(b"user data"),
             protect=lambda ws, f: [f / "t.zip"],
             commands=lambda ws, f: [["zipfile", "-c", str(f / "t.zip"), str(f)]]),
    ]


def test_runner_detects_traceback_silent_result_and_lost_data(tmp_path):
    results = run_cases(_synthetic_cases(), root=tmp_path)
    assert [r.outcome for r in results] == [Outcome.TRACEBACK, Outcome.SILENT_WRONG, Outcome.DATA_LOST]
    assert not any(r.ok for r in results)
    assert summary(results) == {"tried": 3, "named error": 0, "handled": 0, "traceback": 1, "silent wrong": 1,
                                "data lost": 1, "unclear exit": 0, "not as expected": 3}


REPRESENTATIVE = ["app_output_exists", "app_override_not_json", "data_build_other_seed", "train_without_common",
                  "zoo_extract_nonempty", "zoo_extract_not_zip"]


def test_representative_cases_end_as_expected(tmp_path):
    results = run_cases(root=tmp_path, select=REPRESENTATIVE)
    assert [(r.case.name, r.outcome) for r in results] == [(n, Outcome.NAMED_ERROR) for n in REPRESENTATIVE]
    assert all(r.changed == [] for r in results)


def test_registry_names_are_unique_and_selectable():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)) >= 50
    with pytest.raises(ValueError, match="unknown cases"):
        run_cases(select=["nope"])
