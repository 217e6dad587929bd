"""python -m bundle.study legopet: the stage commands (equal cDPM/LegoPET budgets, config layering) and argument
checks."""

from __future__ import annotations

from pathlib import Path

import pytest

import bundle.study as m


def _value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_equal_budgets_and_layering():
    commands = m.commands(m.parse_args(["legopet", "--dataset-dir", "d", "--output", "o", "--diffusion-epochs", "7",
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
    with pytest.raises(SystemExit):
        m.parse_args(["legopet", "--dataset-dir", "d", "--output", "o", "--stages", "pnpnet,gan"])


def test_small_preset_ablation_and_sweep_options():
    """Several presets layer in order; --p-dp reaches both diffusion trainings, --guidance-scale the evaluations,
    --reuse-regression points trainings and evaluations at an earlier run's PnPNet / DeepPET."""
    commands = m.commands(m.parse_args([
        "legopet", "--dataset-dir", "d", "--output", "o2", "--preset", "tiny.json,small.json", "--p-dp", "0",
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
    plain = m.commands(m.parse_args(["legopet", "--dataset-dir", "d", "--output", "o"]))
    assert not any(flag in plain[s] for s in plain
                   for flag in ("--p_dp", "--guidance_scale", "--pnpnet_ckpt", "--diffusion_learning_rate"))


def test_diffusion_learning_rate_and_seed_reach_only_the_diffusion_trainings():
    commands = m.commands(m.parse_args(["legopet", "--dataset-dir", "d", "--output", "o", "--diffusion-lr", "2e-4",
                                        "--diffusion-seed", "3"]))
    diffusion = ("cdpm", "legopet", "cdpm_image", "legopet_image")
    assert {_value(commands[s], "--diffusion_learning_rate") for s in diffusion} == {"0.0002"}
    assert {_value(commands[s], "--seed") for s in diffusion} == {"3"}
    for flag in ("--diffusion_learning_rate", "--seed"):
        assert not any(flag in commands[s] for s in commands if s not in diffusion)


@pytest.mark.parametrize("bad", [["--p-dp", "1.5"], ["--guidance-scale", "-1"], ["--sweep-scales", "1,-2"],
                                 ["--sweep-scales", "a"], ["--diffusion-lr", "0"],
                                 ["--diffusion-seed", "-1"]])
def test_bad_ablation_options_are_rejected(bad):
    with pytest.raises(SystemExit):
        m.parse_args(["legopet", "--dataset-dir", "d", "--output", "o", *bad])


def _touch_final(output: Path, model: str) -> Path:
    path = output / "results" / model / "checkpoints" / f"{model}_final.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_gan_stages_train_like_deeppet_and_add_their_rows(tmp_path):
    """cgan / pix2pix: the regression workflow with gan.json and their own file, the regression budget; a run with
    them evaluates with gan.json layered after evaluate.json and both GAN rows (their default checkpoints)."""
    commands = m.commands(m.parse_args(["legopet", "--dataset-dir", "d", "--output", str(tmp_path / "o"), "--preset",
                                        "tiny.json,small.json", "--regression-epochs", "9", "--val-interval", "3"]))
    for model in ("cgan", "pix2pix"):
        command = commands[model]
        assert command[3:5] == ["run", "training"]
        assert _value(command, "--config_file") == (
            "['configs/common.json','configs/legopet/train_pnpnet.json','configs/legopet/gan.json',"
            f"'configs/legopet/{model}.json','configs/legopet/tiny.json','configs/legopet/small.json']")
        assert (_value(command, "--max_epochs"), _value(command, "--val_interval")) == ("9", "3")
        assert command[command.index("--config_file") + 2:] == commands["deeppet"][
            commands["deeppet"].index("--config_file") + 2:]  # same data, output and budget options as DeepPET
    evaluating = commands["evaluating"]
    assert _value(evaluating, "--config_file").endswith(
        "'configs/legopet/evaluate.json','configs/legopet/gan.json','configs/legopet/tiny.json',"
        "'configs/legopet/small.json']")
    assert _value(evaluating, "--gan_rows") == "['cGAN','Pix2Pix']"
    assert "--cgan_ckpt" not in evaluating and "--pix2pix_ckpt" not in evaluating
    assert "gan.json" not in _value(commands["training_progress"], "--config_file")
    assert m.STAGES.index("deeppet") < m.STAGES.index("cgan") < m.STAGES.index("pix2pix") < m.STAGES.index("cdpm")


def test_evaluation_without_gans_is_unchanged(tmp_path):
    commands = m.commands(m.parse_args(["legopet", "--dataset-dir", "d", "--output", str(tmp_path / "o"), "--stages",
                                        "pnpnet,deeppet,cdpm,legopet,evaluating"]))
    assert commands["evaluating"] == [
        *commands["evaluating"][:3], "run", "evaluating", "--config_file",
        "['configs/common.json','configs/legopet/network.json','configs/legopet/train_legopet.json',"
        "'configs/legopet/deeppet.json',"
        "'configs/legopet/evaluate.json','configs/legopet/tiny.json']", "--meta_file", "configs/legopet/metadata.json",
        "--dataset_dir", "d", "--bundle_root", str(tmp_path / "o"), "--num_inference_steps", "20"]


def test_gan_rows_come_from_the_reused_run_or_an_earlier_run_into_the_same_output(tmp_path):
    """Not trained in this run: a GAN of --reuse-regression (its checkpoint given explicitly) comes before one of
    OUTPUT (the default path); a GAN found nowhere is left out; a GAN stage of this run wins over both."""
    earlier, output = tmp_path / "earlier", tmp_path / "o"
    reused = _touch_final(earlier, "pix2pix")
    base = ["--dataset-dir", "d", "--output", str(output), "--reuse-regression", str(earlier)]
    evaluating = m.commands(m.parse_args(["legopet", *base, "--stages", "cdpm,legopet,evaluating"]))["evaluating"]
    assert _value(evaluating, "--gan_rows") == "['Pix2Pix']"
    assert _value(evaluating, "--pix2pix_ckpt") == str(reused) and "--cgan_ckpt" not in evaluating
    assert _value(evaluating, "--deeppet_ckpt") == f"{earlier}/results/deeppet/checkpoints/deeppet_final.pt"

    _touch_final(output, "cgan")
    _touch_final(output, "pix2pix")
    evaluating = m.commands(m.parse_args(["legopet", *base, "--stages", "evaluating"]))["evaluating"]
    assert _value(evaluating, "--gan_rows") == "['cGAN','Pix2Pix']"
    assert "--cgan_ckpt" not in evaluating and _value(evaluating, "--pix2pix_ckpt") == str(reused)
    evaluating = m.commands(m.parse_args(["legopet", *base, "--stages", "pix2pix,evaluating"]))["evaluating"]
    assert "--pix2pix_ckpt" not in evaluating  # trained here: its own default checkpoint


def test_denoising_loss_stage_scores_the_interval_checkpoints():
    command = m.commands(m.parse_args(["legopet", "--dataset-dir", "d", "--output", "o2", "--reuse-regression", "o1",
                                       "--progress-slices", "8"]))["denoising_loss"]
    assert command[3:5] == ["run", "denoising_loss"] and "evaluate.json" in _value(command, "--config_file")
    assert _value(command, "--pnpnet_ckpt") == "o1/results/pnpnet/checkpoints/pnpnet_final.pt"
    assert _value(command, "--eval_limit") == "8"
