"""uPETe task (stand-in network and inferer: its modules are still being built), lazy-import error, DICOM input,
and the monailabel adapter with and without monailabel."""

from __future__ import annotations

import sys
import types

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.app import build_task
from bundle.app.legopet import LegoPETInferTask
from bundle.app.monailabel import register_infers, to_monailabel
from bundle.app.upete import UPETeInferTask, require_upete


class _Net(torch.nn.Module):
    uses_ct = True


def _identity_inferer(x, network, *, ct=None, dose=None, generator=None):
    assert ct is not None and ct.shape == x.shape
    return x


def _task() -> UPETeInferTask:
    return UPETeInferTask(network=_Net(), inferer=_identity_inferer, mean_multiple=10.0)


def _nifti(path, values, affine=(2.0, 2.0, 3.0, 1.0)):
    nib.save(nib.Nifti1Image(values.astype(np.float32), np.diag(affine)), str(path))
    return str(path)


def test_upete_task_roundtrips_units_and_grid(tmp_path):
    pet = np.random.default_rng(0).gamma(2.0, 3.0, size=(8, 8, 6))
    request = {"image": _nifti(tmp_path / "pet.nii.gz", pet), "ct": _nifti(tmp_path / "ct.nii.gz", pet * 0 - 50),
               "output": str(tmp_path / "out.nii.gz")}
    path, result = _task()(request)
    out = nib.load(path)
    np.testing.assert_allclose(np.asarray(out.dataobj), pet, rtol=1e-5)  # scale undone, same grid
    np.testing.assert_allclose(out.affine, np.diag([2.0, 2.0, 3.0, 1.0]))
    assert result["voxel_size_mm"] == [2.0, 2.0, 3.0] and result["image"] == request["image"]
    with pytest.raises(ValueError, match=r"request\['ct'\] is required"):
        _task()({"image": request["image"], "output": str(tmp_path / "o.nii.gz")})
    with pytest.raises(ValueError, match=r"dose must be a dose fraction in \(0, 1\], got 2"):
        _task()({**request, "dose": 2, "overwrite": True})  # the dose error, not the existing output


def test_upete_reads_a_dicom_series_through_itk(tmp_path):
    itk = pytest.importorskip("itk")
    pet = (np.arange(4 * 6 * 5).reshape(4, 6, 5) % 7 + 1).astype(np.int16)  # (z, y, x)
    folder = tmp_path / "pet_dicom"
    folder.mkdir()
    image = itk.image_from_array(pet)
    names = [str(folder / f"s{i:03d}.dcm") for i in range(pet.shape[0])]
    writer = itk.ImageSeriesWriter[type(image), itk.Image[itk.SS, 2]].New(
        Input=image, ImageIO=itk.GDCMImageIO.New(), FileNames=names)
    writer.Update()
    ct = _nifti(tmp_path / "ct.nii.gz", np.zeros((5, 6, 4)), affine=(-1.0, -1.0, 1.0, 1.0))  # ITK's LPS -> RAS
    task = UPETeInferTask(network=_Net(), inferer=lambda x, n, **k: x, uses_ct=False)
    path, _ = task({"image": str(folder), "output": str(tmp_path / "out.nii.gz"), "ct": ct})
    assert sorted(np.unique(np.asarray(nib.load(path).dataobj)).round(3)) == list(range(1, 8))


def test_upete_missing_module_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bundle.inferers.upete", None)
    with pytest.raises(ImportError, match=r"uPETe inference needs bundle\.inferers\.upete\.LatentEnhancementInferer"):
        require_upete()
    with pytest.raises(ImportError, match="uPETe inference needs"):
        build_task("upete")


def test_task_constructor_checks():
    with pytest.raises(TypeError, match=r"network must be a torch\.nn\.Module"):
        UPETeInferTask(network=object(), inferer=_identity_inferer)
    with pytest.raises(ValueError, match="mean_multiple must be a number > 0"):
        UPETeInferTask(network=_Net(), inferer=_identity_inferer, mean_multiple=0)
    with pytest.raises(TypeError, match="inferer must be a LegoPETInferer"):
        LegoPETInferTask(network=_Net(), inferer=_identity_inferer, sinogram_scale=1.0, image_scale=1.0)


def test_monailabel_absent_leaves_infers_unchanged(monkeypatch):
    monkeypatch.setattr("bundle.app.monailabel.monailabel_available", lambda: False)
    assert register_infers({}, {"upete": _task()}) == {}
    with pytest.raises(ImportError, match="pip install monailabel"):
        to_monailabel(_task())


def test_monailabel_adapter_with_a_stand_in_monailabel(monkeypatch, tmp_path):
    class FakeInferTask:  # the parts of monailabel.interfaces.tasks.infer_v2.InferTask the adapter uses
        def __init__(self, type, labels, dimension, description, config=None):
            self.type, self.description = type, description

        def info(self):
            return {"type": self.type, "description": self.description}

    module = types.ModuleType("monailabel.interfaces.tasks.infer_v2")
    module.InferTask = FakeInferTask
    module.InferType = types.SimpleNamespace(OTHERS="others")
    for name in ("monailabel", "monailabel.interfaces", "monailabel.interfaces.tasks"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "monailabel.interfaces.tasks.infer_v2", module)
    monkeypatch.setattr("bundle.app.monailabel.monailabel_available", lambda: True)
    adapter = to_monailabel(_task())
    assert adapter.is_valid() and adapter.info()["method"] == "upete"
    pet = np.ones((4, 4, 4))
    path, result = adapter({"image": _nifti(tmp_path / "p.nii.gz", pet), "ct": _nifti(tmp_path / "c.nii.gz", pet),
                            "output": str(tmp_path / "o.nii.gz"), "model": "upete", "device": "cpu"})
    assert result["method"] == "upete" and path.endswith("o.nii.gz")


def test_basic_infer_task_without_monailabel_says_how_to_install(monkeypatch):
    from bundle.app.monailabel import to_basic_infer_task

    monkeypatch.setattr("bundle.app.monailabel.monailabel_available", lambda: False)
    with pytest.raises(ImportError, match="pip install --no-deps monailabel"):
        to_basic_infer_task(_task())
