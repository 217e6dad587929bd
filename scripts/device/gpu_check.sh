#!/usr/bin/env bash
# One-shot GPU check for a lent accelerator: versions, the projector tests on CUDA, the projector benchmark
# (numba CUDA kernels vs the plain-torch reference on the same GPU, plus a launch-configuration sweep).
# Usage on a CUDA machine from the repository root:  OUT=some/folder bash scripts/device/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# numba-cuda on some images still uses numpy.row_stack (removed in numpy 2.5): restore the alias for this check
export PYTHONPATH="$(pwd)/scripts/device/shims${PYTHONPATH:+:$PYTHONPATH}"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, numba, numpy; print('torch', torch.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__); from numba import cuda; print('numba cuda available', cuda.is_available())"
} 2>&1 | tee "$OUT/env.txt"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/physics/test_joseph.py 2>&1 | tee "$OUT/pytest_cuda.txt"
timeout 240 python3 -m scripts.bench_projector --devices cuda --repeats 10 --cuda-variants \
  --json "$OUT/bench_cuda.json" 2>&1 | tee "$OUT/bench_cuda.txt"
python3 -m scripts.device.inspect_cuda_sass 2>&1 | tee "$OUT/back_projection_sass.txt"
