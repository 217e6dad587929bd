"""The CPU Joseph kernels are compiled once per machine, not once per process (bundle/physics/kernels/cpu.py).

Two fresh interpreters share a numba cache folder: the first compiles (cache misses) and writes the machine code,
the second must load it (cache hits, no misses) and project to the same numbers.  Without fixed ids on the device
functions the second process would recompile (the cache key would differ in every process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json
import numpy as np
from bundle.physics.kernels import cpu
rng = np.random.default_rng(0)
image = rng.random((4, 8, 8), dtype=np.float32)
xstart = rng.uniform(-30, 30, (50, 3)).astype(np.float32)
xend = -xstart
origin = np.array([-7.0, -7.0, -7.0], np.float32)
voxel = np.array([2.0, 2.0, 2.0], np.float32)
line = cpu.forward_project(image, xstart, xend, origin, voxel)
back = cpu.back_project(line, xstart, xend, image.shape, origin, voxel)
forward_kernel, back_kernel = cpu._kernels(np.float32)
stats = [forward_kernel.stats, back_kernel.stats]
print(json.dumps({"hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats),
                  "line": line.tolist(), "back": back.ravel().tolist()}))
"""


def _probe(cache_dir) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "NUMBA_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_second_process_loads_the_compiled_kernels_from_the_cache(tmp_path):
    first = _probe(tmp_path)
    second = _probe(tmp_path)
    assert first["misses"] == 2 and first["hits"] == 0, first
    assert second["hits"] == 2 and second["misses"] == 0, second
    assert second["line"] == first["line"]
    assert second["back"] == first["back"]
    assert any(tmp_path.rglob("*.nbi")), "the cache index files were not written"
