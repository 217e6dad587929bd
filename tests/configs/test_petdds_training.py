"""PET-DDS-δ score-model training through `python -m monai.bundle run` on a tiny petdds dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from bundle.data.build import build_dataset
from bundle.data.slices import LoadVolumeSliced, NormaliseByPositiveMeand, slice_datalist

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = f"['{ROOT / 'configs/common.json'}','{ROOT / 'configs/petdds/train.json'}']"
TINY_NET = ["--network_def#channels", "[8,16,16]", "--network_def#num_head_channels", "8",
            "--network_def#norm_num_groups", "8"]


def _dataset(tmp_path: Path) -> Path:
    out = tmp_path / "petdds"
    build_dataset("petdds", output=out, seed=0, progress=False, subjects=1, split=(1, 0, 0), realisations=1,
                  osem_subsets=8, osem_iterations=1)
    return out


def test_slice_datalist_and_normalisation(tmp_path):
    dataset = _dataset(tmp_path)
    entries = slice_datalist(dataset, "training")
    assert entries and all(Path(e["image"]).is_file() for e in entries)
    item = NormaliseByPositiveMeand(keys="image")(LoadVolumeSliced(keys="image")(entries[0]))
    image = item["image"]
    assert image.shape == (1, 64, 64)
    assert abs(float(image[image > 0].mean()) - 1.0) < 1e-5  # divided by its mean over positive voxels
    assert item["image_scale"] > 0


def test_training_workflow_runs_and_writes_loadable_checkpoints(tmp_path):
    dataset = _dataset(tmp_path)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", CONFIGS, "--dataset_dir", str(dataset),
               "--bundle_root", str(run), "--max_epochs", "1", "--batch_size", "4", *TINY_NET]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train_loss" in result.stdout + result.stderr
    final = run / "results" / "petdds" / "checkpoints" / "network_final.pt"  # the name inference.json expects
    assert final.is_file()
    state = torch.load(final, weights_only=True)
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs/common.json"), str(ROOT / "configs/petdds/train.json")])
    parser["network_def"]["channels"] = [8, 16, 16]
    parser["network_def"]["num_head_channels"] = 8
    parser["network_def"]["norm_num_groups"] = 8
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(state["network"])  # the checkpoint fits the configured architecture
    assert list((run / "results" / "petdds" / "logs").glob("events.out.tfevents.*"))  # TensorBoard log
