"""The main job end to end on the smallest preset."""

from __future__ import annotations

import json

import pytest

from bundle.demo import main, run_demo


def test_demo_writes_report_and_reconstructs(tmp_path):
    summary = run_demo(output=tmp_path, preset_name="tiny_2d", total_counts=2e5, num_subsets=4, num_iterations=3,
                       progress=False)
    for name in ("demo.png", "demo.json", "demo.md", "truth.nii.gz", "osem.nii.gz", "map_em.nii.gz"):
        assert (tmp_path / name).is_file(), name
    stored = json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))
    assert stored["metrics_inside_head"] == summary["metrics_inside_head"]
    # Poisson total: mean 2e5, standard deviation ~450
    assert abs(stored["total_counts"] - 2e5) < 5 * 2e5**0.5
    for metrics in stored["metrics_inside_head"].values():
        # the reconstruction resembles the phantom (a flat image at the mean has NRMSE ~0.6 here)
        assert 0 < metrics["NRMSE"] < 0.6
    assert "| OSEM |" in (tmp_path / "demo.md").read_text(encoding="utf-8")


def test_demo_cli_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="total_counts must be a positive finite number"):
        run_demo(output=tmp_path, preset_name="tiny_2d", total_counts=-1.0, progress=False)
    with pytest.raises(SystemExit):
        main(["--preset", "nonexistent", "--output", str(tmp_path)])
