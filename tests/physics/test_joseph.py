"""Joseph projector: analytic line integrals, exact point-source values, kernel vs reference, adjointness."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from bundle.physics.joseph import ProjectorBackend, joseph_back, joseph_forward

COMPILED = [ProjectorBackend.NUMBA]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _random_lors(n: int, generator: torch.Generator, *, radius_mm: float, dtype=torch.float64):
    """LORs between two random points on a sphere of ``radius_mm`` (end points outside the image)."""
    a = torch.randn(n, 3, generator=generator, dtype=dtype)
    b = torch.randn(n, 3, generator=generator, dtype=dtype)
    return radius_mm * a / a.norm(dim=1, keepdim=True), radius_mm * b / b.norm(dim=1, keepdim=True)


def _grid(shape, voxel):
    origin = [-(n - 1) / 2 * v for n, v in zip(shape, voxel, strict=True)]
    axes = [torch.arange(n, dtype=torch.float64) * v + o for n, v, o in zip(shape, voxel, origin, strict=True)]
    return origin, torch.meshgrid(*axes, indexing="ij")


def _distance_to_line(point: torch.Tensor, xstart: torch.Tensor, xend: torch.Tensor) -> torch.Tensor:
    d = (xend - xstart) / (xend - xstart).norm(dim=1, keepdim=True)
    w = point - xstart
    return (w - (w * d).sum(1, keepdim=True) * d).norm(dim=1)


@pytest.mark.parametrize("backend", [*COMPILED, ProjectorBackend.TORCH])
def test_ball_line_integrals_match_chord_lengths(backend):
    """Uniform ball: the projection of an LOR at distance h from the centre is the chord 2 sqrt(R² − h²)."""
    shape, voxel, radius = (48, 48, 48), (1.0, 1.0, 1.0), 18.0
    origin, (z, y, x) = _grid(shape, voxel)
    ball = ((z**2 + y**2 + x**2) <= radius**2).to(torch.float64)
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(300, 3, generator=g, dtype=torch.float64)
    direction /= direction.norm(dim=1, keepdim=True)
    through = (torch.rand(300, 3, generator=g, dtype=torch.float64) - 0.5) * 2 * (radius - 2) / math.sqrt(3)
    xs, xe = through - 60 * direction, through + 60 * direction
    h = _distance_to_line(torch.zeros(3, dtype=torch.float64), xs, xe)
    chord = 2 * torch.sqrt(radius**2 - h**2)
    p = joseph_forward(ball, xs, xe, origin, voxel, backend=backend)
    error = p - chord
    assert float(error.abs().max()) < 1.5  # within the interpolation error of a voxelised ball (1 mm voxels)
    assert abs(float(error.mean())) < 0.3  # no systematic bias


@pytest.mark.parametrize("backend", COMPILED)
def test_cylinder_and_disc_line_integrals(backend):
    """Transaxial LORs through a cylinder (axis 0) and a single-slice disc: chord lengths in the (y, x) plane."""
    radius = 15.0
    for shape in ((9, 40, 40), (1, 40, 40)):
        voxel = (2.0, 1.0, 1.0)
        origin, (_z, y, x) = _grid(shape, voxel)
        cylinder = ((y**2 + x**2) <= radius**2).to(torch.float64)
        g = torch.Generator().manual_seed(1)
        angle = torch.rand(200, generator=g, dtype=torch.float64) * math.pi
        offset = (torch.rand(200, generator=g, dtype=torch.float64) - 0.5) * 2 * (radius - 2)
        direction = torch.stack([torch.zeros_like(angle), torch.cos(angle), torch.sin(angle)], 1)
        normal = torch.stack([torch.zeros_like(angle), -torch.sin(angle), torch.cos(angle)], 1)
        z_slice = float(origin[0])  # a plane of voxel centres
        centre = offset[:, None] * normal + torch.tensor([z_slice, 0.0, 0.0], dtype=torch.float64)
        xs, xe = centre - 50 * direction, centre + 50 * direction
        p = joseph_forward(cylinder, xs, xe, origin, voxel, backend=backend)
        chord = 2 * torch.sqrt(radius**2 - offset**2)
        assert float((p - chord).abs().max()) < 1.5
        assert abs(float((p - chord).mean())) < 0.3


def test_uniform_image_axis_parallel_lor_is_exact():
    """An LOR along axis 2 through voxel centres of an all-ones image integrates to n2 · v2 exactly."""
    shape, voxel = (5, 6, 7), (2.0, 3.0, 1.5)
    origin, _ = _grid(shape, voxel)
    image = torch.ones(shape, dtype=torch.float64)
    xs = torch.tensor([[origin[0] + 2 * voxel[0], origin[1] + 3 * voxel[1], -100.0]], dtype=torch.float64)
    xe = xs.clone()
    xe[0, 2] = 100.0
    p = joseph_forward(image, xs, xe, origin, voxel)
    assert float(p) == pytest.approx(7 * 1.5, rel=1e-12)


@pytest.mark.parametrize("backend", [*COMPILED, ProjectorBackend.TORCH])
def test_point_source_projection_is_step_length(backend):
    """An LOR through the centre of a one-voxel source samples it with weight 1: p = v_p · |d| / |d_p|."""
    shape, voxel = (11, 13, 15), (2.0, 1.5, 1.0)
    origin, _ = _grid(shape, voxel)
    image = torch.zeros(shape, dtype=torch.float64)
    index = (5, 6, 7)
    image[index] = 1.0
    centre = torch.tensor([o + i * v for o, i, v in zip(origin, index, voxel, strict=True)], dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    d = torch.randn(50, 3, generator=g, dtype=torch.float64)
    xs, xe = centre - 40 * d, centre + 40 * d
    p = joseph_forward(image, xs, xe, origin, voxel, backend=backend)
    voxel_t = torch.tensor(voxel, dtype=torch.float64)
    # principal axis with parallelproj's tie rule (no ties in random directions)
    axis = d.abs().argmax(dim=1)
    expected = voxel_t[axis] * d.norm(dim=1) / d.abs().gather(1, axis[:, None])[:, 0]
    torch.testing.assert_close(p, expected, rtol=1e-10, atol=1e-12)


def _awkward_lors(g: torch.Generator, dtype: torch.dtype):
    """Random LORs plus edge cases: axis-parallel, exact diagonals (ties), inside end points, misses, zero length."""
    xs, xe = _random_lors(300, g, radius_mm=25.0, dtype=dtype)
    extra_s = torch.tensor(
        [[-30, 0.2, 0.3], [0.1, -30, 0.4], [0.2, 0.1, -30], [-20, -20, 0], [-20, -20, -20], [1, 1, 1],
         [-30, 40, 40], [2, 2, 2], [-3.0, 0.5, 0.5]],
        dtype=dtype,
    )
    extra_e = torch.tensor(
        [[30, 0.2, 0.3], [0.1, 30, 0.4], [0.2, 0.1, 30], [20, 20, 0], [20, 20, 20], [4, -2, 3],
         [30, 40, 40], [2, 2, 2], [3.0, 0.5, 0.5]],
        dtype=dtype,
    )
    return torch.cat([xs, extra_s]), torch.cat([xe, extra_e])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_kernel_matches_reference(device, dtype):
    g = torch.Generator().manual_seed(3)
    shape, voxel, origin = (9, 10, 11), (1.2, 1.0, 0.9), (-4.0, -5.5, -4.2)
    image = torch.rand(shape, generator=g, dtype=dtype).to(device)
    xs, xe = (t.to(device) for t in _awkward_lors(g, dtype))
    values = torch.rand(xs.shape[0], generator=g, dtype=dtype).to(device)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-11)
    ref = joseph_forward(image, xs, xe, origin, voxel, backend="torch")
    out = joseph_forward(image, xs, xe, origin, voxel, backend="numba")
    torch.testing.assert_close(out, ref, **tol)
    ref_b = joseph_back(values, xs, xe, shape, origin, voxel, backend="torch")
    out_b = joseph_back(values, xs, xe, shape, origin, voxel, backend="numba")
    torch.testing.assert_close(out_b, ref_b, **tol)
    # the zero-length LOR (index -2) and the LOR missing the image (index -3) project to 0
    assert float(out[-2]) == 0.0 and float(out[-3]) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", [*COMPILED, ProjectorBackend.TORCH])
def test_back_is_exact_adjoint(device, backend):
    g = torch.Generator().manual_seed(4)
    shape = (6, 7, 8)
    image = torch.rand(shape, generator=g, dtype=torch.float64).to(device)
    xs, xe = (t.to(device) for t in _awkward_lors(g, torch.float64))
    y = torch.rand(xs.shape[0], generator=g, dtype=torch.float64).to(device)
    origin, voxel = (-3.0, -3.5, -4.0), (1.0, 1.1, 0.9)
    lhs = torch.sum(joseph_forward(image, xs, xe, origin, voxel, backend=backend) * y)
    rhs = torch.sum(image * joseph_back(y, xs, xe, shape, origin, voxel, backend=backend))
    assert float(abs(lhs - rhs) / abs(lhs)) < 1e-12


def test_leading_lor_dimensions_are_kept():
    g = torch.Generator().manual_seed(5)
    xs, xe = _random_lors(24, g, radius_mm=20.0)
    image = torch.rand(4, 5, 6, generator=g, dtype=torch.float64)
    p = joseph_forward(image, xs.reshape(2, 3, 4, 3), xe.reshape(2, 3, 4, 3), (-2, -2, -2.5), (1, 1, 1))
    assert p.shape == (2, 3, 4)
    torch.testing.assert_close(p.reshape(-1), joseph_forward(image, xs, xe, (-2, -2, -2.5), (1, 1, 1)))
    b = joseph_back(p, xs.reshape(2, 3, 4, 3), xe.reshape(2, 3, 4, 3), (4, 5, 6), (-2, -2, -2.5), (1, 1, 1))
    assert b.shape == (4, 5, 6)


@pytest.mark.parametrize("backend", [*COMPILED, ProjectorBackend.TORCH])
def test_autograd_uses_exact_adjoint(backend):
    g = torch.Generator().manual_seed(6)
    xs, xe = _random_lors(50, g, radius_mm=20.0)
    image = torch.rand(5, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.rand(50, generator=g, dtype=torch.float64)
    origin, voxel = (-2.0, -2.5, -3.0), (1.0, 1.0, 1.0)
    (joseph_forward(image, xs, xe, origin, voxel, backend=backend) * w).sum().backward()
    torch.testing.assert_close(image.grad, joseph_back(w, xs, xe, (5, 6, 7), origin, voxel, backend=backend))
    values = w.clone().requires_grad_(True)
    (joseph_back(values, xs, xe, (5, 6, 7), origin, voxel, backend=backend) * image.detach()).sum().backward()
    torch.testing.assert_close(values.grad, joseph_forward(image.detach(), xs, xe, origin, voxel, backend=backend))


def test_float32_and_float64_agree():
    g = torch.Generator().manual_seed(7)
    xs, xe = _random_lors(200, g, radius_mm=30.0)
    image = torch.rand(8, 9, 10, generator=g, dtype=torch.float64)
    p64 = joseph_forward(image, xs, xe, (-3.5, -4, -4.5), (1, 1, 1))
    p32 = joseph_forward(image.float(), xs.float(), xe.float(), (-3.5, -4, -4.5), (1, 1, 1))
    assert p32.dtype == torch.float32
    torch.testing.assert_close(p32.double(), p64, rtol=1e-4, atol=1e-4)


def test_cuda_kernels_in_numba_simulator():
    """The CUDA kernels (same ray code, atomics, thread indexing) run in numba's CUDA simulator."""
    script = textwrap.dedent(
        """
        import numpy as np, torch
        from bundle.physics.kernels import cuda as cuda_kernels
        from bundle.physics.kernels.cuda import cuda_forward_project
        from bundle.physics.kernels.reference import reference_back_project, reference_forward_project
        rng = np.random.default_rng(0)
        for dt in (np.float32, np.float64):
            img = rng.random((4, 5, 6)).astype(dt)
            a = rng.normal(size=(150, 3)); b = rng.normal(size=(150, 3))
            xs = (12 * a / np.linalg.norm(a, axis=1, keepdims=True)).astype(dt)
            xe = (12 * b / np.linalg.norm(b, axis=1, keepdims=True)).astype(dt)
            o = np.array([-1.5, -2.0, -2.5], dt); v = np.array([1.0, 1.0, 1.0], dt)
            out = np.full(150, np.nan, dt)
            cuda_forward_project(img.reshape(-1), img.shape, xs, xe, o, v, out)
            t = [torch.from_numpy(x) for x in (img, xs, xe, o, v)]
            ref = reference_forward_project(*t).numpy()
            assert np.allclose(out, ref, rtol=1e-5, atol=1e-5), np.abs(out - ref).max()
            y = rng.random(150).astype(dt)
            ref_b = reference_back_project(torch.from_numpy(y), t[1], t[2], img.shape, t[3], t[4]).numpy()
            for zxy in (False, True):
                cuda_kernels.X_PRINCIPAL_INTO_ZXY = zxy
                back = np.zeros(img.size, dt); back_zxy = np.zeros(img.size, dt)
                cuda_kernels.cuda_back_project(y, xs, xe, img.shape, o, v, back, back_zxy)
                n0, n1, n2 = img.shape
                total = back.reshape(img.shape) + back_zxy.reshape(n0, n2, n1).transpose(0, 2, 1)
                assert np.allclose(total, ref_b, rtol=1e-5, atol=1e-5), (zxy, np.abs(total - ref_b).max())
                assert (np.abs(back_zxy).max() > 0) == zxy  # the second buffer is used exactly when enabled
        print("simulator ok")
        """
    )
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "simulator ok" in result.stdout


