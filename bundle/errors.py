"""How command-line entry points report bad input: the root cause, on one line, with exit status 2.

MONAI's config parser wraps an error raised inside a config expression as ``RuntimeError("Failed to evaluate
ConfigExpression: ...")`` (``raise ... from``), possibly several levels deep, so the message that names the argument
ends up last, under a traceback.  :func:`named_error` walks that chain towards its root and returns the first
bad-input error (:data:`NAMED_ERRORS`) in it; :func:`report` prints it as ``error: <message>`` and returns 2.  Any
other exception is a bug and keeps its traceback.  Used by ``python -m bundle.app`` and ``python -m bundle.run``
(``monai.bundle run`` with this reporting).  Importing this module runs nothing.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["NAMED_ERRORS", "named_error", "one_line", "report"]

NAMED_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, NotADirectoryError,
                                                 FileExistsError, ImportError)
"""The exception types the package raises for bad input (arguments, files, configs); their message names the
argument and the value expected."""


def named_error(error: BaseException) -> BaseException | None:
    """The outermost of :data:`NAMED_ERRORS` in ``error``'s ``raise ... from`` chain, else ``None``.

    MONAI's ``RuntimeError`` wraps the package's message (``from``): that message is the first named error below
    it.  A package error that itself wraps a library error (``CheckpointError`` from torch's ``RuntimeError``, the
    sinogram reader's ``ValueError`` from numpy's) is the one to print, its cause a detail."""
    current, seen = error, set()
    while current is not None and id(current) not in seen:
        if isinstance(current, NAMED_ERRORS):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


def one_line(error: BaseException) -> str:
    """``str(error)`` on one line (a ``KeyError``'s quotes dropped, newlines folded to spaces)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def report(error: BaseException, *, stream: TextIO | None = None) -> int:
    """Print ``error: <root cause>`` to ``stream`` (default stderr) and return the exit status 2; re-raise ``error``
    itself when its root is not a bad-input error (a bug: the traceback is the useful report)."""
    named = named_error(error)
    if named is None:
        raise error
    print(f"error: {one_line(named)}", file=stream or sys.stderr)
    return 2
