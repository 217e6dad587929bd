"""Command line: ``python -m bundle.data build {legopet,petdds,upete} --output DIR [--preset tiny|small|paper]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build import DatasetKind, DatasetPreset, build_dataset


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
    args = parser.parse_args(argv)
    datalist = build_dataset(args.kind, output=args.output, preset_name=args.preset, seed=args.seed,
                             brainweb_dir=args.brainweb_dir, progress=not args.no_progress)
    counts = ", ".join(f"{k}: {len(v)}" for k, v in datalist.items())
    print(f"{args.kind} dataset in {args.output.resolve()} ({counts}); see datalist.json and manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
