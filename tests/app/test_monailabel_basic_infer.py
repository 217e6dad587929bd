"""The BasicInferTask subclass with the real monailabel package (skipped where it is not installed; docs/ecosystem.md
says how to install it): MONAI Label's own __call__ drives the task's pre-transforms, inferer, post-transforms and
writer, and gives the same image as task(request)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bundle.app import build_task
from bundle.app.monailabel import register_infers, to_basic_infer_task
from tests.app.conftest import LEGOPET_TINY

basic_infer = pytest.importorskip("monailabel.tasks.infer.basic_infer")


def test_basic_infer_task_equals_the_bundle_task(legopet_files, tmp_path):
    task = build_task("legopet", checkpoint=legopet_files["checkpoint"],
                      overrides={**LEGOPET_TINY, "count_scale": 0.25})
    infers = register_infers({}, {"legopet": task})
    label = infers["legopet"]
    assert isinstance(label, basic_infer.BasicInferTask) and label.is_valid()
    assert label.info()["method"] == "legopet" and label.inferer() is task.inferer
    request = {"image": str(legopet_files["sinogram"]), "output": str(tmp_path / "label.nii.gz"), "seed": 3}
    path, result = label(request)  # MONAI Label's BasicInferTask.__call__
    assert path == request["output"] and set(result["latencies"]) >= {"pre", "infer", "post", "write"}
    expected, _ = task({**request, "output": str(tmp_path / "direct.nii.gz")})
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), np.asarray(nib.load(expected).dataobj))
    with pytest.raises(ValueError, match="output files exist"):
        label(request)
    with pytest.raises(FileNotFoundError, match=r"request\['image'\]"):
        label({**request, "image": str(tmp_path / "missing.npy"), "output": str(tmp_path / "other.nii.gz")})


def test_basic_infer_task_needs_a_bundle_task():
    with pytest.raises(TypeError, match=r"bundle\.app InferTask"):
        to_basic_infer_task(object())
