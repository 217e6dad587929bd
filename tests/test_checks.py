"""bundle._checks: one message format for integer and choice arguments."""

from __future__ import annotations

from enum import StrEnum

import pytest

from bundle._checks import check_choice, check_int


class _Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


def test_check_choice_returns_the_member_or_lists_the_choices():
    assert check_choice("blue", _Colour, "colour") is _Colour.BLUE
    assert check_choice(_Colour.RED, _Colour, "colour") is _Colour.RED
    with pytest.raises(ValueError, match=r"colour must be one of \['red', 'blue'\], got 'green'"):
        check_choice("green", _Colour, "colour")


def test_check_int_rejects_bools_and_small_values():
    assert check_int(3, "n", minimum=1) == 3
    with pytest.raises(TypeError, match="n must be an int >= 1, got True"):
        check_int(True, "n", minimum=1)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        check_int(0, "n", minimum=1)
