"""bundle._checks: one message format for integer, number, sequence and choice arguments."""

from __future__ import annotations

from enum import StrEnum

import pytest
import torch

from bundle._checks import check_choice, check_int, check_nonnegative, check_positive, check_sequence


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


def test_check_positive_accepts_reals_and_one_element_tensors():
    assert check_positive(2, "k") == 2.0 and check_positive(torch.tensor(0.5, dtype=torch.float64), "k") == 0.5
    with pytest.raises(TypeError, match="k must be a real number, got True"):
        check_positive(True, "k")
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="k must be finite and > 0"):
            check_positive(bad, "k")


def test_check_nonnegative_and_check_sequence():
    assert check_nonnegative(0, "beta") == 0.0
    with pytest.raises(TypeError, match="beta must be a finite number >= 0"):
        check_nonnegative("1", "beta")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got -1"):
        check_nonnegative(-1, "beta")
    assert check_sequence((1, 2.5), "betas", check_nonnegative) == [1.0, 2.5]
    with pytest.raises(TypeError, match="betas must be a non-empty sequence"):
        check_sequence([], "betas", check_nonnegative)
    with pytest.raises(ValueError, match=r"betas\[1\] must be a finite number >= 0"):
        check_sequence([1, -2], "betas", check_nonnegative)
