"""Bundle configs are pure ASCII: MONAI's ConfigParser opens them with the locale's encoding, so one δ or ± in a
comment breaks ``monai.bundle run`` under a C/POSIX locale (as on a bare CI runner)."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.json"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_is_ascii(path):
    lines = [i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if not line.isascii()]
    assert not lines, f"{path} has non-ASCII characters on lines {lines}; MONAI reads configs with the locale"


def test_there_are_configs():
    assert len(CONFIGS) > 20
