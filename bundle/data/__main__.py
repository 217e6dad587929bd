"""Command line: ``python -m bundle.data build {legopet,petdds,upete} --output DIR [--preset tiny|small|paper]``.

``--subjects N --split TRAIN,VAL,TEST`` (and, for LegoPET, ``--rotations`` / ``--slices`` per subject) override the
preset, ``--full-counts`` its standard-dose total counts (hence how noisy every dose is); the manifest records the
resulting configuration, e.g. a 64 × 64 study with 16 subjects, or the uPETe study's 16 torsos at 5e6 counts::

    python -m bundle.data build legopet --output data/legopet_16 --preset small --subjects 16 --split 12,2,2
    python -m bundle.data build upete --output data/upete_16 --subjects 16 --split 10,2,4 --full-counts 5e6

``ladder`` adds a precomputed sinogram-domain dose ladder to a built uPETe dataset (:mod:`bundle.data.ladder`)::

    python -m bundle.data ladder data/upete_small --doses 0.005,0.01,0.02,0.035,0.06,0.1,0.18,0.3,0.5 --realisations 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import DatasetKind, DatasetPreset, build_dataset, dataset_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bundle.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or resume) a dataset")
    build.add_argument("kind", choices=[k.value for k in DatasetKind])
    build.add_argument("--output", type=Path, required=True)
    build.add_argument("--preset", default=DatasetPreset.TINY.value, choices=[p.value for p in DatasetPreset])
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--brainweb-dir", type=Path, default=None,
                       help="folder with the brainweb package's cached files (default ~/.brainweb)")
    build.add_argument("--no-progress", action="store_true")
    build.add_argument("--subjects", type=int, default=None, help="number of subjects (default: the preset's)")
    build.add_argument("--split", default=None, metavar="TRAIN,VAL,TEST",
                       help="subjects per split, adding up to --subjects (default: the preset's)")
    build.add_argument("--rotations", type=int, default=None, help="legopet: rotations per subject")
    build.add_argument("--slices", type=int, default=None, help="legopet: axial slices per rotation")
    build.add_argument("--full-counts", type=float, default=None,
                       help="standard-dose total counts (default: the preset's)")
    build.add_argument("--curve-doses", default=None, metavar="F1,F2,...",
                       help="upete: the test subjects' extra low-dose fractions of the dose curve, besides the 10 %% "
                            "of every subject (default: the preset's 0.01,0.02,0.05,0.2,0.5)")
    ladder = sub.add_parser("ladder", help="add a precomputed sinogram-domain dose ladder to a uPETe dataset")
    ladder.add_argument("dataset", type=Path)
    ladder.add_argument("--doses", required=True, help="comma-separated dose fractions in (0, 1)")
    ladder.add_argument("--realisations", type=int, default=2, help="thinned scans per subject and dose")
    ladder.add_argument("--splits", default="training", help="comma-separated datalist splits (default training)")
    ladder.add_argument("--seed", type=int, default=0)
    ladder.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "ladder":
        return _ladder(parser, args)
    overrides = {name: getattr(args, name) for name in ("subjects", "rotations", "slices")
                 if getattr(args, name) is not None}
    if any(value < 1 for value in overrides.values()):
        parser.error(f"--subjects, --rotations and --slices must be >= 1, got {overrides}")
    if args.full_counts is not None:
        if not args.full_counts > 0:
            parser.error(f"--full-counts must be > 0, got {args.full_counts}")
        overrides["full_counts"] = args.full_counts
    if args.curve_doses is not None:
        if args.kind != "upete":
            parser.error(f"--curve-doses is a upete option, got a {args.kind} dataset")
        try:
            overrides["generalisation_fractions"] = tuple(float(v) for v in args.curve_doses.split(","))
        except ValueError:
            parser.error(f"--curve-doses must be comma-separated fractions in (0, 1), got {args.curve_doses!r}")
    if args.split is not None:
        try:
            split = tuple(int(v) for v in args.split.split(","))
        except ValueError:
            split = ()
        if len(split) != 3 or min(split) < 0:
            parser.error(f"--split must be three counts >= 0 as TRAIN,VAL,TEST, got {args.split!r}")
        overrides["split"] = split
    try:
        dataset_config(args.kind, args.preset, **overrides)
    except ValueError as error:
        parser.error(str(error))
    try:
        datalist = build_dataset(args.kind, output=args.output, preset_name=args.preset, seed=args.seed,
                                 brainweb_dir=args.brainweb_dir, progress=not args.no_progress, **overrides)
    except ValueError as error:
        parser.error(str(error))
    counts = ", ".join(f"{k}: {len(v)}" for k, v in datalist.items())
    print(f"{args.kind} dataset in {args.output.resolve()} ({counts}); see datalist.json and manifest.json")
    return 0


def _ladder(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .ladder import build_dose_ladder

    try:
        doses = [float(v) for v in args.doses.split(",")]
    except ValueError:
        parser.error(f"--doses must be comma-separated numbers, got {args.doses!r}")
    try:
        settings = build_dose_ladder(args.dataset, doses=doses, realisations=args.realisations,
                                     splits=args.splits.split(","), seed=args.seed, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    print(f"dose ladder in {args.dataset.resolve()}: doses {settings['doses']}, {settings['realisations']} "
          f"realisation(s), splits {settings['splits']} (ladder.json, datalist keys ladder_pet / ladder_dose)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
