"""The shared ray walk: a back-projection loop widened by ``plane_range`` (as the GPU's warp union) adds the same.

The CUDA kernel lets the threads of a warp loop over the union of their plane ranges; planes outside a LOR's own
range must add nothing.  Here the same ray code is compiled for the CPU with a ``plane_range`` that widens every
range on both sides, and the result is checked against the independent plain-torch reference projector.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from bundle.physics.joseph import joseph_back
from bundle.physics.kernels.ray import make_ray_functions


@numba.njit
def _add(image, index, value):
    image[index] += value


@numba.njit
def _widened(lo, hi):
    return lo - 5, hi + 7  # beyond the image on both sides, as a warp union can be


@pytest.mark.parametrize("plane_range", [None, _widened], ids=["own-range", "widened"])
def test_widened_plane_range_adds_exactly_the_lors_own_planes(plane_range):
    _, ray_back = make_ray_functions(
        device_jit=numba.njit, float_type=np.float64, add_to_image=_add, index_type=np.int64, plane_range=plane_range
    )
    g = torch.Generator().manual_seed(11)
    shape, voxel, origin = (7, 9, 8), (1.1, 1.0, 0.9), (-3.3, -4.0, -3.15)
    directions = torch.randn(300, 3, generator=g, dtype=torch.float64)
    centres = torch.randn(300, 3, generator=g, dtype=torch.float64) * 3
    xs = centres - 20 * directions / directions.norm(dim=1, keepdim=True)
    xe = centres + 20 * directions / directions.norm(dim=1, keepdim=True)
    xe[:20] = centres[:20] + 0.3 * directions[:20]  # LORs ending inside the image (partial plane ranges)
    values = torch.rand(300, generator=g, dtype=torch.float64)
    values[::7] = 0.0  # zero values take the empty-range path
    image = np.zeros(int(np.prod(shape)))
    o, v = np.asarray(origin), np.asarray(voxel)
    xs_np, xe_np = xs.numpy(), xe.numpy()
    for k in range(values.shape[0]):
        ray_back(image, image, *shape, xs_np, xe_np, k, o, v, values[k].item())
    reference = joseph_back(values, xs, xe, shape, origin, voxel, backend="torch")
    np.testing.assert_allclose(image.reshape(shape), reference.numpy(), rtol=1e-12, atol=1e-12)
