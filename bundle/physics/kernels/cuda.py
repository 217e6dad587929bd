"""CUDA Joseph kernels (numba.cuda, one thread per LOR, compiled on first use per floating type).

The kernels take any arrays that support the CUDA array interface (torch CUDA tensors through
``numba.cuda.as_cuda_array``) and launch on a given stream, so they order correctly with torch's work.
Back projection adds with a fire-and-forget global reduction (PTX ``red.global.add``, SASS ``RED``): numba's
``cuda.atomic.add`` returns the old value through a generic pointer and compiles to ``ATOM`` plus compare-and-swap
fallbacks for shared memory, which halved the back-projection rate (docs/performance.md).  Under
``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in numba's CUDA simulator on host arrays with ``cuda.atomic.add``,
which is how the test-suite checks them on machines without a GPU.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import config, cuda, types

try:  # numba-cuda (the maintained CUDA target) first, the CUDA target bundled with older numba second
    from numba.cuda.extending import intrinsic
except ImportError:  # pragma: no cover - depends on the installed numba
    from numba.core.extending import intrinsic

from .ray import make_ray_functions

__all__ = [
    "INDEX_TYPE",
    "THREADS_PER_BLOCK",
    "WARP_PLANE_RANGE",
    "X_PRINCIPAL_INTO_ZXY",
    "cuda_back_project",
    "cuda_forward_project",
    "numba_cuda_available",
]

THREADS_PER_BLOCK = 128
_FULL_WARP = np.uint32(0xFFFFFFFF)
# back projection of LORs stepping along x goes into a (z, x, y)-ordered second buffer (coalesced atomics)
X_PRINCIPAL_INTO_ZXY = True
# voxel indices in 32-bit integers (cheaper on GPUs) unless the image has 2**31 voxels or more
INDEX_TYPE: type = np.int32
# back projection: the threads of a warp loop over the union of their plane ranges (coalesced atomics)
WARP_PLANE_RANGE = True


def numba_cuda_available() -> bool:
    """True when numba can drive a CUDA device (or runs its CUDA simulator)."""
    try:
        return bool(cuda.is_available())
    except Exception:  # pragma: no cover - broken driver installs raise here
        return False


_RED_PTX = {
    types.float32: ("f32", "f", ir.FloatType()),
    types.float64: ("f64", "d", ir.DoubleType()),
}


@intrinsic
def red_global_add(typingctx, array, index, value):
    """``array[index] += value`` as one global reduction (PTX ``red.global.add``), result discarded.

    ``array`` is a C-contiguous 1D float32/float64 device array in global memory (any torch/cupy/numba device
    allocation), ``index`` an integer, ``value`` of the array's dtype.  No bounds check: the caller's index is in range.
    """
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.dtype in _RED_PTX):
        return None
    if not isinstance(index, types.Integer) or value != array.dtype:
        return None
    suffix, constraint, llvm_type = _RED_PTX[array.dtype]

    def codegen(context, builder, signature, args):
        array_value, index_value, add_value = args
        data = context.make_array(signature.args[0])(context, builder, array_value).data
        index64 = context.cast(builder, index_value, signature.args[1], types.int64)
        address = builder.ptrtoint(builder.gep(data, [index64]), ir.IntType(64))
        asm_type = ir.FunctionType(ir.VoidType(), [ir.IntType(64), llvm_type])
        red = ir.InlineAsm(
            asm_type,
            "{ .reg .u64 g; cvta.to.global.u64 g, $0; red.global.add." + suffix + " [g], $1; }",
            "l," + constraint,
            side_effect=True,
        )
        builder.call(red, [address, add_value])
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@functools.cache
def _kernels(
    float_type: type, index_type: type = np.int32, x_principal_into_zxy: bool = True, warp_plane_range: bool = True
):
    plane_range = None
    if config.ENABLE_CUDASIM:  # the simulator runs Python, not PTX, and has no warp shuffles

        @cuda.jit(device=True, inline=True)
        def add_to_image(image, index, value):
            cuda.atomic.add(image, index, value)

    else:

        @cuda.jit(device=True, inline=True)
        def add_to_image(image, index, value):
            red_global_add(image, index, value)

    if warp_plane_range and not config.ENABLE_CUDASIM:

        @cuda.jit(device=True, inline=True)
        def plane_range(lo, hi):
            # union of the warp's non-empty plane ranges: the warp steps through the same planes together, so that
            # its atomic adds (neighbouring LORs of a view) land in neighbouring memory.  Every lane must call this.
            empty = lo > hi
            first = index_type(2**31 - 1) if empty else lo
            last = index_type(-1) if empty else hi
            offset = 16
            while offset > 0:
                first = min(first, cuda.shfl_xor_sync(_FULL_WARP, first, offset))
                last = max(last, cuda.shfl_xor_sync(_FULL_WARP, last, offset))
                offset //= 2
            return first, last

    ray_forward, ray_back = make_ray_functions(
        device_jit=cuda.jit(device=True, inline=True), float_type=float_type, add_to_image=add_to_image,
        index_type=index_type, x_principal_into_zxy=x_principal_into_zxy, plane_range=plane_range,
    )

    @cuda.jit(fastmath=True)
    def forward(image, n0, n1, n2, xstart, xend, origin, voxel, out):
        k = cuda.grid(1)
        if k < out.shape[0]:
            out[k] = ray_forward(image, n0, n1, n2, xstart, xend, k, origin, voxel)

    @cuda.jit(fastmath=True)
    def back(image, image_zxy, n0, n1, n2, xstart, xend, origin, voxel, values):
        # every thread of a warp takes part in the warp's plane range; threads past the last LOR add zeros, i.e.
        # nothing (a zero value gives an empty range)
        k = cuda.grid(1)
        n = values.shape[0]
        if k < n:
            ray_back(image, image_zxy, n0, n1, n2, xstart, xend, k, origin, voxel, values[k])
        else:
            ray_back(image, image_zxy, n0, n1, n2, xstart, xend, n - 1, origin, voxel, values[0] * 0)

    return forward, back


def _blocks(n: int) -> int:
    return max(1, (n + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK)


def _index_type(image_shape) -> type:
    n = 1
    for s in image_shape:
        n *= int(s)
    return INDEX_TYPE if n < 2**31 else np.int64


def _launch_args(image_shape):
    it = _index_type(image_shape)
    return it, tuple(it(int(s)) for s in image_shape)


def cuda_forward_project(image_flat, image_shape, xstart, xend, origin, voxel, out, *, stream=0) -> None:
    """Write the line integrals of the LORs (N, 3) through ``image_flat`` (prod(image_shape),) into ``out`` (N,).

    All arguments are device arrays (or host arrays under the simulator) of one floating dtype; ``out`` is
    overwritten.  ``stream`` is a numba stream (``numba.cuda.external_stream`` of torch's current stream).
    """
    it, (n0, n1, n2) = _launch_args(image_shape)
    forward, _ = _kernels(np.dtype(image_flat.dtype).type, it, X_PRINCIPAL_INTO_ZXY)
    n_lors = out.shape[0]
    if n_lors:
        forward[_blocks(n_lors), THREADS_PER_BLOCK, stream](image_flat, n0, n1, n2, xstart, xend, origin, voxel, out)


def cuda_back_project(
    values, xstart, xend, image_shape, origin, voxel, image_flat, image_zxy_flat=None, *, stream=0
) -> None:
    """Add the back projection of ``values`` (N,) into the zero-initialised ``image_flat`` (prod(image_shape),).

    When :data:`X_PRINCIPAL_INTO_ZXY` is set, the LORs that step along axis 2 add into ``image_zxy_flat`` instead,
    a zero-initialised buffer of the image in (n0, n2, n1) order; the caller adds its transpose to the image.
    """
    it, (n0, n1, n2) = _launch_args(image_shape)
    zxy = X_PRINCIPAL_INTO_ZXY
    if zxy and image_zxy_flat is None:
        raise ValueError("image_zxy_flat is required while X_PRINCIPAL_INTO_ZXY is set")
    _, back = _kernels(np.dtype(values.dtype).type, it, zxy, WARP_PLANE_RANGE)
    # never pass one array twice (the CUDA simulator copies each argument back separately)
    second = image_zxy_flat if zxy else cuda.device_array(1, dtype=np.dtype(values.dtype))
    n_lors = values.shape[0]
    if n_lors:
        back[_blocks(n_lors), THREADS_PER_BLOCK, stream](
            image_flat, second, n0, n1, n2, xstart, xend, origin, voxel, values
        )
