"""Benchmark of the Joseph projector: forward and back throughput in million LORs per second.

Geometry (``--preset``, default ``mmr_16rings``): mMR transaxial layout, 16 rings, maximum ring difference 15,
172 radial bins x 252 views x 256 planes = 11.1 M LORs, image 31 x 172 x 172 voxels of 2.031 x 2.086 x 2.086 mm,
float32.  Every backend is timed in the same process on the same data; the plain-torch reference runs on a
subset of the LORs (it is O(N) memory per plane) and its throughput is the denominator of the ratio column.
parallelproj is timed too when it is importable.  Each compiled-kernel time is the median of ``--repeats``
runs after one warm-up (which includes numba's compilation); GPU times use CUDA events.

Before timing, each backend's output on the reference subset is compared with the reference
(max |kernel - reference| / max |reference|), so a fast wrong kernel cannot pass unnoticed.

Usage:  python -m scripts.bench_projector [--devices cpu cuda] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from bundle.physics.geometry import preset
from bundle.physics.joseph import ProjectorBackend, joseph_back, joseph_forward


def _parallelproj_importable() -> bool:
    try:
        import parallelproj  # noqa: F401
    except ImportError:
        return False
    return True


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs, after one untimed warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(
    devices: list[str], repeats: int, preset_name: str, reference_lors: int, cuda_variants: bool = False
) -> list[dict]:
    geometry = preset(preset_name)
    rows: list[dict] = []
    g = torch.Generator().manual_seed(1234)
    image_cpu = torch.rand(geometry.image.shape, generator=g, dtype=torch.float32)
    xstart_cpu, xend_cpu = geometry.layout.endpoints_mm(dtype=torch.float32)
    xstart_cpu, xend_cpu = xstart_cpu.reshape(-1, 3), xend_cpu.reshape(-1, 3)
    values_cpu = torch.rand(xstart_cpu.shape[0], generator=g, dtype=torch.float32)
    origin, voxel = geometry.image.origin_mm, geometry.image.voxel_size_mm
    n_all = xstart_cpu.shape[0]
    # reference subset: evenly spread LORs, so it has the same mix of path lengths as the full sinogram
    subset = torch.linspace(0, n_all - 1, min(reference_lors, n_all)).round().long()

    for device_name in devices:
        device = torch.device(device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print(f"skipping {device_name}: CUDA not available", file=sys.stderr)
            continue
        image = image_cpu.to(device)
        xs, xe, vals = xstart_cpu.to(device), xend_cpu.to(device), values_cpu.to(device)
        xs_sub, xe_sub, vals_sub = xs[subset].contiguous(), xe[subset].contiguous(), vals[subset].contiguous()

        def fwd(backend, a=xs, b=xe, image=image):
            return joseph_forward(image, a, b, origin, voxel, backend=backend, check_finite=False)

        def back(backend, a=xs, b=xe, v=vals, shape=image.shape):
            return joseph_back(v, a, b, shape, origin, voxel, backend=backend, check_finite=False)

        ref_fwd = fwd(ProjectorBackend.TORCH, xs_sub, xe_sub)
        ref_back = back(ProjectorBackend.TORCH, xs_sub, xe_sub, vals_sub)
        t_ref_fwd = _timed(lambda a=xs_sub, b=xe_sub: fwd(ProjectorBackend.TORCH, a, b), device, 1)
        t_ref_back = _timed(lambda a=xs_sub, b=xe_sub, v=vals_sub: back(ProjectorBackend.TORCH, a, b, v), device, 1)
        ref_rate = {"forward": len(subset) / t_ref_fwd / 1e6, "back": len(subset) / t_ref_back / 1e6}
        for direction in ("forward", "back"):
            rows.append(dict(device=device_name, backend="torch (reference)", direction=direction,
                             lors=len(subset), seconds=t_ref_fwd if direction == "forward" else t_ref_back,
                             mlors_per_s=ref_rate[direction], ratio=1.0, rel_error=0.0))

        backends = [ProjectorBackend.NUMBA] + ([ProjectorBackend.PARALLELPROJ] if _parallelproj_importable() else [])
        for backend in backends:
            err_fwd = float((fwd(backend, xs_sub, xe_sub) - ref_fwd).abs().max() / ref_fwd.abs().max())
            err_back = float((back(backend, xs_sub, xe_sub, vals_sub) - ref_back).abs().max() / ref_back.abs().max())
            t_fwd = _timed(lambda b=backend: fwd(b), device, repeats)
            t_back = _timed(lambda b=backend: back(b), device, repeats)
            for direction, t, err in (("forward", t_fwd, err_fwd), ("back", t_back, err_back)):
                rate = n_all / t / 1e6
                rows.append(dict(device=device_name, backend=str(backend.value), direction=direction, lors=n_all,
                                 seconds=t, mlors_per_s=rate, ratio=rate / ref_rate[direction], rel_error=err))
        if device.type == "cuda" and cuda_variants:
            def errors(a=xs_sub, b=xe_sub, v=vals_sub, ref_fwd=ref_fwd, ref_back=ref_back):
                e_fwd = (fwd(ProjectorBackend.NUMBA, a, b) - ref_fwd).abs().max() / ref_fwd.abs().max()
                e_back = (back(ProjectorBackend.NUMBA, a, b, v) - ref_back).abs().max() / ref_back.abs().max()
                return {"forward": float(e_fwd), "back": float(e_back)}

            rows += _cuda_variants(device, fwd, back, errors, n_all, ref_rate, repeats)
    return rows


def _cuda_variants(device, fwd, back, errors, n_all, ref_rate, repeats) -> list[dict]:
    """Sweep of the numba CUDA kernels: threads per block, index width, (z, x, y) buffer for x-stepping LORs,
    warp-shared plane range in the back projection.  Each variant's error is measured against the reference."""
    import numpy as np

    from bundle.physics.kernels import cuda as cuda_kernels

    names = ("THREADS_PER_BLOCK", "INDEX_TYPE", "X_PRINCIPAL_INTO_ZXY", "WARP_PLANE_RANGE")
    defaults = tuple(getattr(cuda_kernels, n) for n in names)
    rows = []
    configs = [(t, np.int32, z, w) for t in (128, 256) for z in (False, True) for w in (False, True)]
    configs += [(64, np.int32, True, True), (128, np.int64, True, True)]
    try:
        for config in configs:
            for name, value in zip(names, config, strict=True):
                setattr(cuda_kernels, name, value)
            threads, index_type, zxy, warp = config
            label = (f"tpb={threads} {np.dtype(index_type).name} zxy={'on' if zxy else 'off'} "
                     f"warp={'on' if warp else 'off'}")
            err = errors()
            for direction, fn in (("forward", fwd), ("back", back)):
                t = _timed(lambda f=fn: f(ProjectorBackend.NUMBA), device, repeats)
                rate = n_all / t / 1e6
                rows.append(dict(device=str(device), backend=label, direction=direction, lors=n_all, seconds=t,
                                 mlors_per_s=rate, ratio=rate / ref_rate[direction], rel_error=err[direction]))
    finally:
        for name, value in zip(names, defaults, strict=True):
            setattr(cuda_kernels, name, value)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", default="mmr_16rings")
    parser.add_argument("--reference-lors", type=int, default=200_000)
    parser.add_argument("--cuda-variants", action="store_true", help="also sweep CUDA launch configurations")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    rows = run(args.devices, args.repeats, args.preset, args.reference_lors, args.cuda_variants)
    threads = torch.get_num_threads()
    try:
        import numba

        threads = numba.get_num_threads()
    except ImportError:
        pass
    print(f"Joseph projector benchmark, preset {args.preset}, float32, numba threads {threads}, "
          f"torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    header = f"| {'device':6} | {'backend':30} | {'direction':9} | {'LORs':>10} | {'time (s)':>9} | " \
             f"{'M LORs/s':>9} | {'vs reference':>12} | {'max rel. error':>14} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(f"| {r['device']:6} | {r['backend']:30} | {r['direction']:9} | {r['lors']:>10} | {r['seconds']:>9.4f} | "
              f"{r['mlors_per_s']:>9.3f} | {r['ratio']:>11.1f}x | {r['rel_error']:>14.2e} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
