"""BrainWeb loader on tiny files fabricated in the `brainweb` package cache format (gzip of raw uint16 label << 4)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

import bundle.data.brainweb as bw
from bundle.data.brain import FDG_ACTIVITY, MU_BONE_PER_MM, MU_PER_MM, MU_TISSUE_PER_MM, T1_VALUE, Tissue
from bundle.physics.geometry import ImageGeometry

SHAPE = (24, 40, 40)  # z, y, x at 0.5 mm: 12 x 20 x 20 mm


def _raw_labels() -> np.ndarray:
    """Labels in the raw file orientation (y posterior -> anterior)."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[2:22, 4:36, 4:36] = Tissue.SKIN
    labels[3:21, 6:34, 6:34] = Tissue.SKULL
    labels[4:20, 8:32, 8:32] = Tissue.CSF
    labels[5:19, 10:30, 10:30] = Tissue.GREY_MATTER
    labels[8:16, 10:30, 8:32] = Tissue.GREY_MATTER
    labels[8:16, 12:32, 12:28] = Tissue.WHITE_MATTER  # 4 x 10 x 8 mm block, off-centre in y
    return labels


def _write(folder, subject: int, raw_labels: np.ndarray, *, low_bits: bool = False) -> None:
    values = raw_labels.astype("<u2") << 4
    if low_bits:  # "occasionally other bits may be set": they must not change the label
        values[::3, ::5, ::7] |= 5
    with gzip.open(folder / f"subject_{subject:02d}.bin.gz", "wb") as f:
        f.write(values.tobytes())


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setattr(bw, "BRAINWEB_SHAPE", SHAPE)
    raw = _raw_labels()
    _write(tmp_path, 4, raw, low_bits=True)
    return tmp_path, raw


def test_subjects_and_cache_dir(monkeypatch, tmp_path):
    assert len(bw.BRAINWEB_SUBJECTS) == 20 and bw.BRAINWEB_SUBJECTS[:3] == (4, 5, 6)
    monkeypatch.delenv("BRAINWEB_DIR", raising=False)
    assert bw.brainweb_cache_dir() == bw.Path.home() / ".brainweb"
    monkeypatch.setenv("BRAINWEB_DIR", str(tmp_path))
    assert bw.brainweb_cache_dir() == tmp_path
    assert bw.brainweb_cache_dir(tmp_path / "x") == tmp_path / "x"
    assert bw.brainweb_file("54").name == "subject_54.bin.gz"
    with pytest.raises(ValueError, match="subject must be one of"):
        bw.brainweb_file(7)
    with pytest.raises(TypeError, match="subject must be an int"):
        bw.brainweb_file(True)
    with pytest.raises(TypeError, match="path must be"):
        bw.brainweb_cache_dir(3)


def test_labels_round_trip(tiny):
    folder, raw = tiny
    labels, voxel = bw.load_brainweb_labels(4, cache_dir=folder)
    assert labels.dtype == np.uint8 and labels.shape == SHAPE and voxel == (0.5, 0.5, 0.5)
    np.testing.assert_array_equal(labels, raw[:, ::-1])  # axis 1 flipped to anterior -> posterior


def test_tissue_values_on_the_source_grid(tiny):
    folder, raw = tiny
    image = ImageGeometry(shape=SHAPE, voxel_size_mm=(0.5, 0.5, 0.5))
    labels = raw[:, ::-1]
    for resampling in ("fractions", "nearest"):
        phantom = bw.brainweb_phantom(4, image=image, cache_dir=folder, resampling=resampling)
        assert phantom.activity.dtype == torch.float32 and phantom.image == image
        tissues = (Tissue.BACKGROUND, Tissue.CSF, Tissue.GREY_MATTER, Tissue.WHITE_MATTER, Tissue.SKULL, Tissue.SKIN)
        for tissue in tissues:
            sel = torch.from_numpy(labels == tissue)
            assert torch.allclose(phantom.activity[sel], torch.tensor(FDG_ACTIVITY[tissue]))
            assert torch.allclose(phantom.mu_map_per_mm[sel], torch.tensor(MU_PER_MM[tissue]))
            assert torch.allclose(phantom.t1[sel], torch.tensor(T1_VALUE[tissue]))
    assert FDG_ACTIVITY[Tissue.GREY_MATTER] / FDG_ACTIVITY[Tissue.WHITE_MATTER] == 4.0
    assert MU_PER_MM[Tissue.SKULL] == MU_BONE_PER_MM == 0.013 and MU_PER_MM[Tissue.CSF] == MU_TISSUE_PER_MM == 0.0096
    assert "BrainWeb subject 04" in phantom.description


