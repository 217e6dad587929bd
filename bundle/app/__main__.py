"""``python -m bundle.app infer ...`` (see :mod:`bundle.app.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
