"""``python -m bundle.zoo export --method M --output DIR [--checkpoint FILE] [--override KEY=JSON ...]
[--name NAME] [--no-zip]``, ``python -m bundle.zoo torchscript --method M --output FILE.ts [--checkpoint FILE]``
``python -m bundle.zoo program BUNDLE_DIR --output FILE.pt2`` (torch.export of an exported bundle's network_def)
and ``python -m bundle.zoo verify DIR`` / ``extract ZIP DIR``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments, a failed check or a bad archive)."""
    from bundle.app.cli import parse_overrides
    from bundle.app.registry import METHODS

    parser = argparse.ArgumentParser(prog="python -m bundle.zoo", description="model-zoo bundles")
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write <output>/<name>/ and <output>/<name>.zip")
    export.add_argument("--method", required=True, choices=METHODS)
    export.add_argument("--output", required=True)
    export.add_argument("--checkpoint")
    export.add_argument("--override", action="append", default=[], help="config override KEY=JSON (repeat)")
    export.add_argument("--name")
    export.add_argument("--no-zip", action="store_true")
    script = commands.add_parser("torchscript", help="trace the trained network to a TorchScript file")
    script.add_argument("--method", required=True, choices=METHODS)
    script.add_argument("--output", required=True)
    script.add_argument("--checkpoint")
    script.add_argument("--override", action="append", default=[], help="config override KEY=JSON (repeat)")
    program = commands.add_parser("program", help="torch.export an exported bundle's network_def to a .pt2 file")
    program.add_argument("bundle_dir")
    program.add_argument("--output", required=True)
    verify = commands.add_parser("verify", help="check checksums.sha256 of an exported bundle")
    verify.add_argument("bundle_dir")
    extract = commands.add_parser("extract", help="unzip a bundle safely (zip-slip checks)")
    extract.add_argument("archive")
    extract.add_argument("target")
    args = parser.parse_args(argv)

    from .archive import safe_extract, verify_bundle
    from .export import export_bundle
    from .program import export_program
    from .torchscript import export_torchscript

    try:
        if args.command == "export":
            root = export_bundle(method=args.method, output=args.output, checkpoint=args.checkpoint,
                                 overrides=parse_overrides(args.override), name=args.name,
                                 make_zip=not args.no_zip)
            print(root)
        elif args.command == "torchscript":
            print(export_torchscript(method=args.method, output=args.output, checkpoint=args.checkpoint,
                                     overrides=parse_overrides(args.override)))
        elif args.command == "program":
            print(export_program(args.bundle_dir, output=args.output))
        elif args.command == "verify":
            print(f"{len(verify_bundle(args.bundle_dir))} files verified")
        else:
            print(f"{len(safe_extract(args.archive, args.target))} files extracted to {args.target}")
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
