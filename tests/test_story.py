"""The main job's plan: every stage names config files that exist and overrides ids those configs define."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import sys
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


@pytest.mark.parametrize("retrain", [False, True])
@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_every_bundle_stage_overrides_ids_its_configs_define(tmp_path, budget, retrain):
    stages = plan(tmp_path, METHODS, budget, retrain=retrain)
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
        for key, value in zip(options[::2], options[1::2], strict=True):
            if key == "--meta_file":  # monai.bundle run's own argument: the method's metadata file
                assert (ROOT / value).is_file() and value.endswith("metadata.json"), f"{stage.name}: {value}"
                continue
            assert key.startswith("--") and key[2:] in parser.get(), f"{stage.name}: {key} is not a config id"
        checked += 1
    # petdds 1 (+1: training, with retrain), legopet 1 (shipped weights; 7 with retrain: 6 trainings incl. the two
    # image-condition models), upete 1 (shipped weights; 11 with retrain: autoencoder, 4 variants, U-Net,
    # evaluation, combining, then IMG-P-CT's training, evaluation and combining)
    assert checked == (20 if retrain else 3)


def _option(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def test_petdds_evaluates_the_shipped_weights_on_other_subjects_unless_retrained(tmp_path):
    """Default: no training stage, the evaluation passes no --checkpoint (the config's default, the shipped score
    model) and the dataset is built with a seed other than the shipped model's training data (seed 0); --retrain
    trains at the budget and evaluates exactly the checkpoint that training writes."""
    from bundle.checkpoint import read_manifest

    build, evaluate = plan(tmp_path, ["petdds"])
    assert [s.name for s in plan(tmp_path, ["petdds"])].count("train score model") == 0
    assert _option(evaluate.argv, "--checkpoint") is None
    shipped_seeds = re.findall(r"seed[= ]+(\d+)", read_manifest()["petdds_score"]["train_command"])
    assert shipped_seeds, "the shipped model's train_command must name its data seed"
    assert _option(build.argv, "--seed") not in (None, *shipped_seeds)

    build_r, train, evaluate_r = plan(tmp_path, ["petdds"], "smoke", retrain=True)
    assert _option(build.argv, "--split") == "1,0,1" and _option(build_r.argv, "--split") is None  # the preset's
    assert _option(build_r.argv, "--seed") == _option(build.argv, "--seed")
    assert _option(train.argv, "--max_epochs") == str(BUDGETS["smoke"]["petdds_epochs"])
    final = f"{_option(train.argv, '--output_dir')}/petdds/checkpoints/network_final.pt"  # ckpt_dir of network.json
    assert _option(evaluate_r.argv, "--checkpoint") == final


def test_legopet_evaluates_the_shipped_weights_on_other_subjects_unless_retrained(tmp_path):
    """Default: the dataset is built with another seed than the shipped weights' training data (seed 0 in their
    train_command), and the one bundle stage is the shipped-weights evaluation (no training); --retrain trains."""
    from bundle.checkpoint import read_manifest

    build, evaluate = plan(tmp_path, ["legopet"])
    assert "evaluate_shipped" not in " ".join(build.argv)
    assert "configs/legopet/shipped.json" in evaluate.argv[evaluate.argv.index("--config_file") + 1]
    shipped_seeds = re.findall(r"seed[= ]+(\d+)", read_manifest()["legopet"]["train_command"])
    assert shipped_seeds, "the shipped model's train_command must name its data seed"
    assert _option(build.argv, "--seed") not in (None, *shipped_seeds)
    assert _option(evaluate.argv, "--num_samples") == str(BUDGETS["demo"]["legopet_samples"])
    assert not any("training" in s.argv for s in plan(tmp_path, ["legopet"]))
    retrained = plan(tmp_path, ["legopet"], retrain=True)
    assert sum("training" in s.argv for s in retrained) == 6  # with the two shipped image-condition models
    # --retrain trains at the shipped models' preset (64 x 64 slices of brain_2d), not the 256 x 256 tiny one
    assert _option(retrained[0].argv, "--preset") == "small"
    assert all("configs/legopet/small.json" in " ".join(s.argv) for s in retrained[1:])


def test_report_names_the_shipped_weights(tmp_path):
    from bundle.checkpoint import read_manifest

    stages = plan(tmp_path, ["petdds"])
    timings = {"stages": [{"method": "petdds", "name": s.name, "command": "x", "seconds": 1.0, "returncode": 0}
                          for s in stages], "total_seconds": 2.0}
    text = write_report(tmp_path, stages, timings, budget="demo").read_text(encoding="utf-8")
    assert read_manifest()["petdds_score"]["sha256"] in text and "models/petdds_score.pt" in text
    retrained = write_report(tmp_path, plan(tmp_path, ["petdds"], retrain=True), timings, budget="demo")
    assert "models/petdds_score.pt" not in retrained.read_text(encoding="utf-8")


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
    assert "| 1 | petdds | evaluate | 0 | 90 |" in text
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


def test_report_embeds_the_physics_summary_files_and_stage_seconds(tmp_path):
    """The physics stage names its summary files (not its folder, whose tuning grid would flood the report), and
    stage times under two minutes are given in seconds."""
    folder = tmp_path / "physics"
    (folder / "tuning").mkdir(parents=True)
    (folder / "demo.md").write_text("# Physics stage\n\n| OSEM | 0.1 |\n\n![panel](demo.png)\n", encoding="utf-8")
    (folder / "demo.png").write_bytes(b"png")
    (folder / "tuning" / "tune.md").write_text("| grid row |\n", encoding="utf-8")
    stages = plan(tmp_path, ["physics"])
    assert [s.argv[1:3] for s in stages] == [("-m", "bundle.demo")]
    timings = {"stages": [{"method": "physics", "name": stages[0].name, "command": "x", "seconds": 42.0,
                           "returncode": 0}], "total_seconds": 42.0}
    text = write_report(tmp_path, stages, timings, budget="demo").read_text(encoding="utf-8")
    assert "| OSEM | 0.1 |" in text and "![demo](physics/demo.png)" in text and "| grid row |" not in text
    assert "Wall time of its stages: 42 s." in text and "Total (wall time): 42 s." in text


def test_upete_evaluates_the_shipped_model_on_other_subjects_unless_retrained(tmp_path):
    """Default: a small-preset dataset of another seed than the shipped model's training data (seed 0 in its
    train_command) and one bundle stage, the shipped model's evaluation (no training); --retrain trains the tiny
    story (autoencoder, four latent variants, U-Net) and the shipped model's kind, IMG-P-CT, from a dose ladder."""
    from bundle.checkpoint import read_manifest

    build, evaluate = plan(tmp_path, ["upete"])
    assert _option(build.argv, "--preset") == "small" and _option(build.argv, "--split") == "0,1,1"
    assert "configs/upete/shipped.json" in evaluate.argv[evaluate.argv.index("--config_file") + 1]
    assert "training" not in evaluate.argv
    shipped_seeds = re.findall(r"seed[= ]+(\d+)", read_manifest()["upete_image"]["train_command"])
    assert shipped_seeds, "the shipped model's train_command must name its data seed"
    assert _option(build.argv, "--seed") not in (None, *shipped_seeds)
    retrained = plan(tmp_path, ["upete"], "smoke", retrain=True)
    assert sum("training" in s.argv for s in retrained) == 7  # + IMG-P-CT, the shipped model's kind
    image_space = [s for s in retrained if "configs/upete/image_space.json" in " ".join(s.argv)]
    assert [s.name.split()[0] for s in image_space] == ["train", "evaluate", "combine"]
    ladder = next(s for s in retrained if "ladder" in s.argv)
    assert retrained.index(ladder) < retrained.index(image_space[0])  # the image-space model trains on the ladder


