"""Multi-GPU overlay (configs/multi_gpu.json + the method layer, the *_multi_gpu recipes): two CPU processes on gloo
under torchrun train two steps and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle.recipes import recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--network_def#channels", "[8,16,16]", "--network_def#num_head_channels", "8",
        "--network_def#norm_num_groups", "8"]


def test_petdds_ddp_overlay_two_gloo_ranks_end_identical(tmp_path):
    layer = tmp_path / "synthetic.json"  # 8 random 16x16 slices instead of a built dataset; each rank saves its net
    layer.write_text(json.dumps({
        "train_data": "$[{'image': torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(i))} "
                      "for i in range(8)]",
        "train_transforms#transforms": [],
        "training": ["$@checkpoint_saver.attach(@trainer) if dist.get_rank() == 0 else None", "$@trainer.run()",
                     "$torch.save({'network': @network.module.state_dict(), 'iteration': @trainer.state.iteration}, "
                     "@bundle_root + '/rank' + str(dist.get_rank()) + '.pt')"],
    }), encoding="utf-8")
    files = [*recipe("petdds/train_multi_gpu").paths(), layer]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "monai.bundle", "run", "training", "--config_file",
               "[" + ",".join(f"'{f}'" for f in files) + "]",
               "--bundle_root", str(tmp_path), "--max_epochs", "1", "--batch_size", "2", *TINY]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["iteration"] == ranks[1]["iteration"] == 2  # 8 slices / 2 ranks / batch 2 = 2 steps each
    for name, value in ranks[0]["network"].items():
        torch.testing.assert_close(ranks[1]["network"][name], value, rtol=0, atol=0)
    final = tmp_path / "results" / "petdds" / "checkpoints" / "network_final.pt"  # rank 0 only, unwrapped keys
    state = torch.load(final, weights_only=True)["network"]
    assert not any(k.startswith("module.") for k in state)
    torch.testing.assert_close(state["conv_in.conv.weight"], ranks[0]["network"]["conv_in.conv.weight"])


def test_petdds_resume_under_torchrun_continues_the_run(tmp_path):
    """resume.json layered last on the multi-GPU stack: two gloo ranks continue a 1-epoch run for a second epoch
    from its checkpoint (iteration 2 -> 4), rank 0 writes the final checkpoint, and the run id is kept."""
    layer = tmp_path / "synthetic.json"  # 8 random 16x16 slices instead of a built dataset
    layer.write_text(json.dumps({
        "train_data": "$[{'image': torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(i))} "
                      "for i in range(8)]",
        "train_transforms#transforms": [],
    }), encoding="utf-8")
    files = [*recipe("petdds/train_multi_gpu").paths(), layer]
    args = ["--bundle_root", str(tmp_path), "--batch_size", "2", *TINY]
    _torchrun(files, *args, "--max_epochs", "1")
    final = tmp_path / "results" / "petdds" / "checkpoints" / "network_final.pt"
    first = torch.load(final, weights_only=True)
    _torchrun([*files, ROOT / "configs/petdds/resume.json"], *args, "--max_epochs", "2")
    second = torch.load(final, weights_only=True)
    assert first["trainer"]["iteration"] == 2 and second["trainer"]["iteration"] == 4
    assert second["run_id"] == first["run_id"]
    assert not torch.equal(second["network"]["conv_in.conv.weight"], first["network"]["conv_in.conv.weight"])


def test_legopet_ddp_overlay_two_gloo_ranks_end_identical(tmp_path):
    """LegoPET's overlay: two gloo ranks, per-rank dropout/noise generators, identical weights after two steps."""
    layer = tmp_path / "synthetic_legopet.json"  # 8 random 32x32 (reference, sinogram) pairs; random frozen PnPNet
    layer.write_text(json.dumps({
        "train_data": "$[{'reference': torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(i)), "
                      "'sinogram': torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(100 + i))} "
                      "for i in range(8)]",
        "train_transforms#transforms": [],
        "val_data": "$@train_data[:2]",
        "val_steps": 2,
        "pnpnet": "$@pnpnet_def.requires_grad_(False).eval().to(@device)",
        "training": ["$@trainer.run()",
                     "$torch.save({'network': @network.module.state_dict(), 'iteration': @trainer.state.iteration, "
                     "'generator_seed': @prepare_batch.generator.initial_seed()}, "
                     "@bundle_root + '/rank' + str(dist.get_rank()) + '.pt')"],
    }), encoding="utf-8")
    files = [*recipe("legopet/legopet_multi_gpu").paths(), layer]
    tiny = ["--layout#channels", "[8,16,16,16]", "--layout#num_res_blocks", "1", "--layout#norm_num_groups", "8",
            "--layout#num_head_channels", "8", "--layout#attention_levels", "[false,false,false,false]"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "monai.bundle", "run", "training", "--config_file",
               "[" + ",".join(f"'{f}'" for f in files) + "]",
               "--bundle_root", str(tmp_path), "--max_epochs", "1", "--batch_size", "2", *tiny]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["iteration"] == ranks[1]["iteration"] == 2  # 8 pairs / 2 ranks / batch 2
    assert ranks[0]["generator_seed"] != ranks[1]["generator_seed"]  # each rank draws its own noise and dropout
    for name, value in ranks[0]["network"].items():
        torch.testing.assert_close(ranks[1]["network"][name], value, rtol=0, atol=0)
    final = tmp_path / "results" / "legopet" / "checkpoints" / "legopet_final.pt"  # rank 0 only, unwrapped
    state = torch.load(final, weights_only=True)
    assert "ema" in state and not any(k.startswith("module.") for k in state["network"])


