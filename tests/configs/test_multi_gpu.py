"""Multi-GPU overlay: two CPU processes on gloo under torchrun train two steps and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

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
    files = [ROOT / "configs/common.json", ROOT / "configs/petdds/train.json",
             ROOT / "configs/petdds/multi_gpu_train.json", layer]
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


def test_legopet_ddp_overlay_two_gloo_ranks_end_identical(tmp_path):
    """LegoPET's overlay: two gloo ranks, per-rank dropout/noise generators, identical weights after two steps."""
    layer = tmp_path / "synthetic_legopet.json"  # 8 random 32x32 (reference, sinogram) pairs; random frozen PnPNet
    layer.write_text(json.dumps({
        "train_data": "$[{'reference': torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(i)), "
                      "'sinogram': torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(100 + i))} "
                      "for i in range(8)]",
        "train_transforms#transforms": [],
        "pnpnet": "$@pnpnet_def.requires_grad_(False).eval().to(@device)",
        "training": ["$@trainer.run()",
                     "$torch.save({'network': @network.module.state_dict(), 'iteration': @trainer.state.iteration, "
                     "'generator_seed': @prepare_batch.generator.initial_seed()}, "
                     "@bundle_root + '/rank' + str(dist.get_rank()) + '.pt')"],
    }), encoding="utf-8")
    files = [ROOT / "configs/common.json", ROOT / "configs/legopet/train_legopet.json",
             ROOT / "configs/legopet/multi_gpu_train.json", layer]
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
