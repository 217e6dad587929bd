"""Tiny LegoPET / PET-DDS-δ configs and random-weight checkpoints for the bundle.app tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.app.config import method_parser
from bundle.data.io import save_sinogram
from bundle.physics import preset

PETDDS_TINY = {
    "network_def#channels": [8, 8], "network_def#attention_levels": [False, False],
    "network_def#num_head_channels": 8, "network_def#norm_num_groups": 8,
    "num_inference_steps": 2, "num_subsets": 2, "steps_per_diffusion_step": 1, "osem_iterations": 1,
    "scanner_preset": "tiny_3d", "fwhm_mm": 0.0, "device": "cpu",
}
LEGOPET_TINY = {
    "layout#channels": [8, 8, 8, 8], "layout#num_res_blocks": 1, "layout#norm_num_groups": 8,
    "layout#num_head_channels": 8, "layout#attention_levels": [False, False, False, False],
    "num_inference_steps": 2, "sinogram_scale": 6.9, "image_scale": 2.0, "device": "cpu",
}


def save_random_checkpoint(method: str, overrides: dict, path) -> None:
    """Random (seeded) weights of the configured architecture, saved as the task's checkpoint."""
    torch.manual_seed(0)
    parser = method_parser(method, overrides=overrides)
    state = {"network": parser.get_parsed_content("network_def").state_dict()}
    if method == "legopet":
        state["pnpnet"] = parser.get_parsed_content("pnpnet_def").state_dict()
    torch.save(state, path)


@pytest.fixture(scope="session")
def petdds_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("petdds_app")
    checkpoint = root / "model.pt"
    save_random_checkpoint("petdds", PETDDS_TINY, checkpoint)
    shape = preset("tiny_3d").layout.shape
    counts = torch.poisson(torch.full(shape, 3.0), generator=torch.Generator().manual_seed(0))
    save_sinogram(root / "sino.npy", counts)
    np.save(root / "norm.npy", np.full(shape, 0.8, dtype=np.float32))
    return {"root": root, "checkpoint": checkpoint, "sinogram": root / "sino.npy", "normalisation": root / "norm.npy"}


@pytest.fixture(scope="session")
def legopet_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("legopet_app")
    checkpoint = root / "model.pt"
    save_random_checkpoint("legopet", LEGOPET_TINY, checkpoint)
    counts = torch.poisson(torch.full((1, 64, 64), 6.9), generator=torch.Generator().manual_seed(0))  # brain_2d
    save_sinogram(root / "sino.npy", counts)
    return {"root": root, "checkpoint": checkpoint, "sinogram": root / "sino.npy"}


from tests.upete_trained import upete_run  # noqa: E402, F401  (tiny trained uPETe run + combined checkpoint)
