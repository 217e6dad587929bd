"""bundle.data.upete.load_split: cases in network units (each volume divided by m · its mean), CT windowed."""

from __future__ import annotations

import pytest

from bundle.data.upete import load_split
from tests.upete_fixtures import write_dataset


def test_load_split_scales_each_volume_by_its_mean(tmp_path):
    root = write_dataset(tmp_path / "ds")
    cases = load_split(root, "test", mean_multiple=10.0)
    assert len(cases) == 2 and set(cases[0].low) == {0.1, 0.5}
    case = cases[0]
    assert case.spet.shape == (1, 1, 16, 16, 8) and case.ct.shape == case.spet.shape
    assert float(case.spet.mean()) == pytest.approx(0.1, rel=1e-5)  # x / (10 mean x)
    assert 0.0 <= float(case.ct.min()) and float(case.ct.max()) <= 1.0
    with pytest.raises(ValueError, match=r"datalist\.json"):
        load_split(tmp_path, "test")
