"""Run the whole LegoPET study through `python -m monai.bundle run`: train PnPNet, DeepPET, cDPM and LegoPET with
equal budgets (cDPM and LegoPET: same epochs, batch, seed and interval checkpoints), then the evaluation table, the
training-progress curve and the DDIM-vs-DDPM sampling cost.  Prints every command, writes them to
``OUTPUT/pipeline_commands.sh`` and the wall time of every stage to ``OUTPUT/pipeline_timings.json``.

Example (CPU preset on the embedded-default data)::

    python -m bundle.data build legopet --output /tmp/legopet/data --preset tiny
    nice python scripts/legopet_pipeline.py --dataset-dir /tmp/legopet/data --output /tmp/legopet/run

Argument parsing only at import; nothing runs until ``main()``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("pnpnet", "deeppet", "cdpm", "legopet", "evaluating", "training_progress", "sampling_cost")


def _config(*names: str) -> str:
    files = ["configs/common.json", *(f"configs/legopet/{n}" for n in names)]
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The ``monai.bundle run`` command of every stage."""
    common = ["--dataset_dir", args.dataset_dir, "--bundle_root", args.output]
    preset = [args.preset] if args.preset else []
    regression = ["--max_epochs", str(args.regression_epochs), "--val_interval", str(args.val_interval)]
    diffusion = ["--max_epochs", str(args.diffusion_epochs), "--ckpt_interval", str(args.ckpt_interval)]
    evaluation = ["--num_inference_steps", str(args.steps)]
    run = [sys.executable, "-m", "monai.bundle", "run"]
    evaluate = _config("train_legopet.json", "deeppet.json", "evaluate.json", *preset)
    progress = [] if args.progress_slices is None else ["--eval_limit", str(args.progress_slices)]
    ddpm = ["--cost_ddpm_samplers", "[]"] if args.no_ddpm else []
    return {
        "pnpnet": [*run, "training", "--config_file", _config("train_pnpnet.json", *preset), *common, *regression],
        "deeppet": [*run, "training", "--config_file",
                    _config("train_pnpnet.json", "deeppet.json", "train_deeppet.json", *preset), *common, *regression],
        "cdpm": [*run, "training", "--config_file", _config("train_legopet.json", "cdpm.json", *preset), *common,
                 *diffusion],
        "legopet": [*run, "training", "--config_file", _config("train_legopet.json", *preset), *common, *diffusion],
        "evaluating": [*run, "evaluating", "--config_file", evaluate, *common, *evaluation],
        "training_progress": [*run, "training_progress", "--config_file", evaluate, *common, *evaluation,
                              *progress],
        "sampling_cost": [*run, "sampling_cost", "--config_file", evaluate, *common, "--cost_limit",
                          str(args.cost_slices), *ddpm],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-dir", required=True, help="legopet dataset (python -m bundle.data build legopet)")
    parser.add_argument("--output", required=True, help="bundle_root; results go to OUTPUT/results")
    parser.add_argument("--preset", default="tiny.json", help="preset config layered last ('' = paper defaults)")
    parser.add_argument("--regression-epochs", type=int, default=40, help="PnPNet and DeepPET epochs")
    parser.add_argument("--diffusion-epochs", type=int, default=40, help="cDPM and LegoPET epochs (equal budgets)")
    parser.add_argument("--val-interval", type=int, default=10)
    parser.add_argument("--ckpt-interval", type=int, default=10, help="epochs between progress-curve checkpoints")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of the table and the curve")
    parser.add_argument("--cost-slices", type=int, default=2, help="slices of the sampling-cost study")
    parser.add_argument("--progress-slices", type=int, default=None, help="test slices of the curve (default all)")
    parser.add_argument("--no-ddpm", action="store_true", help="leave the T-step DDPM row out of the cost study")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages must name stages among {list(STAGES)}, got {unknown}")
    args.stages = stages
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    todo = commands(args)
    timings_path = out / "pipeline_timings.json"
    timings = json.loads(timings_path.read_text(encoding="utf-8")) if timings_path.is_file() else {}
    with (out / "pipeline_commands.sh").open("a", encoding="utf-8") as script:
        for stage in args.stages:
            line = shlex.join(todo[stage])
            print(f"[{stage}] {line}", flush=True)
            script.write(line + "\n")
            start = time.perf_counter()
            result = subprocess.run(todo[stage], cwd=ROOT)
            timings[stage] = {"seconds": time.perf_counter() - start, "returncode": result.returncode}
            timings_path.write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
            print(f"[{stage}] {timings[stage]['seconds']:.1f} s, return code {result.returncode}", flush=True)
            if result.returncode != 0:
                return result.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
