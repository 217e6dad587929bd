"""One source for the Joseph ray walk, compiled for the CPU (numba) and for CUDA (numba.cuda).

Joseph's method (Joseph 1982), non-TOF, as in parallelproj's ``joseph3d_fwd``/``joseph3d_back``:

* the *principal axis* ``p`` of a line of response (LOR) from ``xstart`` to ``xend`` is the array axis along
  which the LOR runs most steeply, |d_p| = max_k |d_k| with d = xend − xstart (ties: axis 1 over 0, axis 2
  over 0; axis 1 over 2);
* the LOR is sampled where it crosses the voxel-centre planes ``x_p = o_p + i·v_p`` that lie between its two
  end points and inside the image; at each crossing the image is interpolated bilinearly in the other two
  axes ``q``, ``r`` (voxels outside the image count as zero);
* the line integral is  p = c · Σ_i bilinear(image, i, u_q(i), u_r(i)),  with the step length between
  planes  c = v_p · |d| / |d_p|  (mm).

In index units of the other axes the crossing of plane ``i`` is linear in ``i``:

    u_q(i) = A_q + B_q · i,   A_q = (s_q − o_q)/v_q + (o_p − s_p)·d_q/(d_p·v_q),   B_q = v_p·d_q/(d_p·v_q)

with s = xstart, o = image origin (centre of voxel [0,0,0]) and v = voxel size.  The planes whose crossing
lies outside −1 < u < n in any axis contribute nothing and are skipped before the loop.

The functions here are plain Python; :func:`make_ray_functions` compiles them with a given ``device_jit``
(``numba.njit`` or ``numba.cuda.jit(device=True)``) for one floating type, so the CPU and GPU kernels and the
CUDA simulator all run the same arithmetic.  Back projection differs only in how a weight is added to a voxel
(plain ``+=`` on a per-thread buffer on the CPU, an atomic add on the GPU), which is injected as
``add_to_image``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["make_ray_functions"]


def make_ray_functions(
    *,
    device_jit: Callable,
    float_type: type,
    add_to_image: Callable,
    index_type: type = np.int64,
    x_principal_into_zxy: bool = False,
    plane_range: Callable | None = None,
) -> tuple[Callable, Callable]:
    """Compile ``(ray_forward, ray_back)`` for one floating type.

    Args:
        device_jit: decorator compiling a device function (``numba.njit(...)`` or ``numba.cuda.jit(device=True)``).
        float_type: ``numpy.float32`` or ``numpy.float64``; all per-plane arithmetic is done in this type.
        add_to_image: compiled ``add_to_image(image_flat, index, value)`` doing ``image_flat[index] += value``.
        index_type: integer type of voxel indices and strides (``numpy.int32`` is cheaper on GPUs; the caller
            passes the image sizes in this type and guarantees the image has fewer than 2**31 voxels).
        x_principal_into_zxy: back projection of LORs whose principal axis is 2 goes into a second buffer of
            shape (n0, n2, n1) (``image_zxy``), so that neighbouring LORs of a sinogram view add into adjacent
            memory (coalesced atomics on GPUs); the caller adds its transpose to the image.
        plane_range: compiled ``plane_range(lo, hi) -> (loop_lo, loop_hi)`` giving the plane indices the back
            projection loop runs over; it must contain ``[lo, hi]`` (planes outside it add nothing).  The GPU
            kernel passes the union over its warp, so that the threads of a warp step through the same planes
            together and their atomic adds land in neighbouring memory.  Default: ``[lo, hi]`` itself.

    Returns:
        ``ray_forward(image_flat, n0, n1, n2, xstart, xend, k, origin, voxel)`` -> line integral of LOR ``k``;
        ``ray_back(image_flat, image_zxy_flat, n0, n1, n2, xstart, xend, k, origin, voxel, value)`` adds
        ``value`` times the same weights into ``image_flat`` (or ``image_zxy_flat``, see above).
        ``xstart``/``xend`` are (N, 3) arrays, ``origin``/``voxel`` (3,) arrays, ``image_flat`` the C-ordered
        image of shape (n0, n1, n2) flattened.
    """
    ft = float_type
    it = index_type
    if plane_range is None:

        @device_jit
        def plane_range(lo, hi):
            return lo, hi

    @device_jit
    def ray_setup(n0, n1, n2, xstart, xend, k, origin, voxel):
        zero = ft(0.0)
        s0 = ft(xstart[k, 0])
        s1 = ft(xstart[k, 1])
        s2 = ft(xstart[k, 2])
        d0 = ft(xend[k, 0]) - s0
        d1 = ft(xend[k, 1]) - s1
        d2 = ft(xend[k, 2]) - s2
        a0 = abs(d0)
        a1 = abs(d1)
        a2 = abs(d2)
        # principal axis p and the two others (q, r); strides of the C-ordered flat image
        if a1 >= a0 and a1 >= a2:
            dp, dq, dr = d1, d0, d2
            sp_, sq_, sr_ = s1, s0, s2
            op, oq, orr = origin[1], origin[0], origin[2]
            vp, vq, vr = voxel[1], voxel[0], voxel[2]
            np_, nq, nr = n1, n0, n2
            stride_p, stride_q, stride_r = n2, n1 * n2, it(1)
            axis = it(1)
        elif a2 >= a0 and a2 >= a1:
            dp, dq, dr = d2, d0, d1
            sp_, sq_, sr_ = s2, s0, s1
            op, oq, orr = origin[2], origin[0], origin[1]
            vp, vq, vr = voxel[2], voxel[0], voxel[1]
            np_, nq, nr = n2, n0, n1
            stride_p, stride_q, stride_r = it(1), n1 * n2, n2
            axis = it(2)
        else:
            dp, dq, dr = d0, d1, d2
            sp_, sq_, sr_ = s0, s1, s2
            op, oq, orr = origin[0], origin[1], origin[2]
            vp, vq, vr = voxel[0], voxel[1], voxel[2]
            np_, nq, nr = n0, n1, n2
            stride_p, stride_q, stride_r = n1 * n2, n2, it(1)
            axis = it(0)
        if dp == zero:  # zero-length LOR: no line integral
            return it(0), it(-1), zero, zero, zero, zero, zero, stride_p, stride_q, stride_r, nq, nr, axis
        step_mm = vp * math.sqrt(d0 * d0 + d1 * d1 + d2 * d2) / abs(dp)
        # planes between the two end points, clipped to the image
        ip_start = (sp_ - op) / vp
        ip_end = (sp_ + dp - op) / vp
        lo_f = max(min(ip_start, ip_end), zero)
        hi_f = min(max(ip_start, ip_end), ft(np_ - 1))
        # crossings in the other two axes, linear in the plane index i
        bq = vp * dq / (dp * vq)
        aq = (sq_ - oq) / vq + (op - sp_) * dq / (dp * vq)
        br = vp * dr / (dp * vr)
        ar = (sr_ - orr) / vr + (op - sp_) * dr / (dp * vr)
        one = ft(1.0)
        # keep only planes with -1 < u < n in both axes (widened by one plane; the loop checks bounds exactly)
        if bq == zero:
            if aq <= -one or aq >= ft(nq):
                return it(0), it(-1), aq, bq, ar, br, step_mm, stride_p, stride_q, stride_r, nq, nr, axis
        else:
            c1 = (-one - aq) / bq
            c2 = (ft(nq) - aq) / bq
            lo_f = max(lo_f, min(c1, c2) - one)
            hi_f = min(hi_f, max(c1, c2) + one)
        if br == zero:
            if ar <= -one or ar >= ft(nr):
                return it(0), it(-1), aq, bq, ar, br, step_mm, stride_p, stride_q, stride_r, nq, nr, axis
        else:
            c1 = (-one - ar) / br
            c2 = (ft(nr) - ar) / br
            lo_f = max(lo_f, min(c1, c2) - one)
            hi_f = min(hi_f, max(c1, c2) + one)
        if lo_f > hi_f:
            return it(0), it(-1), aq, bq, ar, br, step_mm, stride_p, stride_q, stride_r, nq, nr, axis
        lo = it(math.ceil(lo_f))
        hi = it(math.floor(hi_f))
        return lo, hi, aq, bq, ar, br, step_mm, stride_p, stride_q, stride_r, nq, nr, axis

    @device_jit
    def ray_forward(image, n0, n1, n2, xstart, xend, k, origin, voxel):
        lo, hi, aq, bq, ar, br, step_mm, stride_p, stride_q, stride_r, nq, nr, _axis = ray_setup(
            n0, n1, n2, xstart, xend, k, origin, voxel
        )
        one = ft(1.0)
        total = ft(0.0)
        fi = ft(lo)
        for i in range(lo, hi + it(1)):
            uq = aq + bq * fi
            ur = ar + br * fi
            fi += one
            jq = it(math.floor(uq))
            jr = it(math.floor(ur))
            wq = uq - ft(jq)
            wr = ur - ft(jr)
            base = i * stride_p + jq * stride_q + jr * stride_r
            r0 = jr >= 0 and jr < nr
            r1 = jr >= -1 and jr < nr - 1
            value = ft(0.0)
            if jq >= 0 and jq < nq:
                if r0:
                    value += image[base] * (one - wr)
                if r1:
                    value += image[base + stride_r] * wr
                value *= one - wq
            if jq >= -1 and jq < nq - 1:
                upper = ft(0.0)
                if r0:
                    upper += image[base + stride_q] * (one - wr)
                if r1:
                    upper += image[base + stride_q + stride_r] * wr
                value += upper * wq
            total += value
        return total * step_mm

    @device_jit
    def ray_back(image, image_zxy, n0, n1, n2, xstart, xend, k, origin, voxel, value):
        lo, hi, aq, bq, ar, br, step_mm, stride_p, stride_q, stride_r, nq, nr, axis = ray_setup(
            n0, n1, n2, xstart, xend, k, origin, voxel
        )
        target = image
        if x_principal_into_zxy and axis == 2:
            # LORs stepping along x write into the (z, x, y)-ordered buffer, where their neighbours (which differ
            # in y) are adjacent in memory; the caller adds that buffer back transposed
            target = image_zxy
            stride_p, stride_q, stride_r = n1, n1 * n2, it(1)
        one = ft(1.0)
        scaled = ft(value) * step_mm
        if scaled == ft(0.0):  # nothing to add (sparse data): an empty range
            hi = lo - it(1)
        loop_lo, loop_hi = plane_range(lo, hi)
        fi = ft(loop_lo)
        for i in range(loop_lo, loop_hi + it(1)):
            if i >= lo and i <= hi:
                uq = aq + bq * fi
                ur = ar + br * fi
                jq = it(math.floor(uq))
                jr = it(math.floor(ur))
                wq = uq - ft(jq)
                wr = ur - ft(jr)
                base = i * stride_p + jq * stride_q + jr * stride_r
                r0 = jr >= 0 and jr < nr
                r1 = jr >= -1 and jr < nr - 1
                if jq >= 0 and jq < nq:
                    lower = scaled * (one - wq)
                    if r0:
                        add_to_image(target, base, lower * (one - wr))
                    if r1:
                        add_to_image(target, base + stride_r, lower * wr)
                if jq >= -1 and jq < nq - 1:
                    upper = scaled * wq
                    if r0:
                        add_to_image(target, base + stride_q, upper * (one - wr))
                    if r1:
                        add_to_image(target, base + stride_q + stride_r, upper * wr)
            fi += one

    return ray_forward, ray_back