def test_parallelproj_agrees_when_installed():
    pytest.importorskip("parallelproj")
    g = torch.Generator().manual_seed(8)
    xs, xe = _random_lors(200, g, radius_mm=30.0, dtype=torch.float32)
    image = torch.rand(8, 9, 10, generator=g)
    origin, voxel = (-3.5, -4.0, -4.5), (1.0, 1.0, 1.0)
    ours = joseph_forward(image, xs, xe, origin, voxel, backend="numba")
    theirs = joseph_forward(image, xs, xe, origin, voxel, backend="parallelproj")
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    y = torch.rand(200, generator=g)
    torch.testing.assert_close(
        joseph_back(y, xs, xe, (8, 9, 10), origin, voxel, backend="numba"),
        joseph_back(y, xs, xe, (8, 9, 10), origin, voxel, backend="parallelproj"),
        rtol=1e-4, atol=1e-4,
    )


# ---------------------------------------------------------------- argument checks
def _ok_args():
    image = torch.ones(3, 4, 5, dtype=torch.float64)
    xs = torch.tensor([[-10.0, 0.0, 0.0]], dtype=torch.float64)
    xe = torch.tensor([[10.0, 0.0, 0.0]], dtype=torch.float64)
    return image, xs, xe, (-1.0, -1.5, -2.0), (1.0, 1.0, 1.0)


