"""The method studies, stage by stage, through ``python -m monai.bundle run`` (the story's runner, longer budgets).

    python -m bundle.study legopet --dataset-dir DATA --output OUT [--preset tiny.json,small.json] [--stages ...]

``legopet``: train PnPNet, DeepPET, the GAN baselines (cGAN, Pix2Pix), cDPM and LegoPET with equal budgets (DeepPET
and the GANs: the regression epochs; cDPM and LegoPET: same epochs, batch, seed and interval checkpoints), then the
evaluation table, the training-progress curve, the training-vs-held-out denoising loss of every checkpoint, the
DDIM-vs-DDPM sampling cost and the guidance-weight (λ2) sweep.  Every command is printed and appended to
``OUTPUT/study_commands.sh``, the wall time of every stage to ``OUTPUT/study_timings.json``
(:func:`bundle.story.run_stages`); each command's config files are a recipe of ``configs/recipes.json`` with the
``--preset`` overlays after it.

Example (CPU preset on the embedded-default data)::

    python -m bundle.data build legopet --output /tmp/legopet/data --preset tiny
    nice python -m bundle.study legopet --dataset-dir /tmp/legopet/data --output /tmp/legopet/run

The 64 × 64 CPU study (docs/legopet.md): ``--preset small`` data and ``--preset tiny.json,small.json``.  An ablation
(e.g. the paper's p_dp = 0 without guidance) retrains only the diffusion models into another OUTPUT and reuses the
PnPNet and DeepPET of the first run::

    python -m bundle.study legopet --dataset-dir D --output O2 --preset tiny.json,small.json --p-dp 0 \
        --guidance-scale 0 --reuse-regression O1 --stages cdpm,legopet,evaluating,training_progress

The table gets the cGAN / Pix2Pix rows (``evaluate.json``'s ``gan_rows``, with ``gan.json`` layered) for each GAN
whose stage is part of this run, else whose final checkpoint exists under ``--reuse-regression`` (used from
there), else under OUTPUT (an earlier run into the same folder); a GAN found nowhere is left out of the table.  The
checkpoints are looked up when the commands are built, before any stage runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bundle.recipes import recipe
from bundle.story import Stage, run_stages

__all__ = ["GANS", "STAGES", "commands", "gan_rows", "main", "parse_args"]

STAGES = ("pnpnet", "deeppet", "cgan", "pix2pix", "cdpm", "legopet", "cdpm_image", "legopet_image", "evaluating",
          "training_progress", "denoising_loss", "sampling_cost", "guidance_sweep")
"""The LegoPET study's stages, in the order they run."""
GANS = {"cgan": "cGAN", "pix2pix": "Pix2Pix"}
IMAGE_CONDITION = {"cdpm_image": "cDPM + image condition", "legopet_image": "LegoPET + image condition"}
"""Image-condition stage (= recipe and checkpoint folder) → row name of the evaluation table (beyond the paper)."""
"""GAN stage (= model name, recipe and checkpoint option prefix) → row name of the evaluation table."""


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
    """The ``monai.bundle run`` command of every stage of the LegoPET study."""
    common = ["--dataset_dir", args.dataset_dir, "--bundle_root", args.output]
    preset = tuple(f"legopet/{p}" for p in args.preset.split(",") if p)
    regression = ["--max_epochs", str(args.regression_epochs), "--val_interval", str(args.val_interval)]
    pnpnet, deeppet = [], []
    if args.reuse_regression:
        results = f"{args.reuse_regression}/results"
        pnpnet = ["--pnpnet_ckpt", f"{results}/pnpnet/checkpoints/pnpnet_final.pt"]
        deeppet = ["--deeppet_ckpt", f"{results}/deeppet/checkpoints/deeppet_final.pt"]
    p_dp = [] if args.p_dp is None else ["--p_dp", repr(args.p_dp)]
    lr = [] if args.diffusion_lr is None else ["--diffusion_learning_rate", repr(args.diffusion_lr)]
    seed = [] if args.diffusion_seed is None else ["--seed", str(args.diffusion_seed)]
    diffusion = ["--max_epochs", str(args.diffusion_epochs), "--ckpt_interval", str(args.ckpt_interval), *p_dp,
                 *lr, *seed, *pnpnet]
    guidance = [] if args.guidance_scale is None else ["--guidance_scale", repr(args.guidance_scale)]
    evaluation = ["--num_inference_steps", str(args.steps), *guidance, *pnpnet, *deeppet]
    rows, gan_ckpts = gan_rows(args)
    gan_options = ["--gan_rows", "[" + ",".join(f"'{r}'" for r in rows) + "]", *gan_ckpts] if rows else []
    extensions = [row for model, row in IMAGE_CONDITION.items()
                  if model in args.stages or _final(args.output, model).is_file()]
    if extensions:
        gan_options += ["--extension_rows", "[" + ",".join(f"'{r}'" for r in extensions) + "]"]
    progress = [] if args.progress_slices is None else ["--eval_limit", str(args.progress_slices)]
    ddpm = ["--cost_ddpm_samplers", "[]"] if args.no_ddpm else []
    sweep = ["--num_inference_steps", str(args.steps), *pnpnet, "--guidance_scales", f"[{args.sweep_scales}]"]
    if args.sweep_slices is not None:
        sweep += ["--eval_limit", str(args.sweep_slices)]

    def run(name: str, *options: str, run_id: str | None = None) -> list[str]:
        return list(recipe(f"legopet/{name}").command(*options, overlays=preset, run=run_id))

    return {
        "pnpnet": run("pnpnet", *common, *regression),
        "deeppet": run("deeppet", *common, *regression),
        **{model: run(model, *common, *regression) for model in GANS},
        "cdpm": run("cdpm", *common, *diffusion),
        "legopet": run("legopet", *common, *diffusion),
        **{model: run(model, *common, *diffusion) for model in IMAGE_CONDITION},
        "evaluating": run("evaluate_gan" if rows else "evaluate", *common, *evaluation, *gan_options),
        "training_progress": run("evaluate", *common, *evaluation, *progress, run_id="training_progress"),
        "denoising_loss": run("evaluate", *common, *pnpnet, *progress, run_id="denoising_loss"),
        "sampling_cost": run("evaluate", *common, "--cost_limit", str(args.cost_slices), *guidance, *pnpnet, *ddpm,
                             run_id="sampling_cost"),
        "guidance_sweep": run("evaluate", *common, *sweep, run_id="guidance_sweep"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (``legopet`` and its options); ``SystemExit`` with a message for a bad option."""
    parser = argparse.ArgumentParser(prog="python -m bundle.study", description=__doc__.split("\n\n")[0])
    studies = parser.add_subparsers(dest="study", required=True)
    sub = studies.add_parser("legopet", help="the LegoPET study (docs/legopet.md)")
    sub.add_argument("--dataset-dir", required=True, help="legopet dataset (python -m bundle.data build legopet)")
    sub.add_argument("--output", required=True, help="bundle_root; results go to OUTPUT/results")
    sub.add_argument("--preset", default="tiny.json",
                     help="comma-separated preset configs of configs/legopet layered last, in order ('' = paper "
                     "defaults; 'tiny.json,small.json' = the 64 x 64 CPU study)")
    sub.add_argument("--regression-epochs", type=int, default=40, help="PnPNet, DeepPET, cGAN and Pix2Pix epochs")
    sub.add_argument("--diffusion-epochs", type=int, default=40,
                     help="cDPM, LegoPET and image-condition epochs (equal budgets)")
    sub.add_argument("--val-interval", type=int, default=10)
    sub.add_argument("--ckpt-interval", type=int, default=10, help="epochs between progress-curve checkpoints")
    sub.add_argument("--steps", type=int, default=20, help="DDIM steps of the table and the curve")
    sub.add_argument("--cost-slices", type=int, default=2, help="slices of the sampling-cost study")
    sub.add_argument("--progress-slices", type=int, default=None, help="test slices of the curve (default all)")
    sub.add_argument("--no-ddpm", action="store_true", help="leave the T-step DDPM row out of the cost study")
    sub.add_argument("--p-dp", type=float, default=None,
                     help="condition-dropout probability of both diffusion trainings (default: the config's 0.1)")
    sub.add_argument("--diffusion-lr", type=float, default=None,
                     help="Adam learning rate of both diffusion trainings (default: the layered configs')")
    sub.add_argument("--diffusion-seed", type=int, default=None,
                     help="training seed of both diffusion models (initial weights, timesteps, noise, dropout); "
                     "the evaluation keeps the config's seed, so x_T is the same for every training seed")
    sub.add_argument("--guidance-scale", type=float, default=None,
                     help="λ2 of the table, curve and cost study (default: the config's 1.0)")
    sub.add_argument("--sweep-scales", default="0,0.5,1,2,4", help="comma-separated λ2 values of guidance_sweep")
    sub.add_argument("--sweep-slices", type=int, default=None, help="slices of the λ2 sweep (default all)")
    sub.add_argument("--reuse-regression", default=None, metavar="OUTPUT",
                     help="use the PnPNet and DeepPET trained under this earlier OUTPUT (for ablations), and its "
                     "cGAN / Pix2Pix where it has them and their stages are not part of this run")
    sub.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        sub.error(f"--stages must name stages among {list(STAGES)}, got {unknown}")
    args.stages = stages
    if args.p_dp is not None and not 0.0 <= args.p_dp <= 1.0:
        sub.error(f"--p-dp must be in [0, 1], got {args.p_dp}")
    if args.diffusion_seed is not None and args.diffusion_seed < 0:
        sub.error(f"--diffusion-seed must be >= 0, got {args.diffusion_seed}")
    if args.diffusion_lr is not None and not args.diffusion_lr > 0.0:
        sub.error(f"--diffusion-lr must be > 0, got {args.diffusion_lr}")
    if args.guidance_scale is not None and not args.guidance_scale >= 0.0:
        sub.error(f"--guidance-scale must be >= 0, got {args.guidance_scale}")
    try:
        scales = [float(v) for v in args.sweep_scales.split(",") if v.strip()]
    except ValueError:
        sub.error(f"--sweep-scales must be comma-separated numbers, got {args.sweep_scales!r}")
    if not scales or any(not v >= 0.0 for v in scales):
        sub.error(f"--sweep-scales must hold numbers >= 0, got {args.sweep_scales!r}")
    args.sweep_scales = ",".join(repr(v) for v in scales)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    todo = commands(args)
    stages = [Stage(args.study, stage, tuple(todo[stage])) for stage in args.stages]
    try:
        run_stages(Path(args.output), stages, log="study")
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
