"""bundle.errors: the first bad-input error of a `raise ... from` chain, printed on one line with exit status 2."""

from __future__ import annotations

import io
import itertools

import pytest

from bundle.checkpoint import CheckpointError
from bundle.errors import named_error, one_line, report


def _chain(*errors: BaseException) -> BaseException:
    """errors[0] raised from errors[1] raised from ... (as MONAI's ConfigExpression wraps the package's error)."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def test_monai_wrapper_gives_way_to_the_package_message():
    ours = FileNotFoundError("dataset_dir 'x' is not a folder")
    wrapped = _chain(RuntimeError("Failed to evaluate ConfigExpression: ..."), RuntimeError("again"), ours)
    assert named_error(wrapped) is ours


def test_a_package_error_wrapping_a_library_error_is_the_one_named():
    ours = CheckpointError("checkpoint m.pt: entry 'network' does not fit")
    assert named_error(_chain(ours, RuntimeError("size mismatch for 200 keys ..."))) is ours
    reader = ValueError("cannot read sinogram s.npy")
    assert named_error(_chain(reader, ValueError("Object arrays cannot be loaded"))) is reader


def test_a_bug_has_no_named_error_and_keeps_its_traceback():
    bug = _chain(RuntimeError("Failed to evaluate"), ZeroDivisionError("division by zero"))
    assert named_error(bug) is None
    with pytest.raises(RuntimeError, match="Failed to evaluate"):
        report(bug, stream=io.StringIO())


def test_report_prints_one_line_and_returns_2():
    stream = io.StringIO()
    assert report(_chain(RuntimeError("wrapper"), ValueError("a must be\n  >= 0, got -1")), stream=stream) == 2
    assert stream.getvalue() == "error: a must be >= 0, got -1\n"
    assert one_line(KeyError("no such key")) == "no such key"
