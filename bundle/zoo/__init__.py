"""Model-zoo distribution: export a self-contained bundle folder + zip, verify hashes, extract zips safely.

``python -m bundle.zoo export --method <m> --output <dir> [--checkpoint FILE]``; see :mod:`bundle.zoo.export`.
``python -m bundle.zoo torchscript --method <m> --output FILE.ts``; see :mod:`bundle.zoo.torchscript`.
Importing this package runs nothing.
"""

from __future__ import annotations

from .archive import safe_extract, sha256_file, verify_bundle, write_checksums
from .export import export_bundle
from .torchscript import GuidedLegoPETEpsilon, export_torchscript, trace_network

__all__ = [
    "GuidedLegoPETEpsilon",
    "export_bundle",
    "export_torchscript",
    "safe_extract",
    "sha256_file",
    "trace_network",
    "verify_bundle",
    "write_checksums",
]
