"""Run every bad input of issue 14 through the command lines and count how each ended.

Each case (``bundle/app/bad_input_cases.py``) runs in a subprocess on tiny inputs fabricated in a temporary folder
and is classified (``bundle/app/bad_inputs.py``): named error, handled, traceback, silent wrong, data lost, unclear
exit.  One line per case, then the counts.  Exit status 0 when every case ended as expected, 1 otherwise.

Usage:  python scripts/check_bad_inputs.py [--case NAME ...] [--fresh] [--keep DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repository's bundle package


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/check_bad_inputs.py", description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", help="run only this case (repeat); default: all")
    parser.add_argument("--fresh", action="store_true", help="a new interpreter per command instead of a fork")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--json", help="also write the results (case, outcome, expected, message) to this file")
    args = parser.parse_args(argv)

    from bundle.app.bad_inputs import run_cases, summary

    def report(result) -> None:
        mark = "ok  " if result.ok else "FAIL"
        detail = result.problem or (", ".join(result.changed) if result.changed else "")
        print(f"{mark} {result.case.name:32s} {result.outcome.value:13s} ({result.seconds:4.1f} s) "
              f"{result.runs[-1].message[:150]}{'  <- ' + detail if detail and not result.ok else ''}", flush=True)

    start = time.perf_counter()
    results = run_cases(root=args.keep, fresh=args.fresh, select=args.case, report=report)
    counts = summary(results)
    print(f"\n{time.perf_counter() - start:.0f} s; " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "cases": [
            {"name": r.case.name, "what": r.case.what, "outcome": r.outcome.value, "expected": r.case.expect.value,
             "message": r.runs[-1].message} for r in results]}, indent=1) + "\n", encoding="utf-8")
    return 0 if counts["not as expected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
