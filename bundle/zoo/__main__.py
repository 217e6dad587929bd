"""``python -m bundle.zoo export ...`` (see :mod:`bundle.zoo.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