def test_rejects_wrong_image_shape():
    image, xs, xe, o, v = _ok_args()
    with pytest.raises(ValueError, match="image must have shape"):
        joseph_forward(image[0], xs, xe, o, v)


def test_rejects_integer_image():
    image, xs, xe, o, v = _ok_args()
    with pytest.raises(TypeError, match="float32 or float64"):
        joseph_forward(image.long(), xs, xe, o, v)


def test_rejects_dtype_mismatch():
    image, xs, xe, o, v = _ok_args()
    with pytest.raises(TypeError, match="xstart dtype"):
        joseph_forward(image, xs.float(), xe, o, v)


def test_rejects_bad_lor_shape():
    image, xs, xe, o, v = _ok_args()
    with pytest.raises(ValueError, match=r"xstart must have shape \(\.\.\., 3\)"):
        joseph_forward(image, xs[:, :2], xe, o, v)
    with pytest.raises(ValueError, match="same shape"):
        joseph_forward(image, xs, torch.cat([xe, xe]), o, v)


def test_rejects_non_finite_inputs():
    image, xs, xe, o, v = _ok_args()
    image[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="image contains NaN or Inf"):
        joseph_forward(image, xs, xe, o, v)
    image, xs, xe, o, v = _ok_args()
    xs[0, 1] = float("inf")
    with pytest.raises(ValueError, match="xstart contains NaN or Inf"):
        joseph_forward(image, xs, xe, o, v)
    with pytest.raises(ValueError, match="values contains NaN or Inf"):
        joseph_back(torch.tensor([float("nan")], dtype=torch.float64), *_ok_args()[1:3], (3, 4, 5), o, v)


def test_rejects_bad_voxel_size_and_origin():
    image, xs, xe, o, _ = _ok_args()
    with pytest.raises(ValueError, match="voxel_size must be positive"):
        joseph_forward(image, xs, xe, o, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="image_origin must have 3 entries"):
        joseph_forward(image, xs, xe, (0.0, 0.0), (1.0, 1.0, 1.0))


def test_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        joseph_forward(*_ok_args(), backend="fortran")


def test_back_rejects_mismatched_values_and_image_shape():
    _, xs, xe, o, v = _ok_args()
    with pytest.raises(ValueError, match="values shape"):
        joseph_back(torch.ones(2, dtype=torch.float64), xs, xe, (3, 4, 5), o, v)
    with pytest.raises(ValueError, match="image_shape must be three positive sizes"):
        joseph_back(torch.ones(1, dtype=torch.float64), xs, xe, (3, 4), o, v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rejects_device_mismatch():
    image, xs, xe, o, v = _ok_args()
    with pytest.raises(ValueError, match="use one device"):
        joseph_forward(image.cuda(), xs, xe, o, v)
