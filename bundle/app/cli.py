"""Command line of the infer tasks::

    python -m bundle.app infer --method {legopet,petdds,upete} --image PATH [--ct PATH] --output PATH
        [--checkpoint FILE] [--config-file F ...] [--override KEY=JSON ...] [--device DEV] [--seed N]
        [--normalisation F] [--background F|NUMBER] [--scanner-preset NAME] [--fwhm-mm MM]    (petdds)
        [--sample DATASET/samples/ID --realisation K|full]   (petdds, instead of --image and the files)
        [--count-scale C]                                                                      (legopet)
        [--dose D]                                                                             (upete)

Images are NIfTI (uPETe also reads DICOM series folders through ITK); sinograms are ``.npy``.  The result JSON is
printed and written beside the output as ``<output>.json``.  Bad arguments exit with status 2 and a message that
names the argument and the expected value.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from bundle.errors import report

__all__ = ["build_parser", "main", "parse_overrides"]

_METHOD_KEYS = {
    "petdds": ("normalisation", "background", "sample", "realisation", "scanner_preset", "fwhm_mm", "samples"),
    "legopet": ("count_scale", "samples"),
    "upete": ("ct", "dose"),
}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a#b=[1,2]", "c=text"]`` -> ``{"a#b": [1, 2], "c": "text"}`` (values parsed as JSON, else kept as text;
    :func:`bundle.app.config.method_parser` refuses text for an id whose config value is not a string)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--override must be KEY=VALUE (VALUE as JSON, e.g. network_def#channels=[8,8]), got "
                             f"{item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The ``argparse`` parser (``infer`` sub-command)."""
    from .registry import METHODS

    parser = argparse.ArgumentParser(prog="python -m bundle.app", description="MONAI Label-style inference")
    commands = parser.add_subparsers(dest="command", required=True)
    infer = commands.add_parser("infer", help="run one method's infer task on one input")
    infer.add_argument("--method", required=True, choices=METHODS)
    infer.add_argument("--image", help="petdds/legopet: .npy sinogram; upete: PET NIfTI or DICOM dir (required, "
                       "except petdds with --sample)")
    infer.add_argument("--output", required=True, help=".nii/.nii.gz file or an existing folder")
    infer.add_argument("--checkpoint", help="weights file (default: the config's checkpoint; petdds: the shipped "
                       "models/petdds_score.pt)")
    infer.add_argument("--config-file", action="append", dest="config_files", help="layered configs (repeat)")
    infer.add_argument("--override", action="append", default=[], help="config override KEY=JSON (repeat)")
    infer.add_argument("--device", help="e.g. cpu or cuda:0 (default: the config's device)")
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--overwrite", action="store_true",
                       help="replace existing output files (image, _std/_cv companion, .json sidecar)")
    infer.add_argument("--ct", help="upete: CT NIfTI or DICOM series folder on the PET grid")
    infer.add_argument("--dose", type=float, help="upete: dose fraction of the input")
    infer.add_argument("--normalisation", help="petdds: .npy multiplicative factors (n ⊙ a ⊙ calibration)")
    infer.add_argument("--background", help="petdds: .npy or number, randoms + scatter counts per bin")
    infer.add_argument("--sample", help="petdds: a dataset sample folder <dataset>/samples/<id>/: its sinogram, "
                       "normalisation, background, scanner and resolution (instead of --image, --normalisation, "
                       "--background)")
    infer.add_argument("--realisation", help="petdds with --sample: k for sinogram_low_k.npy (default 0) or 'full'")
    infer.add_argument("--scanner-preset", help="petdds: scanner preset of the sinogram")
    infer.add_argument("--fwhm-mm", type=float, help="petdds: resolution FWHM in mm")
    infer.add_argument("--samples", type=int, help="petdds: N sampler seeds, N > 1 writes their mean and "
                       "<stem>_cv.nii.gz (voxel-wise std / mean); legopet: N samples (default 4), N > 1 writes their "
                       "mean and <stem>_std.nii.gz (per-pixel standard deviation): the uncertainty images")
    infer.add_argument("--count-scale", type=float, help="legopet: counts per activity unit of the sample")
    return parser


def _request(args: argparse.Namespace) -> dict[str, Any]:
    if args.image is None and not (args.method == "petdds" and args.sample is not None):
        alternative = " (or --sample DIR)" if args.method == "petdds" else ""
        raise ValueError(f"--image is required for --method {args.method}{alternative}")
    request: dict[str, Any] = {"image": args.image, "output": args.output, "seed": args.seed,
                               "overwrite": args.overwrite}
    for key in dict.fromkeys(k for keys in _METHOD_KEYS.values() for k in keys):
        value = getattr(args, key)
        if value is None:
            continue
        owners = [m for m, keys_of in _METHOD_KEYS.items() if key in keys_of]
        if args.method not in owners:
            raise ValueError(f"--{key.replace('_', '-')} applies to --method {' / '.join(owners)} only, not "
                             f"{args.method}")
        request[key] = value
    return request


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments or inputs)."""
    args = build_parser().parse_args(argv)
    from .registry import build_task

    try:
        request = _request(args)
        task = build_task(args.method, checkpoint=args.checkpoint, config_files=args.config_files,
                          overrides=parse_overrides(args.override), device=args.device)
        path, result = task(request)
    except Exception as error:  # report() re-raises anything that is not bad input
        return report(error)
    from .task import sidecar_path

    sidecar_path(path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0
