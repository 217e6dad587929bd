"""The shared 3D panel: argument checks and a written PNG for brain-like and MONAI-layout volumes."""

from __future__ import annotations

import pytest
import torch

from bundle.evaluation import monai_volume_panel, volume_panel
from bundle.physics import ImageGeometry

GEOMETRY = ImageGeometry(shape=(4, 6, 5), voxel_size_mm=(4.0, 2.0, 2.0))


def test_volume_panel_writes_a_png_with_an_own_scale_image(tmp_path):
    images = {"reference": torch.rand(GEOMETRY.shape), "CV": torch.rand(GEOMETRY.shape)}
    path = volume_panel(images, tmp_path / "a" / "panel.png", geometry=GEOMETRY, title="t", unit="kBq/ml",
                        cmaps={"CV": "magma"})
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_monai_volume_panel_takes_x_y_z_volumes(tmp_path):
    volume = torch.rand(1, 1, 5, 6, 4)  # (X, Y, Z) = GEOMETRY.shape reversed
    path = monai_volume_panel({"SPET": volume}, tmp_path / "m.png", title="t", vmax=1.0, unit="kBq/ml",
                              voxel_size_mm=(2.0, 2.0, 4.0))
    assert path.is_file()


def test_volume_panel_rejects_empty_and_mismatched_images(tmp_path):
    with pytest.raises(ValueError, match="images must hold at least one volume"):
        volume_panel({}, tmp_path / "x.png", geometry=GEOMETRY, title="t", unit="u")
    with pytest.raises(ValueError, match=r"must have shape geometry.shape = \(4, 6, 5\), got \(4, 5, 6\)"):
        volume_panel({"a": torch.zeros(4, 5, 6)}, tmp_path / "x.png", geometry=GEOMETRY, title="t", unit="u")
