"""Model-zoo distribution: export a self-contained bundle folder + zip, verify hashes, extract zips safely.

``python -m bundle.zoo export --method <m> --output <dir> [--checkpoint FILE]``; see :mod:`bundle.zoo.export`.
Importing this package runs nothing.
"""

from __future__ import annotations

from .archive import safe_extract, sha256_file, verify_bundle, write_checksums
from .export import export_bundle

__all__ = ["export_bundle", "safe_extract", "sha256_file", "verify_bundle", "write_checksums"]
