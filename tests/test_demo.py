"""The physics stage of the main job on a reduced case: it writes its table and figure, and its OSEM / MAP-EM
settings are the validation rule's, recomputed here independently on the same validation data."""

from __future__ import annotations

import json

import pytest
import torch

from bundle.data.petdds import PETDDSDataset
from bundle.demo import main, run_demo, validation_choice
from bundle.physics import Neighbourhood, RelativeDifferencePrior, map_em, osem

BETAS = (0.01, 0.05)
PASSES = (1, 2, 3)
SUBSETS = 4


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("physics")
    summary = run_demo(output=out, preset_name="tiny_3d", total_counts=3e5, reference_counts=3e7, num_subsets=SUBSETS,
                       map_em_betas=BETAS, passes=PASSES, reference_osem=(4, 1), progress=False)
    return out, summary


def _nrmse(image: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm((image - reference)[mask]) / torch.linalg.vector_norm(reference[mask]))


def _scores(dataset: PETDDSDataset, entry: dict, passes: int) -> dict[tuple[float, int], float]:
    """NRMSE of every (β relative, passes) on realisation 0 of ``entry``, β = 0 being OSEM."""
    case = dataset.case(entry, 0)
    models, data = case.subsets(SUBSETS)
    # β = relative × mean over the head of the full-data sensitivity Aᵀ1 (one model, not the sum over subsets)
    unit = float(case.model.data_model().sensitivity(dtype=torch.float32, device=torch.device("cpu"))[case.mask].mean())
    prior = RelativeDifferencePrior(neighbourhood=Neighbourhood.FULL, voxel_size_mm=dataset.image.voxel_size_mm)
    scores: dict[tuple[float, int], float] = {}

    def keep(beta):
        return lambda k, image: scores.__setitem__((beta, k), _nrmse(image, case.reference, case.mask))

    osem(models, data, num_iterations=passes, callback=keep(0.0))
    for beta in BETAS:
        map_em(models, data, prior=prior, beta=beta * unit, num_iterations=passes, callback=keep(beta))
    return scores


def test_stage_writes_its_table_figure_and_json(stage):
    out, summary = stage
    text = (out / "demo.md").read_text(encoding="utf-8")
    for row in ("| OSEM |", "| MAP-EM |", "| MAP-EM (RDP) | relative β"):
        assert row in text, row
    assert "![panel](demo.png)" in text and "smallest mean NRMSE" in text
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "evaluation" / "table.md").is_file() and (out / "tuning" / "tune.md").is_file()
    assert json.loads((out / "demo.json").read_text(encoding="utf-8"))["choice"] == summary["choice"]
    # tuned on validation, reported on another subject
    assert summary["test_subjects"] and not set(summary["test_subjects"]) & set(summary["validation_subjects"])
    assert len(summary["validation_subjects"]) == 2


def test_choice_follows_the_validation_rule_and_the_test_numbers_are_recomputed(stage):
    out, summary = stage
    dataset = PETDDSDataset.open(out / "data")
    per_subject = [_scores(dataset, e, max(PASSES)) for e in dataset.datalist["validation"]]
    mean = {key: sum(s[key] for s in per_subject) / len(per_subject) for key in per_subject[0]}
    best_osem = min(PASSES, key=lambda k: mean[(0.0, k)])
    best_map = min(((b, k) for b in BETAS for k in PASSES), key=lambda key: mean[key])
    choice = summary["choice"]
    assert choice["OSEM"]["iterations"] == best_osem
    assert (choice["MAP-EM"]["beta"], choice["MAP-EM"]["iterations"]) == best_map
    assert choice["OSEM"]["NRMSE"] == pytest.approx(mean[(0.0, best_osem)], rel=1e-4)
    assert choice["MAP-EM"]["NRMSE"] == pytest.approx(mean[best_map], rel=1e-4)
    # the test table: the chosen settings on the held-out subject
    test = _scores(dataset, dataset.datalist["test"][0], max(PASSES))
    assert summary["test"]["OSEM"]["NRMSE"] == pytest.approx(test[(0.0, best_osem)], rel=1e-4)
    assert summary["test"]["MAP-EM"]["NRMSE"] == pytest.approx(test[best_map], rel=1e-4)


def test_validation_choice_skips_failed_settings_and_needs_both_methods():
    ok = {"NRMSE": {"mean": 0.2}}
    rows = [{"beta": 0.5, "iterations": 1, "error": "too large"}, {"beta": 0.0, "iterations": 2, **ok},
            {"beta": 0.1, "iterations": 3, **ok}]
    assert validation_choice(rows) == {"OSEM": {"iterations": 2, "NRMSE": 0.2},
                                       "MAP-EM": {"iterations": 3, "NRMSE": 0.2, "beta": 0.1}}
    with pytest.raises(RuntimeError, match="no MAP-EM setting ran on every validation case"):
        validation_choice(rows[:2])


def test_stage_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="total_counts must be finite and > 0"):
        run_demo(output=tmp_path, total_counts=-1.0, progress=False)
    with pytest.raises(ValueError, match="reference_counts must be >= total_counts"):
        run_demo(output=tmp_path, total_counts=1e6, reference_counts=1e5, progress=False)
    with pytest.raises(ValueError, match=r"map_em_betas\[0\] must be a finite number > 0, got 0.0"):
        run_demo(output=tmp_path, map_em_betas=(0.0, 0.01), progress=False)
    with pytest.raises(TypeError, match=r"passes\[0\] must be an int >= 1, got 1.5"):
        run_demo(output=tmp_path, passes=(1.5,), progress=False)
    with pytest.raises(ValueError, match="validation_subjects must be >= 1"):
        run_demo(output=tmp_path, validation_subjects=0, progress=False)
    with pytest.raises(SystemExit):
        main(["--preset", "nonexistent", "--output", str(tmp_path)])
