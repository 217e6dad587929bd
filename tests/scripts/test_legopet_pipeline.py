"""scripts/legopet_pipeline.py: the stage commands (equal cDPM/LegoPET budgets, config layering) and argument checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location("legopet_pipeline", ROOT / "scripts" / "legopet_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines functions only (nothing runs on import)
    return module


def _value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_equal_budgets_and_layering():
    m = _module()
    commands = m.commands(m.parse_args(["--dataset-dir", "d", "--output", "o", "--diffusion-epochs", "7",
                                        "--ckpt-interval", "3", "--no-ddpm", "--progress-slices", "2"]))
    assert set(commands) == set(m.STAGES)
    for stage in ("cdpm", "legopet"):
        assert (_value(commands[stage], "--max_epochs"), _value(commands[stage], "--ckpt_interval")) == ("7", "3")
    cdpm_files = _value(commands["cdpm"], "--config_file")
    assert cdpm_files.endswith("'configs/legopet/cdpm.json','configs/legopet/tiny.json']")
    assert "cdpm.json" not in _value(commands["legopet"], "--config_file")
    assert "train_deeppet.json" in _value(commands["deeppet"], "--config_file")
    assert _value(commands["sampling_cost"], "--cost_ddpm_samplers") == "[]"
    assert _value(commands["training_progress"], "--eval_limit") == "2"
    assert commands["evaluating"][3:5] == ["run", "evaluating"]


def test_unknown_stage_is_rejected():
    m = _module()
    with pytest.raises(SystemExit):
        m.parse_args(["--dataset-dir", "d", "--output", "o", "--stages", "pnpnet,gan"])
