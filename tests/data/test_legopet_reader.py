"""bundle.data.legopet.load_samples: network inputs prepared exactly as the training scaling and padding."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.data.legopet import load_samples
from bundle.keys import Keys
from tests.workflows.test_legopet import _entries, _image_divisor, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("legopet_reader"))


def test_load_samples_matches_training_scaling(dataset):
    samples = load_samples(dataset, split="test")
    entries = _entries(dataset, "test")
    assert [s.id for s in samples] == [e["id"] for e in entries]
    for s, e in zip(samples, entries, strict=True):
        counts = np.load(dataset / e[Keys.SINOGRAM])[0]
        assert s.sinogram.shape == (1, 256, 256)
        np.testing.assert_allclose(s.sinogram[0, 2:254, 42:214].numpy(), counts / (3e5 / (252 * 172)), rtol=1e-6)
        assert float(s.sinogram[0, :2].abs().sum()) == 0.0
        assert s.image_divisor == pytest.approx(_image_divisor(dataset, e))
