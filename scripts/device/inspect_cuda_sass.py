"""Print the atomic instructions in the CUDA Joseph back projection's machine code (SASS).

A back projection whose adds compile to ``ATOM`` (the old value is returned, plus compare-and-swap fallbacks
when the pointer is generic) instead of ``RED`` (fire-and-forget global reduction) pays a round trip per add.

Two ways to get the SASS:

* on a CUDA machine (default): numba compiles for the current GPU and disassembles the loaded kernel;
* ``--offline``: no GPU needed.  numba compiles PTX for ``--cc`` with libNVVM, then ``ptxas`` assembles and
  ``nvdisasm`` disassembles it (the CUDA toolkit's ``ptxas`` and the ``nvidia-cuda-nvdisasm`` wheel's ``nvdisasm``;
  give their paths or have them on PATH; numba finds libNVVM through ``CUDA_HOME``).

Usage:  python -m scripts.device.inspect_cuda_sass [--offline --cc 9.0 --ptxas PATH --nvdisasm PATH] [--float64]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

_ATOMIC = re.compile(r"\b((?:ATOM|ATOMG|ATOMS|RED|REDG)[.\w]*)")
_PTX_ATOMIC = re.compile(r"\b((?:atom|red)\.[\w.]+)")


def _back_kernel(float_type):
    from bundle.physics.kernels import cuda as cuda_kernels

    _, back = cuda_kernels._kernels(
        float_type, cuda_kernels.INDEX_TYPE, cuda_kernels.X_PRINCIPAL_INTO_ZXY, cuda_kernels.WARP_PLANE_RANGE
    )
    return back


def _report(sass: str) -> None:
    print("atomic instructions:", dict(Counter(m.group(1) for m in _ATOMIC.finditer(sass))) or "none found")
    print("lines:", len(sass.splitlines()))


def on_gpu(float_type) -> None:
    import torch

    from bundle.physics import joseph_back

    dtype = torch.float32 if float_type is np.float32 else torch.float64
    g = torch.Generator().manual_seed(0)
    xs = (torch.rand(1000, 3, generator=g, dtype=dtype) - 0.5).mul(40).cuda()
    xe = (torch.rand(1000, 3, generator=g, dtype=dtype) - 0.5).mul(40).cuda()
    values = torch.rand(1000, generator=g, dtype=dtype).cuda()
    joseph_back(values, xs, xe, (8, 9, 10), (-3.5, -4.0, -4.5), (1.0, 1.0, 1.0))  # compiles the kernel
    for signature, sass in _back_kernel(float_type).inspect_sass().items():
        print("signature:", signature)
        _report(sass)


def offline(float_type, cc: tuple[int, int], ptxas: str, nvdisasm: str) -> None:
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda, types

    class _Device:  # device functions ask the current device for its compute capability
        compute_capability = cc

    dispatcher.get_current_device = lambda: _Device()
    ft = types.float32 if float_type is np.float32 else types.float64
    it = types.int32
    vec, mat = types.Array(ft, 1, "C"), types.Array(ft, 2, "C")
    signature = types.void(vec, vec, it, it, it, mat, mat, vec, vec, vec)
    ptx, _ = cuda.compile_ptx(_back_kernel(float_type).py_func, signature, cc=cc, fastmath=True)
    print("PTX atomics:", dict(Counter(m.group(1) for m in _PTX_ATOMIC.finditer(ptx))) or "none found")
    with tempfile.TemporaryDirectory() as tmp:
        ptx_path, cubin = Path(tmp) / "back.ptx", Path(tmp) / "back.cubin"
        ptx_path.write_text(ptx, encoding="utf-8")
        subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-O3", str(ptx_path), "-o", str(cubin)], check=True)
        sass = subprocess.run([nvdisasm, str(cubin)], capture_output=True, text=True, check=True).stdout
    print("signature:", signature, "cc", cc)
    _report(sass)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offline", action="store_true", help="compile without a GPU (ptxas + nvdisasm)")
    parser.add_argument("--cc", default="9.0", help="compute capability for --offline, e.g. 9.0 (H100)")
    parser.add_argument("--ptxas", default=shutil.which("ptxas") or "ptxas")
    parser.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "nvdisasm")
    parser.add_argument("--float64", action="store_true", help="inspect the float64 kernel instead of float32")
    args = parser.parse_args()
    float_type = np.float64 if args.float64 else np.float32
    if args.offline:
        major, minor = (int(p) for p in args.cc.split("."))
        offline(float_type, (major, minor), args.ptxas, args.nvdisasm)
    else:
        on_gpu(float_type)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
