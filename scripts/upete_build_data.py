"""Build the uPETe torso dataset with a chosen number of subjects (the ``python -m bundle.data`` CLI fixes 2/1/1).

    .venv/bin/python scripts/upete_build_data.py --output /tmp/upete/data --subjects 16 --split 10 2 4 \
        [--full-counts 5e6]

Same phantoms, simulation and reconstruction as ``python -m bundle.data build upete --preset tiny``; only the number
of subjects and the split change (test subjects also get the 1, 2, 5, 20 and 50 % doses), and ``--full-counts``
(default: the preset's) sets the standard-dose counts, hence how noisy every dose is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--split", type=int, nargs=3, default=(10, 2, 4), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-counts", type=float, default=None, help="standard-dose total counts")
    args = parser.parse_args(argv)
    from bundle.data.build import build_dataset

    overrides = {} if args.full_counts is None else {"full_counts": args.full_counts}
    datalist = build_dataset("upete", output=args.output, preset_name=args.preset, seed=args.seed,
                             subjects=args.subjects, split=tuple(args.split), **overrides)
    print({k: len(v) for k, v in datalist.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
