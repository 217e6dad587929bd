"""Compiled Joseph kernels (numba CPU threads, numba CUDA) and the plain-torch reference.

Nothing is compiled or probed on import; each backend compiles on first use.
"""

from __future__ import annotations

__all__: list[str] = []