def test_resampling_keeps_physical_size(tiny):
    folder, _ = tiny
    image = ImageGeometry(shape=(8, 12, 12), voxel_size_mm=(2.0, 2.0, 2.0))  # 4x coarser, larger field
    fractions = bw.brainweb_tissue_fractions(4, image=image, cache_dir=folder)
    wm_volume = float(fractions[Tissue.WHITE_MATTER].sum()) * 8.0
    assert wm_volume == pytest.approx(4 * 10 * 8, rel=0.03)
    total = sum(fractions.values())
    assert float(total.max()) <= 1.0 + 1e-5
    head_volume = float((total - fractions.get(Tissue.BACKGROUND, 0)).sum()) * 8.0
    assert head_volume == pytest.approx(10 * 16 * 16, rel=0.03)
    # the block is off-centre in y (raw y 12..31 -> flipped 8..27 of 40 voxels): its centre of mass stays put in mm
    wm = fractions[Tissue.WHITE_MATTER]
    y_mm = image.origin_mm[1] + 2.0 * np.arange(12)
    y_centre = float((wm.sum(axis=(0, 2)) * y_mm).sum() / wm.sum())
    assert y_centre == pytest.approx(-9.75 + 17.5 * 0.5, abs=0.05)  # centre of source voxels 8..27


def test_rotation_turns_the_block(tiny):
    folder, _ = tiny
    image = ImageGeometry(shape=(1, 40, 40), voxel_size_mm=(0.5, 0.5, 0.5), origin_mm=(-0.25, -9.75, -9.75))
    plain = bw.brainweb_phantom(4, image=image, cache_dir=folder, resampling="nearest")
    turned = bw.brainweb_phantom(4, image=image, cache_dir=folder, resampling="nearest", rotation_deg=90.0)
    # +90 deg turns +x towards +y: turned[i, j] = plain[n - 1 - j, i], i.e. numpy/torch rot90 with k = -1
    assert torch.equal(turned.activity[0], torch.rot90(plain.activity[0], -1, (0, 1)))
    assert not torch.equal(turned.activity[0], plain.activity[0])


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        bw.load_brainweb_labels(5, cache_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "subject_05.bin.gz") in message
    assert "pip install brainweb" in message and "get_files()" in message


def test_truncated_and_corrupt_files(monkeypatch, tmp_path):
    monkeypatch.setattr(bw, "BRAINWEB_SHAPE", SHAPE)
    expected = str(np.prod(SHAPE) * 2)
    raw = _raw_labels()
    path = tmp_path / "subject_06.bin.gz"
    with gzip.open(path, "wb") as f:  # complete gzip stream, too few bytes
        f.write((raw.astype("<u2") << 4).tobytes()[:-100])
    with pytest.raises(ValueError, match=rf"subject_06\.bin\.gz.*{expected} bytes"):
        bw.load_brainweb_labels(6, cache_dir=tmp_path)
    _write(tmp_path, 6, raw)
    path.write_bytes(path.read_bytes()[:-30])  # cut gzip stream
    with pytest.raises(ValueError, match=rf"subject_06\.bin\.gz.*{expected} bytes"):
        bw.load_brainweb_labels(6, cache_dir=tmp_path)
    bad = raw.copy()
    bad[0, 0, 0] = 12
    _write(tmp_path, 6, bad)
    with pytest.raises(ValueError, match="label 12"):
        bw.load_brainweb_labels(6, cache_dir=tmp_path)


def test_bad_arguments(tiny):
    folder, _ = tiny
    with pytest.raises(TypeError, match="image must be an ImageGeometry"):
        bw.brainweb_phantom(4, image=(1, 2, 3), cache_dir=folder)
    with pytest.raises(ValueError, match="resampling must be one of"):
        bw.brainweb_phantom(4, cache_dir=folder, resampling="cubic")
    with pytest.raises(ValueError, match="rotation_deg must be"):
        bw.brainweb_phantom(4, cache_dir=folder, rotation_deg=float("nan"))
