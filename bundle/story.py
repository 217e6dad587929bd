"""The main job (README's first command): the whole story of the three methods at CPU-demo scale, then a report.

    python -m bundle.story --output results [--methods physics,petdds,legopet,upete] [--budget demo] [--retrain]

Stages, each one command that a user can also run by hand (all printed and appended to
``OUTPUT/story_commands.sh``; the config files of every ``monai.bundle run`` are a recipe of configs/recipes.json,
and :func:`run_stages` is also the runner of the method studies, :mod:`bundle.study`):

1. physics: scans of the embedded MNI152 brain reconstructed with OSEM and MAP-EM, their iterations and β chosen on
   validation subjects and reported on a held-out one (:mod:`bundle.demo`);
2. for each method: build its small dataset from the embedded-default phantoms (``python -m bundle.data build``)
   and run its evaluation workflow against the baselines (``python -m monai.bundle run evaluating``) with the
   shipped weights (``models/petdds_score.pt``; ``models/legopet.pt``, ``cdpm.pt``, ``legopet_deeppet.pt``;
   ``models/upete_image.pt``; :mod:`bundle.checkpoint.shipped`) on subjects they were not trained on.  Nothing is
   trained; ``--retrain`` trains at the budget instead (PET-DDS-δ, LegoPET and uPETe's ``tiny`` story through
   ``python -m monai.bundle run training``) and evaluates those checkpoints;
3. ``OUTPUT/report.md``: the metric tables and figures of every stage, the commands and the wall time of every
   stage.

The ``demo`` budget's training entries apply to ``--retrain`` only (networks barely trained: the report says so,
and the CPU-scale studies with longer budgets are in docs/<method>.md).  The ``ci`` budget with
``--methods physics,petdds,legopet,upete`` is the main-job check: the shipped weights on a reduced case list
(:data:`CASE_LISTS`) in about 5.3 minutes, whose numbers the model cards record (models/main_job_check.json,
tests/test_main_job_check.py).  Stages run in subprocesses, the methods in ``--jobs`` lanes side by side (default
2; :func:`run_stages`); the ``demo`` budget's reduced case list keeps the job under 5 minutes on 2 idle cores
(README, docs/performance.md).  A failing stage stops the job with its return code and log path.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from bundle.progress import progress_bar
from bundle.recipes import recipe

__all__ = ["BUDGETS", "CASE_LISTS", "METHODS", "Stage", "main", "plan", "run_stages", "write_report"]

METHODS = ("physics", "petdds", "legopet", "upete")
UPETE_VARIANTS = ("LDM", "LDM-P", "LDM-CT", "LDM-P-CT")

# training/evaluation budgets of the main job (epochs, sampling steps, test slices); "smoke" is for the plan tests
BUDGETS: dict[str, dict[str, int]] = {
    "demo": {"petdds_epochs": 120, "petdds_steps": 25, "legopet_regression_epochs": 12,
             "legopet_diffusion_epochs": 20, "legopet_steps": 20, "legopet_slices": 8, "legopet_samples": 4,
             "upete_ae_epochs": 16,
             "upete_ldm_epochs": 8, "upete_unet_epochs": 8},
    "smoke": {"petdds_epochs": 1, "petdds_steps": 2, "legopet_regression_epochs": 1, "legopet_diffusion_epochs": 1,
              "legopet_steps": 2, "legopet_slices": 1, "legopet_samples": 2, "upete_ae_epochs": 1,
              "upete_ldm_epochs": 1, "upete_unet_epochs": 1},
    # the main-job check (tests/test_main_job_check.py, models/main_job_check.json): the shipped weights with the
    # model cards' sampler steps on the reduced case list of CASE_LISTS["ci"]; its training entries are smoke's
    "ci": {"petdds_epochs": 1, "petdds_steps": 25, "legopet_regression_epochs": 1, "legopet_diffusion_epochs": 1,
           "legopet_steps": 20, "legopet_slices": 2, "legopet_samples": 2, "upete_ae_epochs": 1,
           "upete_ldm_epochs": 1, "upete_unet_epochs": 1},
}
# Reduced case lists: extra options of some stages under a budget (a budget without an entry: the stages' own
# defaults; --retrain uses none, its trainings need the presets' datasets).  "demo" keeps the README's main job under
# 5 minutes on 2 idle cores (docs/performance.md "Main job"): the physics stage chooses OSEM's passes and MAP-EM's
# beta on 1 validation subject; PET-DDS-δ is evaluated on 1 test subject x 2 realisations (4 samples each; a dataset
# of 2 subjects, the training one unused); uPETe's dose curve has 3 points (1 %, 10 %, 50 %; the 10 % LPET is drawn
# first, so it is the same with the whole curve) and NLM's h grid 3 values around the one the full study chose
# (4 sigma_n, docs/upete.md).  "ci" keeps the main-job check near 5 minutes sequentially: as
# "demo", with PET-DDS-δ on 1 realisation x 2 samples; LegoPET on 1 rotation x 2 slices per subject (2 test slices);
# uPETe at 10 % dose only, with the Gaussian sigma and the NLM h fixed to the values the full study chose
# (docs/upete.md).
CASE_LISTS: dict[str, dict[str, tuple[str, ...]]] = {
    "demo": {"physics": ("--validation-subjects", "1"),
             "petdds data": ("--subjects", "2", "--split", "1,0,1"),
             "petdds evaluate": ("--realisations", "2"),
             "upete data": ("--curve-doses", "0.01,0.5"),
             "upete evaluate": ("--curve_doses", "[0.01, 0.1, 0.5]", "--nlm_grid", "[2.0, 4.0, 6.0]")},
    "ci": {"physics": ("--validation-subjects", "1"),
           "petdds data": ("--subjects", "2", "--split", "1,0,1"),
           "petdds evaluate": ("--realisations", "1", "--petdds_samples", "2"),
           "legopet data": ("--rotations", "1", "--slices", "2"),
           "upete evaluate": ("--curve_doses", "[0.1]", "--gaussian_grid", "[0.5]", "--nlm_grid", "[4.0]")},
}
# Seed of the main job's tiny PET-DDS-δ dataset.  The shipped score model is trained on `python -m bundle.data build
# petdds --preset small --seed 0`, and the tiny preset with the same seed 0 draws the same first subjects (s00-s03)
# from the same streams, so with seed 0 the shipped model would be evaluated on its own training images; seed 1
# draws other phantoms.
PETDDS_DATA_SEED = 1
# Seed of the main job's LegoPET dataset: the shipped LegoPET weights were trained on `--preset small --seed 0`;
# seed 1 draws other phantoms (as for PET-DDS-δ above).
LEGOPET_DATA_SEED = 1
# Seed of the main job's uPETe dataset (the small preset's geometry, 1 validation subject for the baselines' tuning, 1
# test subject): the shipped model was trained on `--preset small --seed 0`; seed 1 draws other torsos.
UPETE_DATA_SEED = 1
PETDDS_TRAIN_STAGE = "train score model"
# --retrain: the shipped image-condition extension models of LegoPET (models/legopet_image.pt, cdpm_image.pt) by row
# name and training recipe, and the doses of uPETe's dose ladder for the image-space extension (the shipped
# models/upete_image.pt's kind; docs/upete.md uses 9 doses and 2 realisations)
LEGOPET_IMAGE_CONDITION = {"LegoPET + image condition": "legopet/legopet_image",
                           "cDPM + image condition": "legopet/cdpm_image"}
UPETE_LADDER = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


@dataclass(frozen=True)
class Stage:
    """One command of the story: ``method`` it belongs to, a short ``name`` and the ``argv`` to run."""

    method: str
    name: str
    argv: tuple[str, ...]
    # folders (relative to OUTPUT) whose *.md / *.png go to the report, or single .md / .png files
    results: tuple[str, ...] = field(default=())


def plan(output: Path, methods: Sequence[str], budget: str = "demo", *, retrain: bool = False) -> list[Stage]:
    """The stages of the main job for ``methods`` (subset of :data:`METHODS`) with the named ``budget``;
    ``retrain``: PET-DDS-δ, LegoPET and uPETe train at the budget and evaluate those networks instead of the shipped
    weights (uPETe: the tiny preset's autoencoder, four latent variants and U-Net)."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods must be among {list(METHODS)}, got {unknown}")
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    b, cases = BUDGETS[budget], ({} if retrain else CASE_LISTS.get(budget, {}))
    out = str(output)
    py = sys.executable
    stages: list[Stage] = []
    if "physics" in methods:
        stages.append(Stage("physics", "MNI152 brain: OSEM and MAP-EM chosen on validation subjects",
                            (py, "-m", "bundle.demo", "--output", f"{out}/physics", *cases.get("physics", ())),
                            ("physics/demo.md", "physics/demo.png")))
    if "petdds" in methods:
        data, res = f"{out}/data/petdds", f"{out}/petdds_run"
        common = ("--dataset_dir", data, "--output_dir", res)
        stages.append(Stage("petdds", "build dataset", (py, "-m", "bundle.data", "build", "petdds", "--output", data,
                                                        "--preset", "tiny", "--seed", str(PETDDS_DATA_SEED),
                                                        *cases.get("petdds data", ()))))
        weights: tuple[str, ...] = ()  # the evaluation config's default checkpoint: the shipped score model
        if retrain:
            stages.append(Stage("petdds", PETDDS_TRAIN_STAGE, recipe("petdds/train").command(
                *common, "--max_epochs", str(b["petdds_epochs"]))))
            weights = ("--checkpoint", f"{res}/petdds/checkpoints/network_final.pt")
        name = "evaluate OSEM, MAP-EM, PET-DDS-δ" + ("" if retrain else " (shipped score model)")
        stages.append(Stage("petdds", name, recipe("petdds/evaluate").command(
            *common, *weights, "--num_inference_steps", str(b["petdds_steps"]), "--progress", "True",
            *cases.get("petdds evaluate", ())),
            ("petdds_run/petdds/evaluation",)))
    if "legopet" in methods and not retrain:
        data, res = f"{out}/data/legopet", f"{out}/legopet_run"
        stages += [
            Stage("legopet", "build dataset", (py, "-m", "bundle.data", "build", "legopet", "--output", data,
                                               "--preset", "small", "--seed", str(LEGOPET_DATA_SEED), "--subjects",
                                               "3", "--split", "1,1,1", *cases.get("legopet data", ()))),
            Stage("legopet", "evaluate OSEM, DeepPET, cDPM, LegoPET (shipped weights)",
                  recipe("legopet/evaluate_shipped").command(
                      "--dataset_dir", data, "--output_dir", res, "--num_inference_steps", str(b["legopet_steps"]),
                      "--eval_limit", str(b["legopet_slices"]), "--num_samples", str(b["legopet_samples"])),
                  ("legopet_run/legopet_evaluation",)),
        ]
    elif "legopet" in methods:
        data, res = f"{out}/data/legopet", f"{out}/legopet_run"
        common = ("--dataset_dir", data, "--output_dir", res)
        regression = ("--max_epochs", str(b["legopet_regression_epochs"]))
        diffusion = ("--max_epochs", str(b["legopet_diffusion_epochs"]))
        preset = ("legopet/tiny.json", "legopet/small.json")  # the shipped models' geometry: 64 x 64 slices
        stages += [
            Stage("legopet", "build dataset", (py, "-m", "bundle.data", "build", "legopet", "--output", data,
                                               "--preset", "small", "--seed", str(LEGOPET_DATA_SEED),
                                               "--subjects", "4", "--split", "2,1,1")),
            Stage("legopet", "train PnPNet", recipe("legopet/pnpnet").command(*common, *regression, overlays=preset)),
            Stage("legopet", "train DeepPET", recipe("legopet/deeppet").command(*common, *regression,
                                                                                 overlays=preset)),
            Stage("legopet", "train cDPM", recipe("legopet/cdpm").command(*common, *diffusion, overlays=preset)),
            Stage("legopet", "train LegoPET", recipe("legopet/legopet").command(*common, *diffusion,
                                                                                 overlays=preset)),
            *(Stage("legopet", f"train {row}", recipe(name).command(*common, *diffusion, overlays=preset))
              for row, name in LEGOPET_IMAGE_CONDITION.items()),
            Stage("legopet", "evaluate OSEM, DeepPET, cDPM, LegoPET (and + image condition)",
                  recipe("legopet/evaluate").command(
                      *common, "--num_inference_steps", str(b["legopet_steps"]), "--eval_limit",
                      str(b["legopet_slices"]), "--num_samples", str(b["legopet_samples"]), "--extension_rows",
                      json.dumps(list(LEGOPET_IMAGE_CONDITION)), overlays=preset),
                  ("legopet_run/legopet_evaluation",)),
        ]
    if "upete" in methods and not retrain:
        data, res = f"{out}/data/upete", f"{out}/upete_run"
        stages += [
            Stage("upete", "build dataset", (py, "-m", "bundle.data", "build", "upete", "--output", data,
                                             "--preset", "small", "--seed", str(UPETE_DATA_SEED), "--subjects", "2",
                                             "--split", "0,1,1", *cases.get("upete data", ()))),
            Stage("upete", "evaluate LPET, Gaussian, NLM, IMG-P-CT (shipped weights)",
                  recipe("upete/evaluate_shipped").command(
                      "--dataset_dir", data, "--output_dir", res, "--eval_dir", f"{res}/evaluation",
                      *cases.get("upete evaluate", ())),
                  ("upete_run/evaluation",)),
        ]
    elif "upete" in methods:
        data, res = f"{out}/data/upete", f"{out}/upete_run"
        common = ("--dataset_dir", data, "--output_dir", res)
        image_space = ("upete/image_space.json",)
        stages += [
            Stage("upete", "build dataset", (py, "-m", "bundle.data", "build", "upete", "--output", data,
                                             "--preset", "tiny")),
            Stage("upete", "train autoencoder", recipe("upete/autoencoder").command(
                *common, "--ae_max_epochs", str(b["upete_ae_epochs"]))),
            *(Stage("upete", f"train {variant}", recipe("upete/ldm").command(
                *common, "--ldm_max_epochs", str(b["upete_ldm_epochs"]), "--variant", variant))
              for variant in UPETE_VARIANTS),
            Stage("upete", "train U-Net baseline", recipe("upete/unet").command(
                *common, "--unet_max_epochs", str(b["upete_unet_epochs"]))),
            Stage("upete", "evaluate LPET, Gaussian, NLM, U-Net and the four LDM variants",
                  recipe("upete/evaluate").command(*common), ("upete_run/upete/evaluation",)),
            Stage("upete", "combine LDM-P-CT into one checkpoint (bundle.app / model zoo)",
                  recipe("upete/combine").command(*common, "--variant", "LDM-P-CT")),
            # the shipped model's kind: the image-space extension IMG-P-CT, trained from a sinogram-domain dose ladder
            Stage("upete", "build the dose ladder (image-space extension)",
                  (py, "-m", "bundle.data", "ladder", data, "--doses", ",".join(f"{d:g}" for d in UPETE_LADDER),
                   "--realisations", "1", "--no-progress")),
            Stage("upete", "train IMG-P-CT (image-space extension)", recipe("upete/ldm").command(
                *common, "--ldm_max_epochs", str(b["upete_ldm_epochs"]), overlays=image_space)),
            Stage("upete", "evaluate LPET, Gaussian, NLM, IMG-P-CT", recipe("upete/evaluate").command(
                *common, "--trained_unet", "$None", "--curve_methods", json.dumps(["LPET", "Gaussian", "NLM",
                                                                                   "IMG-P-CT"]),
                overlays=image_space), ("upete_run/upete_image/evaluation",)),
            Stage("upete", "combine IMG-P-CT into one checkpoint (the shipped model's kind)",
                  recipe("upete/combine").command(*common, overlays=image_space)),
        ]
    return stages


def _child_environment(threads: int | None = None) -> dict[str, str]:
    """The stages' environment: characters their terminal cannot show (δ under an ASCII locale) are escaped, not
    fatal; ``threads``: the thread count of torch, OpenMP/MKL and numba in each stage (stages running side by side
    share the cores instead of oversubscribing them), unless the caller's environment sets them."""
    env = dict(os.environ)
    env.setdefault("PYTHONIOENCODING", ":backslashreplace")
    if threads is not None:
        for name in THREAD_VARIABLES:
            env.setdefault(name, str(threads))
    return env


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
# Order in which side-by-side lanes (run_stages(jobs > 1)) start: the longest first (stage times of the README's
# main job on 2 idle cores), so that the last lane to finish is a short one.
LANE_PRIORITY = ("petdds", "upete", "legopet", "physics")


def _lanes(stages: Sequence[Stage]) -> list[list[tuple[int, Stage]]]:
    """``stages`` (numbered from 1 in plan order) grouped into one lane per method, each lane in plan order; lanes
    ordered by :data:`LANE_PRIORITY` (other methods after, in plan order)."""
    lanes: dict[str, list[tuple[int, Stage]]] = {}
    for index, stage in enumerate(stages, 1):
        lanes.setdefault(stage.method, []).append((index, stage))
    rank = {m: i for i, m in enumerate(LANE_PRIORITY)}
    return [lanes[m] for m in sorted(lanes, key=lambda m: rank.get(m, len(rank)))]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")[:40]


def run_stages(output: Path, stages: Sequence[Stage], *, log: str = "story", cwd: Path | None = None,
               jobs: int = 1) -> dict:
    """Run ``stages`` (subprocesses in the repository root), recording their commands and wall times.

    ``jobs`` = 1: one after the other in plan order, each stage's output (and progress bars) on this terminal.
    ``jobs`` > 1: one lane per method (a method's stages depend on each other, different methods' do not), up to
    ``jobs`` lanes side by side, each stage with ``cpu_count // jobs`` threads (:func:`_child_environment`) and its
    output in ``OUTPUT/logs/<n>_<method>_<stage>.log``; this terminal shows when each stage starts and ends (and
    one bar for the job).  A stage that starts when fewer lanes are left (the others done) gets ``cpu_count //
    lanes left`` threads.  On 2 cores two single-threaded lanes do more work per second than one two-threaded stage
    (a stage's second thread adds about half a core, docs/performance.md).

    Every command is appended to ``OUTPUT/<log>_commands.sh`` when it starts (within a method, in order; the
    script reruns the job one stage at a time); ``OUTPUT/<log>_timings.json`` holds the stages of earlier runs into
    the same OUTPUT followed by this run's, in plan order (a study that reruns some stages keeps the times of the
    others).  Returns this run's timings (``stages`` with ``seconds``, ``started_s`` (seconds after the job's
    start), ``log`` and ``threads`` (side by side); ``total_seconds``: the job's wall time; ``jobs``: the lanes
    that could run side by side, 1 for one method).  Raises
    ``RuntimeError`` naming the stage, its return code, its command and its log when a stage fails (its time is
    recorded); after a failure no further stage starts, and lanes running one finish it first.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1 (lanes run side by side), got {jobs!r}")
    cwd = cwd or Path(__file__).resolve().parents[1]
    output.mkdir(parents=True, exist_ok=True)
    timings_path = output / f"{log}_timings.json"
    earlier = json.loads(timings_path.read_text(encoding="utf-8"))["stages"] if timings_path.is_file() else []
    lanes = _lanes(stages)
    parallel = jobs > 1 and len(lanes) > 1
    timings: dict = {"stages": [], "jobs": min(jobs, len(lanes)) if parallel else 1}  # lanes that could overlap
    cpus = os.cpu_count() or 1
    lanes_left = [len(lanes)]  # lanes not finished yet: a stage starting with fewer beside it gets more threads
    lock = threading.Lock()
    failures: list[str] = []
    running: dict[int, tuple[str, float]] = {}
    # side by side, one bar for the job (stages done, the running ones with their seconds); one after the other,
    # each stage draws its own bars on this terminal
    bar = progress_bar(desc="main job" if log == "story" else log, total=len(stages), unit="stage", progress=parallel)

    def say(text: str) -> None:
        bar.write(text, file=sys.stdout)
        sys.stdout.flush()

    done: dict[int, dict] = {}
    start_all = time.perf_counter()
    commands = output / f"{log}_commands.sh"

    def record() -> None:
        everything = [*earlier, *(done[i] for i in sorted(done))]
        total = round(sum(s["seconds"] for s in everything), 1)
        timings_path.write_text(json.dumps({"stages": everything, "total_seconds": total}, indent=2) + "\n",
                                encoding="utf-8")

    def run_one(index: int, stage: Stage, script) -> bool:
        line = shlex.join(stage.argv)
        log_path = output / "logs" / f"{index:02d}_{stage.method}_{_slug(stage.name)}.log" if parallel else None
        with lock:
            if failures:
                return False
            script.write(line + "\n")
            script.flush()
            where = f" (log: {log_path})" if log_path else ""
            say(f"\n[{index}/{len(stages)}] {stage.method}: {stage.name}{where}\n  $ {line}")
            start = time.perf_counter()
            running[index] = (f"{stage.method}: {stage.name}", start)
            threads = max(1, cpus // min(jobs, lanes_left[0]))
        if log_path is None:
            result = subprocess.run(stage.argv, cwd=cwd, env=_child_environment())
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("w", encoding="utf-8") as handle:
                result = subprocess.run(stage.argv, cwd=cwd, env=_child_environment(threads), stdout=handle,
                                        stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        with lock:
            done[index] = {"method": stage.method, "name": stage.name, "command": line, "seconds": round(seconds, 1),
                           "started_s": round(start - start_all, 1), "returncode": result.returncode,
                           "log": str(log_path) if log_path else None, "threads": threads if log_path else None}
            record()
            running.pop(index, None)
            bar.update(1)
            elapsed = time.perf_counter() - start_all
            say(f"[{index}/{len(stages)}] {stage.method}: {stage.name}: done in {seconds:.0f} s "
                f"(total {elapsed / 60:.1f} min)")
            if result.returncode != 0:
                where = f"; log: {log_path}" if log_path else ""
                failures.append(f"stage {index} ({stage.method}: {stage.name}) failed with return code "
                                f"{result.returncode}; command: {line}{where}")
                return False
        return True

    def run_lane(lane: list[tuple[int, Stage]], script) -> bool:
        try:
            return all(run_one(index, stage, script) for index, stage in lane)
        except BaseException:
            with lock:  # the other lanes start no further stage
                failures.append(f"lane {lane[0][1].method} stopped by an error")
            raise
        finally:
            with lock:
                lanes_left[0] -= 1

    with commands.open("a", encoding="utf-8") as script:
        if script.tell() == 0:
            script.write("# commands, in order (run from the repository root)\n")
        if parallel:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(run_lane, lane, script) for lane in lanes]
                pending = set(futures)
                while pending:
                    _, pending = wait(pending, timeout=1.0)
                    with lock:
                        now = time.perf_counter()
                        bar.set_postfix_str("; ".join(f"{label} {now - t0:.0f} s" for label, t0 in running.values()))
                for future in futures:
                    future.result()  # a stage that could not start (e.g. a missing program) raises here
        else:
            for index, stage in enumerate(stages, 1):
                if not run_one(index, stage, script):
                    break
    bar.close()
    if failures:
        raise RuntimeError(failures[0])
    timings["stages"] = [done[i] for i in sorted(done)]
    timings["total_seconds"] = round(time.perf_counter() - start_all, 1)
    return timings


_TITLES = {"physics": "Physics core: OSEM and MAP-EM of simulated MNI152 brain scans (docs/physics.md)",
           "petdds": "PET-DDS-δ: 3D reconstruction at 1 % counts (docs/petdds.md)",
           "legopet": "LegoPET: sinogram to PET (docs/legopet.md)",
           "upete": "uPETe: low-dose PET enhancement with CT guidance (docs/upete.md)"}


def _embedded(markdown: Path) -> str:
    """A stage's markdown inside the report: its headings two levels down, its image lines left out (the report
    lists every figure of the folder itself, with paths relative to the report)."""
    lines = []
    for line in markdown.read_text(encoding="utf-8").strip().splitlines():
        if line.startswith("!["):
            continue
        lines.append("##" + line if line.startswith("#") else line)
    return "\n".join(lines).strip()


def _shipped_note() -> str:
    """The report's line on the shipped PET-DDS-δ score model (file, sha256, card)."""
    from bundle.checkpoint import read_manifest

    entry = read_manifest()["petdds_score"]
    return (f"PET-DDS-δ uses the shipped score model `models/{entry['file']}` (sha256 `{entry['sha256']}`, card "
            f"`models/{entry['card']}`), evaluated on subjects it was not trained on; `--retrain` trains one at "
            "this budget instead.")


