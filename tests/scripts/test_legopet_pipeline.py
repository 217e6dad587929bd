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


def test_small_preset_ablation_and_sweep_options():
    """Several presets layer in order; --p-dp reaches both diffusion trainings, --guidance-scale the evaluations,
    --reuse-regression points trainings and evaluations at an earlier run's PnPNet / DeepPET."""
    m = _module()
    commands = m.commands(m.parse_args([
        "--dataset-dir", "d", "--output", "o2", "--preset", "tiny.json,small.json", "--p-dp", "0",
        "--guidance-scale", "0", "--reuse-regression", "o1", "--sweep-scales", "0,2", "--sweep-slices", "4"]))
    for stage in ("cdpm", "legopet", "evaluating", "training_progress", "guidance_sweep"):
        assert _value(commands[stage], "--config_file").endswith(
            "'configs/legopet/tiny.json','configs/legopet/small.json']")
        assert _value(commands[stage], "--pnpnet_ckpt") == "o1/results/pnpnet/checkpoints/pnpnet_final.pt"
    for stage in ("cdpm", "legopet"):
        assert _value(commands[stage], "--p_dp") == "0.0" and "--guidance_scale" not in commands[stage]
    for stage in ("evaluating", "training_progress", "sampling_cost"):
        assert _value(commands[stage], "--guidance_scale") == "0.0" and "--p_dp" not in commands[stage]
    assert _value(commands["evaluating"], "--deeppet_ckpt") == "o1/results/deeppet/checkpoints/deeppet_final.pt"
    sweep = commands["guidance_sweep"]
    assert sweep[3:5] == ["run", "guidance_sweep"] and "--guidance_scale" not in sweep
    assert (_value(sweep, "--guidance_scales"), _value(sweep, "--eval_limit")) == ("[0.0,2.0]", "4")
    plain = m.commands(m.parse_args(["--dataset-dir", "d", "--output", "o"]))
    assert not any(flag in plain[s] for s in plain
                   for flag in ("--p_dp", "--guidance_scale", "--pnpnet_ckpt", "--learning_rate"))


def test_diffusion_learning_rate_reaches_only_the_diffusion_trainings():
    m = _module()
    commands = m.commands(m.parse_args(["--dataset-dir", "d", "--output", "o", "--diffusion-lr", "2e-4"]))
    assert _value(commands["cdpm"], "--learning_rate") == _value(commands["legopet"], "--learning_rate") == "0.0002"
    assert not any("--learning_rate" in commands[s] for s in commands if s not in ("cdpm", "legopet"))


@pytest.mark.parametrize("bad", [["--p-dp", "1.5"], ["--guidance-scale", "-1"], ["--sweep-scales", "1,-2"],
                                 ["--sweep-scales", "a"], ["--diffusion-lr", "0"]])
def test_bad_ablation_options_are_rejected(bad):
    m = _module()
    with pytest.raises(SystemExit):
        m.parse_args(["--dataset-dir", "d", "--output", "o", *bad])