def _image_tags(log_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    tags: set[str] = set()
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(path), size_guidance={IMAGES: 0})
        accumulator.Reload()
        tags.update(accumulator.Tags()[IMAGES])
    return tags


def _torchrun(files: list[Path], *args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "monai.bundle", "run", "training", "--config_file",
               "[" + ",".join(f"'{f}'" for f in files) + "]", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("model", ["pnpnet", "deeppet"])
def test_legopet_regression_ddp_overlay_two_gloo_ranks_end_identical(tmp_path, model):
    """PnPNet / DeepPET under multi_gpu_regression.json: two gloo ranks end with identical weights; validation runs
    on both ranks' shards and is all-gathered; rank 0 alone checkpoints (no ``module.`` prefix, best-metric file)
    and logs the TensorBoard sample images.  Then resume.json continues the run under torchrun for one more epoch
    (every rank loads rank 0's checkpoint into its DDP-wrapped network)."""
    pairs = ("$[{{'reference': torch.rand(1, 16, 16, generator=torch.Generator().manual_seed({o} + i)), "
             "'sinogram': torch.rand(1, 16, 16, generator=torch.Generator().manual_seed({o} + 100 + i))}} "
             "for i in range({n})]")
    save = ("$torch.save({'network': dict(@network.module.named_parameters()), "
            "'iteration': @trainer.state.iteration, 'psnr': @evaluator.state.metrics['val_psnr'], "
            "'validated': len(@val_loader), 'resumed_from': RESUMED}, "
            "@bundle_root + '/rank' + str(dist.get_rank()) + '_' + str(@max_epochs) + '.pt')")
    layer = tmp_path / "synthetic_regression.json"  # 8 training + 2 validation random 16x16 pairs, no transforms
    layer.write_text(json.dumps({
        "train_data": pairs.format(o=0, n=8), "val_data": pairs.format(o=50, n=2),
        "train_transforms#transforms": [], "val_transforms#transforms": [], "image_shape": [16, 16],
        "layout": {"channels": [8, 16, 16, 16], "num_res_blocks": 1, "attention_levels": [False, False, False, True],
                   "norm_num_groups": 8, "num_head_channels": 8},
        "deeppet_layout": {"channels": [8, 16, 32], "convs_per_level": 1, "norm": "batch"},
        "val_interval": 1, "ckpt_interval": 1, "image_log_interval": 1, "image_log_samples": 1,
        "training": ["$@trainer.run()", save.replace("RESUMED", "None")],
    }), encoding="utf-8")
    files = [*recipe(f"legopet/{model}_multi_gpu").paths(), layer]
    _torchrun(files, "--bundle_root", str(tmp_path), "--max_epochs", "1", "--batch_size", "2")
    ranks = [torch.load(tmp_path / f"rank{r}_1.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["iteration"] == ranks[1]["iteration"] == 2  # 8 pairs / 2 ranks / batch 2
    for name, value in ranks[0]["network"].items():
        torch.testing.assert_close(ranks[1]["network"][name], value, rtol=0, atol=0)
    # every rank validated its own validation pair and the metric was all-gathered: the same PSNR on both ranks
    assert ranks[0]["validated"] == ranks[1]["validated"] == 1
    assert ranks[0]["psnr"] == ranks[1]["psnr"]
    folder = tmp_path / "results" / model
    final = torch.load(folder / "checkpoints" / f"{model}_final.pt", weights_only=True)  # rank 0 only
    assert {"network", "optimizer", "trainer", "rng", "validation"} <= set(final)
    assert not any(k.startswith("module.") for k in final["network"])
    for name, value in ranks[0]["network"].items():
        torch.testing.assert_close(final["network"][name], value, rtol=0, atol=0)
    assert final["validation"]["best_metric_epoch"] == 1
    assert final["validation"]["best_metric"] == pytest.approx(ranks[0]["psnr"])
    best = torch.load(folder / "checkpoints" / f"{model}_best.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in best)  # ignite stores a single entry without its name
    assert {"samples/0/input_HW", "samples/0/prediction_HW"} <= _image_tags(folder / "logs")

    resume = tmp_path / "resume_save.json"  # resume.json's training id, then each rank saves its weights
    resumed_training = ["$@resume.attach(@trainer)", "$@trainer.run()",
                        save.replace("RESUMED", "str(@resume.resumed_from)")]
    resume.write_text(json.dumps({"training": resumed_training}), encoding="utf-8")
    _torchrun([*files, ROOT / "configs/legopet/resume.json", resume],
              "--bundle_root", str(tmp_path), "--max_epochs", "2", "--batch_size", "2")
    resumed = [torch.load(tmp_path / f"rank{r}_2.pt", weights_only=True) for r in (0, 1)]
    assert [r["resumed_from"] for r in resumed] == [str(folder / "checkpoints" / f"{model}_final.pt")] * 2
    assert resumed[0]["iteration"] == resumed[1]["iteration"] == 4  # continued from iteration 2
    for name, value in resumed[0]["network"].items():
        torch.testing.assert_close(resumed[1]["network"][name], value, rtol=0, atol=0)
    assert any(not torch.equal(value, ranks[0]["network"][name]) for name, value in resumed[0]["network"].items())
    assert torch.load(folder / "checkpoints" / f"{model}_final.pt", weights_only=True)["trainer"]["iteration"] == 4
