"""Run the whole LegoPET study through `python -m monai.bundle run`: train PnPNet, DeepPET, the GAN baselines (cGAN,
Pix2Pix), cDPM and LegoPET with equal budgets (DeepPET and the GANs: the regression epochs; cDPM and LegoPET: same
epochs, batch, seed and interval checkpoints), then the evaluation table, the training-progress curve, the
training-vs-held-out denoising loss of every checkpoint, the DDIM-vs-DDPM sampling cost and the guidance-weight (λ2)
sweep.  Prints every command,
writes them to ``OUTPUT/pipeline_commands.sh`` and the wall time of every stage to ``OUTPUT/pipeline_timings.json``.

Example (CPU preset on the embedded-default data)::

    python -m bundle.data build legopet --output /tmp/legopet/data --preset tiny
    nice python scripts/legopet_pipeline.py --dataset-dir /tmp/legopet/data --output /tmp/legopet/run

The 64 × 64 CPU study (docs/legopet.md): ``--preset small`` data and ``--preset tiny.json,small.json``.  An ablation
(e.g. the paper's p_dp = 0 without guidance) retrains only the diffusion models into another OUTPUT and reuses the
PnPNet and DeepPET of the first run::

    python scripts/legopet_pipeline.py --dataset-dir D --output O2 --preset tiny.json,small.json --p-dp 0 \
        --guidance-scale 0 --reuse-regression O1 --stages cdpm,legopet,evaluating,training_progress

The table gets the cGAN / Pix2Pix rows (``evaluate.json``'s ``gan_rows``, with ``gan.json`` layered) for each GAN
whose stage is part of this run, else whose final checkpoint exists under ``--reuse-regression`` (used from
there), else under OUTPUT (an earlier run into the same folder); a GAN found nowhere is left out of the table.  The
checkpoints are looked up when the commands are built, before any stage runs.

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
STAGES = ("pnpnet", "deeppet", "cgan", "pix2pix", "cdpm", "legopet", "evaluating", "training_progress",
          "denoising_loss", "sampling_cost", "guidance_sweep")
GANS = {"cgan": "cGAN", "pix2pix": "Pix2Pix"}
"""GAN stage (= model name, config file and checkpoint option prefix) → row name of the evaluation table."""


def _config(*names: str) -> str:
    files = ["configs/common.json", *(f"configs/legopet/{n}" for n in names)]
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def _final(output: str, model: str) -> Path:
    return Path(output) / "results" / model / "checkpoints" / f"{model}_final.pt"


def gan_rows(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The GAN rows of the table and the ``--<model>_ckpt`` options that point at reused checkpoints (module
    docstring: this run's stage, else ``--reuse-regression``, else OUTPUT)."""
    rows, options = [], []
    for model, row in GANS.items():
        reused = _final(args.reuse_regression, model) if args.reuse_regression else None
        if model in args.stages:
            rows.append(row)
        elif reused is not None and reused.is_file():
            rows.append(row)
            options += [f"--{model}_ckpt", str(reused)]
        elif _final(args.output, model).is_file():
            rows.append(row)
    return rows, options


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """The ``monai.bundle run`` command of every stage."""
    common = ["--dataset_dir", args.dataset_dir, "--bundle_root", args.output]
    preset = [p for p in args.preset.split(",") if p]
    regression = ["--max_epochs", str(args.regression_epochs), "--val_interval", str(args.val_interval)]
    pnpnet, deeppet = [], []
    if args.reuse_regression:
        results = f"{args.reuse_regression}/results"
        pnpnet = ["--pnpnet_ckpt", f"{results}/pnpnet/checkpoints/pnpnet_final.pt"]
        deeppet = ["--deeppet_ckpt", f"{results}/deeppet/checkpoints/deeppet_final.pt"]
    p_dp = [] if args.p_dp is None else ["--p_dp", repr(args.p_dp)]
    lr = [] if args.diffusion_lr is None else ["--learning_rate", repr(args.diffusion_lr)]
    seed = [] if args.diffusion_seed is None else ["--seed", str(args.diffusion_seed)]
    diffusion = ["--max_epochs", str(args.diffusion_epochs), "--ckpt_interval", str(args.ckpt_interval), *p_dp,
                 *lr, *seed, *pnpnet]
    guidance = [] if args.guidance_scale is None else ["--guidance_scale", repr(args.guidance_scale)]
    evaluation = ["--num_inference_steps", str(args.steps), *guidance, *pnpnet, *deeppet]
    run = [sys.executable, "-m", "monai.bundle", "run"]
    evaluate = _config("train_legopet.json", "deeppet.json", "evaluate.json", *preset)
    rows, gan_ckpts = gan_rows(args)
    table = ([*run, "evaluating", "--config_file", evaluate, *common, *evaluation] if not rows else
             [*run, "evaluating", "--config_file", _config("train_legopet.json", "deeppet.json", "evaluate.json",
                                                           "gan.json", *preset),
              *common, *evaluation, "--gan_rows", "[" + ",".join(f"'{r}'" for r in rows) + "]", *gan_ckpts])
    progress = [] if args.progress_slices is None else ["--eval_limit", str(args.progress_slices)]
    ddpm = ["--cost_ddpm_samplers", "[]"] if args.no_ddpm else []
    sweep = ["--num_inference_steps", str(args.steps), *pnpnet, "--guidance_scales", f"[{args.sweep_scales}]"]
    if args.sweep_slices is not None:
        sweep += ["--eval_limit", str(args.sweep_slices)]
    return {
        "pnpnet": [*run, "training", "--config_file", _config("train_pnpnet.json", *preset), *common, *regression],
        "deeppet": [*run, "training", "--config_file",
                    _config("train_pnpnet.json", "deeppet.json", "train_deeppet.json", *preset), *common, *regression],
        **{model: [*run, "training", "--config_file",
                   _config("train_pnpnet.json", "gan.json", f"{model}.json", *preset), *common, *regression]
           for model in GANS},
        "cdpm": [*run, "training", "--config_file", _config("train_legopet.json", "cdpm.json", *preset), *common,
                 *diffusion],
        "legopet": [*run, "training", "--config_file", _config("train_legopet.json", *preset), *common, *diffusion],
        "evaluating": table,
        "training_progress": [*run, "training_progress", "--config_file", evaluate, *common, *evaluation,
                              *progress],
        "denoising_loss": [*run, "denoising_loss", "--config_file", evaluate, *common, *pnpnet, *progress],
        "sampling_cost": [*run, "sampling_cost", "--config_file", evaluate, *common, "--cost_limit",
                          str(args.cost_slices), *guidance, *pnpnet, *ddpm],
        "guidance_sweep": [*run, "guidance_sweep", "--config_file", evaluate, *common, *sweep],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset-dir", required=True, help="legopet dataset (python -m bundle.data build legopet)")
    parser.add_argument("--output", required=True, help="bundle_root; results go to OUTPUT/results")
    parser.add_argument("--preset", default="tiny.json",
                        help="comma-separated preset configs of configs/legopet layered last, in order ('' = paper "
                        "defaults; 'tiny.json,small.json' = the 64 x 64 CPU study)")
    parser.add_argument("--regression-epochs", type=int, default=40, help="PnPNet, DeepPET, cGAN and Pix2Pix epochs")
    parser.add_argument("--diffusion-epochs", type=int, default=40, help="cDPM and LegoPET epochs (equal budgets)")
    parser.add_argument("--val-interval", type=int, default=10)
    parser.add_argument("--ckpt-interval", type=int, default=10, help="epochs between progress-curve checkpoints")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps of the table and the curve")
    parser.add_argument("--cost-slices", type=int, default=2, help="slices of the sampling-cost study")
    parser.add_argument("--progress-slices", type=int, default=None, help="test slices of the curve (default all)")
    parser.add_argument("--no-ddpm", action="store_true", help="leave the T-step DDPM row out of the cost study")
    parser.add_argument("--p-dp", type=float, default=None,
                        help="condition-dropout probability of both diffusion trainings (default: the config's 0.1)")
    parser.add_argument("--diffusion-lr", type=float, default=None,
                        help="Adam learning rate of both diffusion trainings (default: the layered configs')")
    parser.add_argument("--diffusion-seed", type=int, default=None,
                        help="training seed of both diffusion models (initial weights, timesteps, noise, dropout); "
                        "the evaluation keeps the config's seed, so x_T is the same for every training seed")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="λ2 of the table, curve and cost study (default: the config's 1.0)")
    parser.add_argument("--sweep-scales", default="0,0.5,1,2,4", help="comma-separated λ2 values of guidance_sweep")
    parser.add_argument("--sweep-slices", type=int, default=None, help="slices of the λ2 sweep (default all)")
    parser.add_argument("--reuse-regression", default=None, metavar="OUTPUT",
                        help="use the PnPNet and DeepPET trained under this earlier OUTPUT (for ablations), and its "
                        "cGAN / Pix2Pix where it has them and their stages are not part of this run")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"--stages must name stages among {list(STAGES)}, got {unknown}")
    args.stages = stages
    if args.p_dp is not None and not 0.0 <= args.p_dp <= 1.0:
        parser.error(f"--p-dp must be in [0, 1], got {args.p_dp}")
    if args.diffusion_seed is not None and args.diffusion_seed < 0:
        parser.error(f"--diffusion-seed must be >= 0, got {args.diffusion_seed}")
    if args.diffusion_lr is not None and not args.diffusion_lr > 0.0:
        parser.error(f"--diffusion-lr must be > 0, got {args.diffusion_lr}")
    if args.guidance_scale is not None and not args.guidance_scale >= 0.0:
        parser.error(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    try:
        scales = [float(v) for v in args.sweep_scales.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--sweep-scales must be comma-separated numbers, got {args.sweep_scales!r}")
    if not scales or any(not v >= 0.0 for v in scales):
        parser.error(f"--sweep-scales must hold numbers >= 0, got {args.sweep_scales!r}")
    args.sweep_scales = ",".join(repr(v) for v in scales)
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
