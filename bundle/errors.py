"""How command-line entry points report bad input: the root cause, on one line, with exit status 2.

MONAI's config parser wraps an error raised inside a config expression as ``RuntimeError("Failed to evaluate
ConfigExpression: ...")`` (``raise ... from``), possibly several levels deep, so the message that names the argument
ends up last, under a traceback.  :func:`named_error` walks that chain back to its root and returns it when it is
a bad-input error (:data:`NAMED_ERRORS`); :func:`report` prints it as ``error: <message>`` and returns 2.  Any
other exception is a bug and keeps its traceback.  Used by ``python -m bundle.app``, ``python -m bundle.run``
(``monai.bundle run`` with this reporting) and ``python -m bundle.data``.  Importing this module runs nothing.
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
    """The root of ``error``'s ``raise ... from`` chain when it is one of :data:`NAMED_ERRORS`, else ``None``."""
    root, seen = error, {id(error)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    return root if isinstance(root, NAMED_ERRORS) else None


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
