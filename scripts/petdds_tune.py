"""Grid search of PET-DDS-δ settings (λ_DDS, δ, diffusion steps N, DC steps p) on a *validation* volume.

For each low-count realisation of the chosen subject (default: the first ``validation`` subject of the dataset) the
OSEM image (21 × 2) that fixes the slice scale c_z is computed once; then every grid point is reconstructed with
``torch.Generator().manual_seed(seed + realisation)`` and scored against the full-count reference in the head mask
(:func:`bundle.metrics.image_metrics`, convention ``"petdds"``: NRMSE / PSNR / SSIM, NRMSE and SSIM in %).  The
test subject is never touched, so the chosen settings can be used on it without tuning on test data.

Writes ``tune.json`` (every point with its metrics and :attr:`PETDDSInferer.timings`) and ``tune.md`` (mean over the
realisations, sorted by NRMSE) into ``--output``.  ``--shard i/n`` runs every n-th grid point (to use two processes).

``--baselines_only`` skips PET-DDS-δ and instead tunes the MAP-EM baseline on the same validation realisations:
:func:`bundle.workflows.petdds.evaluate_petdds` (``split=validation``) for every relative β in ``--map_em_beta`` and
every pass count in ``--map_em_iterations``; writes ``tune_map_em.md`` (OSEM row included).

Usage::

    OMP_NUM_THREADS=1 python -m scripts.petdds_tune --dataset_dir DS --checkpoint CKPT --output DIR \
        --lambda_dds 0.3 1 3 --delta 0.2 0.5 --steps 25 --p 5 [--realisations 1] [--shard 0/2]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from bundle.checkpoint import load_weights
from bundle.data.petdds import load_petdds_case
from bundle.inferers.petdds import default_inferer
from bundle.metrics import MetricConvention, image_metrics
from bundle.physics import osem, select_views, view_subsets
from bundle.recipes import recipe
from bundle.workflows.petdds import (
    evaluate_petdds,
)


def trained_network(checkpoint: Path, configs: list[str]) -> torch.nn.Module:
    """The ``network_def`` of ``configs`` (MONAI bundle config files) with the weights of ``checkpoint``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(configs)
    return load_weights(parser.get_parsed_content("network_def"), checkpoint)


PERCENT = MetricConvention.PETDDS
"""The tables this script writes keep the PET-DDS paper's units (NRMSE and SSIM in %)."""


