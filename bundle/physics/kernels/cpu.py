"""Multi-threaded CPU Joseph kernels (numba, compiled on first use per floating type, cached on disk).

Forward projection runs one LOR per loop iteration over ``numba.prange``.  Back projection splits the LORs
into as many contiguous chunks as numba has threads; each chunk accumulates into its own image buffer and the
buffers are summed afterwards (no atomics needed; memory = threads × image).

Compiling the two kernels takes 10-20 s of CPU, paid by every process that projects (each stage of the main job,
each ``bundle.app`` call), so they are compiled with ``cache=True``: the machine code is stored beside this file
(numba's ``__pycache__``, or ``NUMBA_CACHE_DIR``) and later processes load it.  Numba keys a cached closure on its
bytecode and the pickled contents of its closure cells, so a change to the ray walk in :mod:`.ray` (another
file) gives a new key and a recompile, never stale code.  The cells hold compiled device functions, which
pickle with a per-process random id unless one is set: :func:`_device_jit` gives each a fixed id (its module,
name and floating type), without which the key would differ in every process and the cache would never be hit.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from .ray import make_ray_functions

__all__ = ["back_project", "forward_project"]


def _device_jit(float_type: type):
    """``numba.njit(fastmath, inline)`` that also gives each compiled device function a fixed id (see above)."""
    type_name = np.dtype(float_type).name

    def jit(function):
        dispatcher = numba.njit(fastmath=True, inline="always")(function)
        dispatcher._set_uuid(f"{function.__module__}.{function.__qualname__}.{type_name}")
        return dispatcher

    return jit


def _add_to_image(image, index, value):
    image[index] += value


@functools.cache
def _kernels(float_type: type):
    jit = _device_jit(float_type)
    ray_forward, ray_back = make_ray_functions(device_jit=jit, float_type=float_type, add_to_image=jit(_add_to_image))

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def forward(image, n0, n1, n2, xstart, xend, origin, voxel, out):
        for k in numba.prange(out.shape[0]):
            out[k] = ray_forward(image, n0, n1, n2, xstart, xend, k, origin, voxel)

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def back(buffers, n0, n1, n2, xstart, xend, origin, voxel, values):
        n_chunks = buffers.shape[0]
        n_lors = values.shape[0]
        chunk = (n_lors + n_chunks - 1) // n_chunks
        for c in numba.prange(n_chunks):
            image = buffers[c]
            for k in range(c * chunk, min(n_lors, (c + 1) * chunk)):
                ray_back(image, image, n0, n1, n2, xstart, xend, k, origin, voxel, values[k])

    return forward, back


def forward_project(
    image: np.ndarray, xstart: np.ndarray, xend: np.ndarray, origin: np.ndarray, voxel: np.ndarray
) -> np.ndarray:
    """Line integrals of ``image`` (n0, n1, n2) along the LORs ``xstart``/``xend`` (N, 3) -> (N,).

    All arrays C-contiguous and of one floating dtype (checked by the caller, :mod:`bundle.physics.joseph`).
    """
    out = np.empty(xstart.shape[0], dtype=image.dtype)
    forward, _ = _kernels(image.dtype.type)
    n0, n1, n2 = image.shape
    forward(image.reshape(-1), n0, n1, n2, xstart, xend, origin, voxel, out)
    return out


def back_project(
    values: np.ndarray, xstart: np.ndarray, xend: np.ndarray, image_shape: tuple[int, int, int],
    origin: np.ndarray, voxel: np.ndarray,
) -> np.ndarray:
    """Adjoint of :func:`forward_project`: spread ``values`` (N,) back into an image of ``image_shape``."""
    n_chunks = max(1, min(numba.get_num_threads(), values.shape[0]))
    buffers = np.zeros((n_chunks, int(np.prod(image_shape))), dtype=values.dtype)
    _, back = _kernels(values.dtype.type)
    n0, n1, n2 = image_shape
    back(buffers, n0, n1, n2, xstart, xend, origin, voxel, values)
    image = buffers[0] if n_chunks == 1 else buffers.sum(axis=0)
    return image.reshape(image_shape)
