"""Model-zoo distribution: export a self-contained bundle folder + zip, verify hashes, extract zips safely.

``python -m bundle.zoo export --method <m> --output <dir> [--checkpoint FILE]``; see :mod:`bundle.zoo.export`.
``python -m bundle.zoo torchscript --method <m> --output FILE.ts``; see :mod:`bundle.zoo.torchscript`.
``python -m bundle.zoo program BUNDLE_DIR --output FILE.pt2`` (``torch.export`` of ``network_def``); see
:mod:`bundle.zoo.program`.  :mod:`bundle.zoo.workflow` holds what an exported ``configs/inference.json`` runs.
Importing this package runs nothing.
"""

from __future__ import annotations

from .archive import safe_extract, sha256_file, verify_bundle, write_checksums
from .export import export_bundle
from .network_format import forward_args, network_data_format
from .program import export_program
from .torchscript import GuidedLegoPETEpsilon, export_torchscript, trace_network
from .workflow import inference_requests, require_own_code, task_evaluator

__all__ = [
    "GuidedLegoPETEpsilon",
    "export_bundle",
    "export_program",
    "export_torchscript",
    "forward_args",
    "inference_requests",
    "network_data_format",
    "require_own_code",
    "safe_extract",
    "sha256_file",
    "task_evaluator",
    "trace_network",
    "verify_bundle",
    "write_checksums",
]
