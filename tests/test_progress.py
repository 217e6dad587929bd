"""The one progress switch (bundle.progress): BUNDLE_PROGRESS on / off / auto (a terminal), the progress argument."""

from __future__ import annotations

import io

import pytest

from bundle.progress import PROGRESS_ENV, ProgressMode, progress_bar, progress_enabled, progress_mode


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("value", "mode"), [("on", ProgressMode.ON), ("1", ProgressMode.ON), ("OFF", ProgressMode.OFF),
                                             ("false", ProgressMode.OFF), ("auto", ProgressMode.AUTO)])
def test_mode_from_the_environment(monkeypatch, value, mode):
    monkeypatch.setenv(PROGRESS_ENV, value)
    assert progress_mode() is mode


def test_unset_is_auto_and_bad_values_are_named(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_mode() is ProgressMode.AUTO
    monkeypatch.setenv(PROGRESS_ENV, "sometimes")
    with pytest.raises(ValueError, match=r"BUNDLE_PROGRESS must be one of \['auto', 'on', 'off'\].*'sometimes'"):
        progress_enabled()
    with pytest.raises(TypeError, match="progress must be true or false"):
        progress_enabled("yes")


def test_auto_shows_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress_enabled()  # a log file or a pipe
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert progress_enabled()
    assert not progress_enabled(False)  # the loop's own switch wins
    monkeypatch.setenv(PROGRESS_ENV, "off")
    assert not progress_enabled()


def test_bar_is_drawn_when_forced_on_and_silent_when_off(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "on")
    assert list(progress_bar(range(3), desc="counting", unit="slice")) == [0, 1, 2]
    err = capsys.readouterr().err
    assert "counting" in err and "3/3" in err and "slice" in err
    assert list(progress_bar(range(3), desc="counting", progress=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(PROGRESS_ENV, "off")
    bar = progress_bar(total=2, desc="manual")
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err == ""