WAIT_FOR = ("import pathlib, sys, time\n"
            "deadline = time.monotonic() + 30\n"
            "while not pathlib.Path(sys.argv[1]).exists():\n"
            "    if time.monotonic() > deadline:\n"
            "        sys.exit(3)\n"
            "    time.sleep(0.05)\n"
            "time.sleep(0.5)\n")  # the writer's lane has ended by then
WRITE_THREADS = "import os, pathlib, sys; pathlib.Path(sys.argv[1]).write_text(os.environ['OMP_NUM_THREADS'])"


def test_lanes_run_methods_side_by_side_with_their_share_of_the_cores(tmp_path, monkeypatch, capsys):
    """jobs = 2: method a's stage waits for a file that only method b's stage writes, so the job can only finish if
    the two lanes run at the same time (one after the other, a would time out); a's second stage runs after its
    first; each stage gets cpu_count // 2 threads and its output in a log file; the timings stay in plan order."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    marker, threads = tmp_path / "marker", tmp_path / "threads"
    py = sys.executable
    stages = [Stage("a", "wait for b", (py, "-c", WAIT_FOR, str(marker))),
              Stage("a", "after the wait", (py, "-c", "print('second of a')")),
              Stage("b", "write", (py, "-c", WRITE_THREADS, str(threads))),
              Stage("b", "mark", (py, "-c", f"import pathlib; pathlib.Path({str(marker)!r}).touch()"))]
    monkeypatch.setenv("BUNDLE_PROGRESS", "on")
    timings = run_stages(tmp_path, stages, jobs=2)
    assert "main job: 100%" in capsys.readouterr().err  # one bar for the job: 4 of 4 stages
    assert [s["name"] for s in timings["stages"]] == [s.name for s in stages]
    assert all(s["returncode"] == 0 for s in timings["stages"]) and timings["jobs"] == 2
    assert threads.read_text() == str(max(1, (os.cpu_count() or 1) // 2))
    first_a, second_a = timings["stages"][:2]
    assert second_a["started_s"] >= first_a["started_s"] + first_a["seconds"] - 0.2
    assert "second of a" in Path(second_a["log"]).read_text(encoding="utf-8")
    # b's lane ended before a's second stage started (a waited for b's last stage): it had the whole machine
    assert (first_a["threads"], second_a["threads"]) == (max(1, (os.cpu_count() or 1) // 2), os.cpu_count() or 1)
    script = (tmp_path / "story_commands.sh").read_text(encoding="utf-8")
    assert all(script.count(shlex.join(s.argv)) == 1 for s in stages)
    assert script.index(shlex.join(stages[0].argv)) < script.index(shlex.join(stages[1].argv))
    with pytest.raises(RuntimeError, match=r"stage 1 \(a: wait for b\) failed with return code 3"):
        run_stages(tmp_path / "sequential", [Stage("a", "wait for b", (py, "-c", WAIT_FOR.replace("30", "1"),
                                                                       str(tmp_path / "never")))], jobs=1)


def test_a_failing_lane_stops_its_method_and_names_its_log(tmp_path):
    """The failing stage's later stages never run; the error names the stage, its code and its log file."""
    py = sys.executable
    stages = [Stage("a", "fails", (py, "-c", "import sys; print('broken'); sys.exit(4)")),
              Stage("a", "never", (py, "-c", "print('never')")),
              Stage("b", "fine", (py, "-c", "print('fine')"))]
    with pytest.raises(RuntimeError, match=r"stage 1 \(a: fails\) failed with return code 4; .*log: .*01_a_fails\.log"):
        run_stages(tmp_path, stages, jobs=2)
    assert "broken" in (tmp_path / "logs" / "01_a_fails.log").read_text(encoding="utf-8")
    recorded = json.loads((tmp_path / "story_timings.json").read_text(encoding="utf-8"))["stages"]
    assert "never" not in [s["name"] for s in recorded]
    alone = run_stages(tmp_path / "one_method", [Stage("b", "fine", (py, "-c", "print('fine')"))], jobs=2)
    assert alone["jobs"] == 1 and alone["stages"][0]["log"] is None  # one lane: run as before, on this terminal
    with pytest.raises(ValueError, match="jobs must be an int >= 1"):
        run_stages(tmp_path, stages, jobs=0)
    with pytest.raises(FileNotFoundError):  # a stage that cannot start is not lost in its lane's thread
        run_stages(tmp_path / "missing", [Stage("a", "missing", ("/nonexistent/program",)),
                                          Stage("b", "fine", (py, "-c", "print('fine')"))], jobs=2)