def _shipped_legopet_note() -> str:
    """The report's line on the shipped LegoPET weights."""
    from bundle.checkpoint import read_manifest

    manifest = read_manifest()
    names = [n for n in ("legopet", "cdpm", "legopet_deeppet") if n in manifest]
    files = ", ".join(f"`models/{manifest[n]['file']}` (sha256 `{manifest[n]['sha256'][:12]}…`)" for n in names)
    return (f"LegoPET, cDPM and DeepPET use the shipped weights {files} (cards `models/<name>.md`), evaluated on "
            "subjects they were not trained on; the diffusion rows give one sample and the mean of N samples; "
            "`--retrain` trains small-preset models (64 × 64 slices) at this budget instead.")


def _shipped_upete_note() -> str:
    """The report's line on the shipped uPETe model."""
    from bundle.checkpoint import read_manifest

    entry = read_manifest()["upete_image"]
    return (f"uPETe uses the shipped image-space model `models/{entry['file']}` (IMG-P-CT, sha256 "
            f"`{entry['sha256'][:12]}…`, card `models/{entry['card']}`) on a torso it was not trained on; with K = 1 "
            "reverse step its output is deterministic, so there is no per-voxel spread to show; `--retrain` trains "
            "the tiny latent story instead.")


def _duration(seconds: float) -> str:
    """``"42 s"`` below two minutes, else ``"3.5 min"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def write_report(output: Path, stages: Sequence[Stage], timings: dict, *, budget: str) -> Path:
    """``OUTPUT/report.md``: per method its tables (the *.md its evaluation wrote) and figures, then the commands."""
    lines = ["# Diffusion-model PET reconstruction: main-job report", "",
             f"Budget `{budget}` ({json.dumps(BUDGETS[budget])}"
             + (f"; reduced case list {json.dumps(CASE_LISTS[budget])}" if budget in CASE_LISTS else "")
             + ")." + (" The networks this job trains are trained for minutes on a CPU, so their numbers show that "
                       "every piece runs end to end, not what the methods can reach." if any(
                           "training" in s.argv for s in stages) else " Every learned method runs from its shipped "
                       "weights (models/, sha256-checked), trained on other subjects.")
             + " The longer CPU-scale studies are in docs/petdds.md, docs/legopet.md and docs/upete.md.", ""]
    seconds = {m: sum(s["seconds"] for s in timings["stages"] if s["method"] == m) for m in METHODS}
    for method in dict.fromkeys(s.method for s in stages):
        lines += [f"## {_TITLES[method]}", "", f"Wall time of its stages: {_duration(seconds[method])}.", ""]
        if method == "petdds" and not any(s.name == PETDDS_TRAIN_STAGE for s in stages):
            lines += [_shipped_note(), ""]
        if method == "legopet" and any(s.method == "legopet" and "shipped" in s.name for s in stages):
            lines += [_shipped_legopet_note(), ""]
        if method == "upete" and any(s.method == "upete" and "shipped" in s.name for s in stages):
            lines += [_shipped_upete_note(), ""]
        for folder in (f for s in stages if s.method == method for f in s.results):
            root = output / folder
            files = [root] if root.is_file() else sorted(root.rglob("*"))
            for table in (f for f in files if f.suffix == ".md"):
                lines += [f"From `{table.relative_to(output).as_posix()}`:", "", _embedded(table), ""]
            for figure in (f for f in files if f.suffix == ".png"):
                rel = figure.relative_to(output).as_posix()
                lines += [f"![{figure.stem}]({rel})", ""]
    lines += ["## Commands and wall times", "", "| # | method | stage | started (s) | seconds |",
              "|---|---|---|---|---|"]
    lines += [f"| {i} | {s['method']} | {s['name']} | {s.get('started_s', 0):.0f} | {s['seconds']:.0f} |"
              for i, s in enumerate(timings["stages"], 1)]
    jobs = timings.get("jobs", 1)
    lanes = (f" The methods ran in up to {jobs} lanes side by side (a method's stages one after the other, each "
             "stage's log in `logs/`), so the total is less than the sum of the stages." if jobs > 1 else "")
    lines += ["", f"Total (wall time): {_duration(timings['total_seconds'])}.{lanes} Every command is in "
              "`story_commands.sh`.", ""]
    report = output / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bundle.story", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path("results"))
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--budget", default="demo", choices=sorted(BUDGETS))
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="methods run side by side in up to this many lanes (default: 2, or 1 on one core); 1 runs "
                             "the stages one after the other with their progress bars on this terminal")
    parser.add_argument("--retrain", action="store_true",
                        help="PET-DDS-δ, LegoPET and uPETe: train at the budget instead of using the shipped weights")
    args = parser.parse_args(argv)
    for stream in (sys.stdout, sys.stderr):  # stage names hold δ; an ASCII terminal gets an escape, not a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    methods = [m for m in args.methods.split(",") if m]
    try:
        stages = plan(args.output, methods, args.budget, retrain=args.retrain)
        timings = run_stages(args.output, stages, jobs=args.jobs)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = write_report(args.output, stages, timings, budget=args.budget)
    print(f"\nreport: {report.resolve()}  ({timings['total_seconds'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
