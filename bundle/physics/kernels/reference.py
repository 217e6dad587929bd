"""Plain-torch Joseph projector: the reference the compiled kernels are tested against.

Written independently of :mod:`.ray` as *trilinear* interpolation sampled at the crossings of the LOR with
the voxel-centre planes of its principal axis (at such a crossing the weight along the principal axis is
exactly 0 or 1, so trilinear = Joseph's bilinear).  Vectorised over LORs, looping over planes; slow and
memory hungry (O(N) temporaries per plane), meant for tests, the benchmark's reference and machines where
no compiled backend is available.  Differentiable by autograd (back projection = autograd of forward).
"""

from __future__ import annotations

import itertools

import torch

__all__ = ["reference_back_project", "reference_forward_project"]


def _principal_axis(d: torch.Tensor) -> torch.Tensor:
    """Axis index (N,) with the largest |d|; ties: 1 over 0 and 2, 2 over 0 (parallelproj's rule)."""
    a = d.abs()
    axis1 = (a[:, 1] >= a[:, 0]) & (a[:, 1] >= a[:, 2])
    axis2 = (a[:, 2] >= a[:, 0]) & (a[:, 2] >= a[:, 1])
    return torch.where(axis1, 1, torch.where(axis2, 2, 0))


def reference_forward_project(
    image: torch.Tensor, xstart: torch.Tensor, xend: torch.Tensor, origin: torch.Tensor, voxel: torch.Tensor
) -> torch.Tensor:
    """Line integrals (N,) of ``image`` (n0, n1, n2) along LORs ``xstart``/``xend`` (N, 3), all in one dtype."""
    n = torch.tensor(image.shape, device=image.device)
    padded = torch.nn.functional.pad(image, (1, 1, 1, 1, 1, 1))  # zeros outside the image
    flat = padded.reshape(-1)
    pstrides = torch.tensor([(image.shape[1] + 2) * (image.shape[2] + 2), image.shape[2] + 2, 1], device=image.device)

    d = xend - xstart
    axis = _principal_axis(d)
    onehot = torch.nn.functional.one_hot(axis, 3).to(image.dtype)
    d_p = (d * onehot).sum(1)
    valid = d_p != 0
    d_p = torch.where(valid, d_p, torch.ones_like(d_p))
    step_mm = (voxel * onehot).sum(1) * torch.linalg.vector_norm(d, dim=1) / d_p.abs()
    s_p = (xstart * onehot).sum(1)
    e_p = (xend * onehot).sum(1)
    o_p = (origin * onehot).sum(1)
    v_p = (voxel * onehot).sum(1)
    n_p = (n * onehot.long()).sum(1)
    lo = torch.minimum(s_p, e_p)
    hi = torch.maximum(s_p, e_p)

    total = torch.zeros(xstart.shape[0], dtype=image.dtype, device=image.device)
    for plane in range(int(n.max())):
        plane_mm = o_p + plane * v_p
        inside = valid & (plane < n_p) & (plane_mm >= lo) & (plane_mm <= hi)
        t = (plane_mm - s_p) / d_p
        u = (xstart + t[:, None] * d - origin) / voxel  # index coordinates of the crossing (N, 3)
        u = torch.where(onehot.bool(), torch.full_like(u, float(plane)), u)
        base = torch.floor(u)
        frac = u - base
        base = base.long()
        sample = torch.zeros_like(total)
        for corner in itertools.product((0, 1), repeat=3):
            offset = torch.tensor(corner, device=image.device)
            idx = base + offset
            weight = torch.prod(torch.where(offset.bool(), frac, 1 - frac), dim=1)
            in_padded = ((idx >= -1) & (idx <= n)).all(1)
            flat_idx = ((idx.clamp(min=-1) + 1).minimum(n + 1) * pstrides).sum(1)
            sample = sample + torch.where(in_padded, flat[flat_idx] * weight, torch.zeros_like(weight))
        total = total + torch.where(inside, sample, torch.zeros_like(sample))
    return total * torch.where(valid, step_mm, torch.zeros_like(step_mm))


def reference_back_project(
    values: torch.Tensor, xstart: torch.Tensor, xend: torch.Tensor, image_shape: tuple[int, int, int],
    origin: torch.Tensor, voxel: torch.Tensor,
) -> torch.Tensor:
    """Adjoint of :func:`reference_forward_project`, obtained as the exact autograd vector-Jacobian product."""
    with torch.enable_grad():
        image = torch.zeros(image_shape, dtype=values.dtype, device=values.device, requires_grad=True)
        projection = reference_forward_project(image, xstart, xend, origin, voxel)
        (grad,) = torch.autograd.grad(projection, image, grad_outputs=values.detach())
    return grad