def tune_map_em(args: argparse.Namespace) -> int:
    """MAP-EM (relative β × passes) and OSEM on the ``--split`` subjects' first ``--realisations`` realisations."""
    rows = []
    for beta, iterations in itertools.product(args.map_em_beta, args.map_em_iterations):
        result = evaluate_petdds(args.dataset_dir, output_dir=Path(args.output) / f"map_em_{beta:g}_{iterations}",
                                 methods=["OSEM", "MAP-EM"], osem=(args.subsets, 2), map_em_beta=beta,
                                 map_em_iterations=iterations, realisations=args.realisations, split=args.split,
                                 save_images=False, figures=False, metric_convention=PERCENT)
        summary = result["summary"]
        if not rows:
            rows.append(("OSEM", "", "", summary["OSEM"]))
        rows.append(("MAP-EM", f"{beta:g}", str(iterations), summary["MAP-EM"]))
    lines = ["| method | β (relative) | passes | NRMSE | PSNR | SSIM |", "|" + " --- |" * 6]
    for method, beta, iterations, summary in sorted(rows, key=lambda row: row[3]["NRMSE"]["mean"]):
        metrics = " | ".join(f"{summary[m]['mean']:.2f}" for m in ("NRMSE", "PSNR", "SSIM"))
        lines.append(f"| {method} | {beta} | {iterations} | {metrics} |")
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "tune_map_em.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--configs", nargs="+",
                        default=[str(path) for path in recipe("petdds/train").paths()])
    parser.add_argument("--split", default="validation")
    parser.add_argument("--realisations", type=int, default=1)
    parser.add_argument("--lambda_dds", type=float, nargs="+", default=[1.0])
    parser.add_argument("--delta", type=float, nargs="+", default=[0.2])
    parser.add_argument("--steps", type=int, nargs="+", default=[100])
    parser.add_argument("--p", type=int, nargs="+", default=[5])
    parser.add_argument("--lambda_rdp", type=float, default=1e-4)
    parser.add_argument("--subsets", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", default="0/1", help="i/n: run grid points i, i + n, i + 2n, ...")
    parser.add_argument("--baselines_only", action="store_true")
    parser.add_argument("--map_em_beta", type=float, nargs="+", default=[0.001, 0.002, 0.005, 0.01])
    parser.add_argument("--map_em_iterations", type=int, nargs="+", default=[1, 2, 3, 5])
    args = parser.parse_args(argv)
    if args.split == "test":
        parser.error("--split test: tune on validation data, not on the test subjects")
    if args.baselines_only:
        return tune_map_em(args)
    index, count = (int(v) for v in args.shard.split("/"))
    if not 0 <= index < count:
        parser.error(f"--shard must be i/n with 0 <= i < n, got {args.shard!r}")

    datalist = json.loads((Path(args.dataset_dir) / "datalist.json").read_text(encoding="utf-8"))
    if not datalist.get(args.split):
        parser.error(f"split {args.split!r} of {args.dataset_dir} has no subjects")
    entry = datalist[args.split][0]
    network = trained_network(Path(args.checkpoint), args.configs)
    grid = list(itertools.product(args.lambda_dds, args.delta, args.steps, args.p))[index::count]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    points = []
    for r in range(args.realisations):
        case = load_petdds_case(args.dataset_dir, entry, low_index=r)
        indices = view_subsets(case.model.n_views, args.subsets)
        initial = osem([case.model.subset(i) for i in indices], [select_views(case.counts, i) for i in indices],
                       num_iterations=2)
        for lambda_dds, delta, steps, p in grid:
            inferer = default_inferer(num_subsets=args.subsets, num_inference_steps=steps, steps_per_diffusion_step=p,
                                      delta=delta, lambda_dds=lambda_dds, lambda_rdp=args.lambda_rdp)
            image = inferer(case.counts, network, models=case.model, initial_osem=initial,
                            generator=torch.Generator().manual_seed(args.seed + r))
            point = {"subject": entry["id"], "realisation": r, "lambda_dds": lambda_dds, "delta": delta,
                     "steps": steps, "p": p, **image_metrics(image, case.reference, mask=case.mask, convention=PERCENT),
                     **inferer.timings}
            points.append(point)
            print(json.dumps(point), flush=True)
    suffix = "" if count == 1 else f"_{index}of{count}"
    (out / f"tune{suffix}.json").write_text(json.dumps({"settings": vars(args), "points": points}, indent=2),
                                           encoding="utf-8")
    keys = sorted({(p["lambda_dds"], p["delta"], p["steps"], p["p"]) for p in points})
    rows = []
    for key in keys:
        chosen = [p for p in points if (p["lambda_dds"], p["delta"], p["steps"], p["p"]) == key]
        mean = {m: sum(p[m] for p in chosen) / len(chosen) for m in ("NRMSE", "PSNR", "SSIM", "total_s")}
        rows.append((mean["NRMSE"], key, mean))
    lines = ["| λ_DDS | δ | N | p | NRMSE | PSNR | SSIM | s/recon |", "|" + " --- |" * 8]
    for _, (lambda_dds, delta, steps, p), mean in sorted(rows):
        lines.append(f"| {lambda_dds:g} | {delta:g} | {steps} | {p} | {mean['NRMSE']:.2f} | {mean['PSNR']:.2f} | "
                     f"{mean['SSIM']:.2f} | {mean['total_s']:.1f} |")
    (out / f"tune{suffix}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
