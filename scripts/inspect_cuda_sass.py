"""Print the atomic instructions numba generates for the CUDA Joseph back projection (needs a GPU and nvdisasm).

A back projection whose atomic adds compile to ``ATOM`` (the old value is returned) instead of ``RED``
(fire-and-forget reduction) pays for a round trip per add; this script shows which one numba emitted.
Usage on a CUDA machine:  python scripts/inspect_cuda_sass.py
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.physics import joseph_back
from bundle.physics.kernels import cuda as cuda_kernels


def main() -> int:
    g = torch.Generator().manual_seed(0)
    xs = (torch.rand(1000, 3, generator=g) - 0.5).mul(40).cuda()
    xe = (torch.rand(1000, 3, generator=g) - 0.5).mul(40).cuda()
    values = torch.rand(1000, generator=g).cuda()
    joseph_back(values, xs, xe, (8, 9, 10), (-3.5, -4.0, -4.5), (1.0, 1.0, 1.0))  # compiles the kernel
    import numpy as np

    _, back = cuda_kernels._kernels(np.float32, cuda_kernels.INDEX_TYPE, cuda_kernels.X_PRINCIPAL_INTO_ZXY)
    for signature, sass in back.inspect_sass().items():
        ops = Counter(m.group(1) for m in re.finditer(r"\b((?:ATOM|ATOMG|RED|REDG)[.\w]*)", sass))
        print("signature:", signature)
        print("atomic instructions:", dict(ops) or "none found")
        print("lines:", len(sass.splitlines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
