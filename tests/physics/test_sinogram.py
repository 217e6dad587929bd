"""SinogramProjector and span compression checked against analytic chord lengths, symmetries and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from bundle.physics.geometry import ImageGeometry, RegularPolygonScanner, SinogramLayout, preset
from bundle.physics.joseph import joseph_forward
from bundle.physics.operators import LinearOperator
from bundle.physics.sinogram import SinogramProjector, SpanCompression, span_groups


def _projector(name: str, **kwargs) -> SinogramProjector:
    p = preset(name)
    return SinogramProjector(layout=p.layout, image=p.image, **kwargs)


def _random(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _oblique_geometry() -> tuple[SinogramLayout, ImageGeometry]:
    """A short-radius, long-axis scanner whose oblique LORs are up to ~30 % longer than their transaxial part."""
    scanner = RegularPolygonScanner(
        radius_mm=60.0, num_sides=12, crystals_per_side=4, crystal_pitch_mm=7.0, num_rings=8, ring_spacing_mm=10.0
    )
    layout = SinogramLayout(scanner=scanner, num_radial=24)
    image = ImageGeometry(shape=(36, 40, 40), voxel_size_mm=(2.0, 2.0, 2.0))  # z ±36 mm covers the rings ±35 mm
    return layout, image


# --------------------------------------------------------------------------------------------------------------
# SinogramProjector: shapes and line integrals
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "in_shape", "out_shape"), [
    ("tiny_2d", (1, 40, 40), (1, 64, 64)),
    ("tiny_3d", (8, 40, 40), (16, 64, 64)),
])
def test_projector_shapes(name, in_shape, out_shape):
    proj = _projector(name)
    assert isinstance(proj, LinearOperator)
    assert proj.in_shape == in_shape and proj.out_shape == out_shape
    assert proj.voxel_size_mm == preset(name).image.voxel_size_mm
    y = proj(torch.zeros(in_shape, dtype=torch.float64))
    assert y.shape == out_shape and y.dtype == torch.float64
    x = proj.adjoint(torch.zeros(out_shape, dtype=torch.float64))
    assert x.shape == in_shape and x.dtype == torch.float64


def _uniform_cylinder_case(layout: SinogramLayout, image: ImageGeometry, radius_mm: float):
    """Project a uniform cylinder (voxel centres within radius_mm, all slices); return (projection, truth, h, factor).

    The truth is the chord of the disc with the *same area* as the voxelised one (so it measures the projector,
    not the staircase of the phantom): 2 sqrt(r_eq² − h²) · |d| / |d_transaxial|, h = LOR distance from the axis.
    """
    nz, ny, nx = image.shape
    _, oy, ox = image.origin_mm
    _, vy, vx = image.voxel_size_mm
    yy = oy + vy * torch.arange(ny, dtype=torch.float64)
    xx = ox + vx * torch.arange(nx, dtype=torch.float64)
    disc = (yy[:, None] ** 2 + xx[None, :] ** 2 <= radius_mm**2).to(torch.float64)
    r_eq = math.sqrt(float(disc.sum()) * vy * vx / math.pi)
    projection = SinogramProjector(layout=layout, image=image)(disc.expand(nz, ny, nx).contiguous())
    xstart, xend = layout.endpoints_mm(dtype=torch.float64)
    d = xend - xstart
    dy, dx = d[..., 1], d[..., 2]
    transaxial = torch.sqrt(dy**2 + dx**2)
    h = (dy * xstart[..., 2] - dx * xstart[..., 1]).abs() / transaxial
    factor = torch.linalg.vector_norm(d, dim=-1) / transaxial
    truth = 2 * torch.sqrt(torch.clamp(r_eq**2 - h**2, min=0.0)) * factor
    return projection, truth, h, factor


@pytest.mark.parametrize("case", ["tiny_2d", "tiny_3d", "oblique"])
def test_uniform_cylinder_projects_to_chord_lengths(case):
    if case == "oblique":
        (layout, image), radius = _oblique_geometry(), 35.0
    else:
        layout, image, radius = preset(case).layout, preset(case).image, 50.0
    y, truth, h, factor = _uniform_cylinder_case(layout, image, radius)
    voxel = image.voxel_size_mm[1]
    through = h < radius - voxel
    assert int(through.sum()) > 0.3 * y.numel()
    err = y - truth
    # every LOR through the cylinder: within 1.5 voxels (along the LOR); mean error ~ 0
    assert float((err[through].abs() / factor[through]).max()) < 1.5 * voxel
    assert abs(float(err[through].mean())) < 0.1 * voxel
    # LORs passing clear of the cylinder see nothing
    missing = h > radius + math.sqrt(2) * voxel
    assert int(missing.sum()) > 0
    assert float(y[missing].abs().max()) == 0.0
    if case == "oblique":
        assert float(factor.max()) > 1.25  # the 3D length factor is really exercised


def test_rotating_the_image_by_a_quarter_turn_shifts_the_views():
    """The tiny scanner is symmetric under a 90° turn (N/4 = 32 detectors): view v + 32 sees the turned object."""
    proj = _projector("tiny_2d")
    x = _random(proj.in_shape, 1)
    y = proj(x)
    y_rot = proj(torch.rot90(x, -1, dims=(1, 2)).contiguous())
    quarter = proj.layout.scanner.detectors_per_ring // 4
    torch.testing.assert_close(y_rot[:, quarter:], y[:, : proj.out_shape[1] - quarter], rtol=1e-12, atol=1e-12)


def test_sensitivity_is_positive_in_the_central_fov_and_axially_symmetric():
    proj = _projector("tiny_3d")
    sens = proj.adjoint(torch.ones(proj.out_shape, dtype=torch.float64))
    image = proj.image
    _, oy, ox = image.origin_mm
    _, vy, vx = image.voxel_size_mm
    yy = oy + vy * torch.arange(image.shape[1], dtype=torch.float64)
    xx = ox + vx * torch.arange(image.shape[2], dtype=torch.float64)
    central = (yy[:, None] ** 2 + xx[None, :] ** 2) < (0.9 * image.shape[1] * vy / 2) ** 2
    assert bool((sens[:, central] > 0).all())
    # rings and ring pairs are symmetric about z = 0, so is the sensitivity
    torch.testing.assert_close(sens.flip(0), sens, rtol=1e-12, atol=0)
    # A^T 1 is also the column sum of A: <A^T 1, e_j> = <1, A e_j>
    j = (4, 20, 17)
    unit = torch.zeros(proj.in_shape, dtype=torch.float64)
    unit[j] = 1.0
    assert float(proj(unit).sum()) == pytest.approx(float(sens[j]), rel=1e-12)


def _principal_axis_ties(layout: SinogramLayout) -> torch.Tensor:
    """LORs at 45° transaxially (|d_y| = |d_x| up to rounding): Joseph's principal axis is then a tie."""
    xstart, xend = layout.endpoints_mm(dtype=torch.float64)
    d = (xend - xstart).abs()
    return (d[..., 1] - d[..., 2]).abs() <= 1e-6 * d[..., 1:].amax(dim=-1)


@pytest.mark.parametrize("name", ["tiny_2d", "tiny_3d"])
def test_float32_and_float64_agree(name):
    """float32 = float64 to 1e-4 (relative to the maximum) on every LOR that is not a 45° principal-axis tie.

    On a tie the two dtypes may round to different principal axes; the float32 value must then equal Joseph's
    float64 value for one of the two axes (found by nudging the end point 1e-7 mm towards either axis).
    """
    proj = _projector(name)
    ties = _principal_axis_ties(proj.layout)
    assert 0 < int(ties.sum()) < ties.numel() // 10
    x = _random(proj.in_shape, 2)
    y64 = proj(x)
    y32 = proj(x.float())
    assert y32.dtype == torch.float32
    scale = float(y64.abs().max())
    assert float((y32.double() - y64)[~ties].abs().max()) < 1e-4 * scale
    xstart, xend = proj.layout.endpoints_mm(dtype=torch.float64)
    start, end = xstart[ties], xend[ties]
    origin, voxel = proj.image.origin_mm, proj.image.voxel_size_mm
    choices = []
    for axis in (1, 2):
        nudged = end.clone()
        nudged[:, axis] += torch.sign(end[:, axis] - start[:, axis]) * 1e-7
        choices.append(joseph_forward(x, start, nudged, origin, voxel))
    closest = torch.minimum((y32.double()[ties] - choices[0]).abs(), (y32.double()[ties] - choices[1]).abs())
    assert float(closest.max()) < 1e-4 * scale
    # the adjoint of a sinogram that is zero on the ties
    w = _random(proj.out_shape, 3)
    w[ties] = 0.0
    b64 = proj.adjoint(w)
    b32 = proj.adjoint(w.float())
    assert b32.dtype == torch.float32
    assert float((b32.double() - b64).abs().max()) < 1e-4 * float(b64.abs().max())


# --------------------------------------------------------------------------------------------------------------
# View subsets and plane chunks
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_2d", "tiny_3d"])
def test_view_subset_is_a_slice_of_the_full_projection(name):
    proj = _projector(name)
    idx = torch.tensor([3, 10, 11, 40, 63, 0])
    sub = proj.view_subset(idx)
    assert sub.out_shape == (proj.out_shape[0], len(idx), proj.out_shape[2])
    x = _random(proj.in_shape, 4)
    assert torch.equal(sub(x), proj(x)[:, idx, :])
    w = _random(sub.out_shape, 5)
    padded = torch.zeros(proj.out_shape, dtype=torch.float64)
    padded[:, idx, :] = w
    torch.testing.assert_close(sub.adjoint(w), proj.adjoint(padded), rtol=1e-12, atol=1e-12)


def test_nested_view_subset_and_constructor_views():
    proj = _projector("tiny_2d", max_lors_per_call=1000, cache_max_lors=10)
    outer = proj.view_subset([5, 10, 20, 30])
    inner = outer.view_subset([2, 0])  # positions along outer's view axis -> views 20, 5
    assert inner.views.tolist() == [20, 5]
    assert (inner.max_lors_per_call, inner.cache_max_lors, inner.backend) == (1000, 10, proj.backend)
    x = _random(proj.in_shape, 6)
    assert torch.equal(inner(x), proj(x)[:, [20, 5], :])
    direct = SinogramProjector(layout=proj.layout, image=proj.image, views=[20, 5])
    assert direct.out_shape == inner.out_shape == (1, 2, 64)
    assert torch.equal(direct(x), inner(x))


@pytest.mark.parametrize("max_lors_per_call", [3 * 64 * 64 + 5, 5 * 64 * 64])
def test_plane_chunking_and_uncached_endpoints_give_the_same_result(max_lors_per_call):
    reference = _projector("tiny_3d")
    chunked = _projector("tiny_3d", max_lors_per_call=max_lors_per_call, cache_max_lors=0)
    assert len(chunked._plane_chunks()) > 1
    x = _random(reference.in_shape, 7)
    assert torch.equal(chunked(x), reference(x))
    w = _random(reference.out_shape, 8)
    torch.testing.assert_close(chunked.adjoint(w), reference.adjoint(w), rtol=1e-12, atol=1e-12)
    # a chunked view subset too
    idx = torch.tensor([1, 33, 62])
    assert torch.equal(chunked.view_subset(idx)(x), reference(x)[:, idx])


# --------------------------------------------------------------------------------------------------------------
# SinogramProjector: argument checks
# --------------------------------------------------------------------------------------------------------------


def test_projector_rejects_wrong_layout_type():
    p = preset("tiny_2d")
    with pytest.raises(TypeError, match="layout must be a SinogramLayout, got ScannerPreset"):
        SinogramProjector(layout=p, image=p.image)


def test_projector_rejects_wrong_image_type():
    p = preset("tiny_2d")
    with pytest.raises(TypeError, match="image must be an ImageGeometry, got tuple"):
        SinogramProjector(layout=p.layout, image=(1, 40, 40))


@pytest.mark.parametrize("views", [[], [64], [-1], [0, 70]])
def test_projector_rejects_bad_views(views):
    p = preset("tiny_2d")
    with pytest.raises(ValueError, match=r"views must be non-empty indices in \[0, 64\)"):
        SinogramProjector(layout=p.layout, image=p.image, views=views)


@pytest.mark.parametrize("view_indices", [[], [4], [-1]])
def test_view_subset_rejects_bad_indices(view_indices):
    sub = _projector("tiny_2d").view_subset([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"view_indices must be non-empty indices in \[0, 4\)"):
        sub.view_subset(view_indices)


@pytest.mark.parametrize("value", [0, -5])
def test_projector_rejects_bad_max_lors_per_call(value):
    with pytest.raises(ValueError, match=f"max_lors_per_call must be >= 1, got {value}"):
        _projector("tiny_2d", max_lors_per_call=value)


def test_projector_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        _projector("tiny_2d", backend="bogus")


def test_apply_and_adjoint_reject_wrong_shapes():
    proj = _projector("tiny_2d")
    message = r"SinogramProjector.apply input must have shape \(1, 40, 40\), got \(40, 40\)"
    with pytest.raises(ValueError, match=message):
        proj.apply(torch.zeros(40, 40))
    with pytest.raises(
        ValueError, match=r"SinogramProjector.adjoint input must have shape \(1, 64, 64\), got \(1, 64, 63\)"
    ):
        proj.adjoint(torch.zeros(1, 64, 63))
    with pytest.raises(TypeError, match=r"SinogramProjector.apply input must be a torch.Tensor of shape \(1, 40, 40\)"):
        proj.apply([[0.0]])
    sub = proj.view_subset([1, 2])
    with pytest.raises(ValueError, match=r"SinogramProjector.adjoint input must have shape \(1, 2, 64\)"):
        sub.adjoint(torch.zeros(1, 64, 64))


# --------------------------------------------------------------------------------------------------------------
# Span compression
# --------------------------------------------------------------------------------------------------------------


def _segment_table(span: int, max_diff: int) -> dict[int, int]:
    """Signed segment of every ring difference, built by walking the differences (independent of span_groups).

    Segment 0 holds the `span` central differences −(span−1)/2 … (span−1)/2; then each further segment on each side
    takes the next `span` differences outwards.
    """
    table = dict.fromkeys(range(-(span - 1) // 2, (span - 1) // 2 + 1), 0)
    d, seg = (span - 1) // 2 + 1, 1
    while d <= max_diff:
        for dd in range(d, d + span):
            table[dd], table[-dd] = seg, -seg
        d, seg = d + span, seg + 1
    return table


def _segment_rank(seg: int) -> int:
    return 0 if seg == 0 else (2 * seg - 1 if seg > 0 else -2 * seg)


def _check_span_groups(layout: SinogramLayout, span: int) -> list[int]:
    """Brute-force check of span_groups; returns the number of compressed planes per segment, in segment order."""
    group, n_out = span_groups(layout, span)
    pairs = layout.ring_pairs.tolist()
    table = _segment_table(span, layout.max_ring_difference)
    assert group.shape == (len(pairs),)
    assert sorted(set(group.tolist())) == list(range(n_out))  # every compressed plane gets >= 1 ring pair
    members: dict[int, list[tuple[int, int]]] = {}
    for g, (ra, rb) in zip(group.tolist(), pairs, strict=True):
        members.setdefault(g, []).append((ra, rb))
    keys = []
    for g in range(n_out):
        sums = {ra + rb for ra, rb in members[g]}
        segments = {table[rb - ra] for ra, rb in members[g]}
        assert len(sums) == 1 and len(segments) == 1  # same axial position, one segment
        keys.append((_segment_rank(segments.pop()), sums.pop()))
    # maximal merging: one compressed plane per (segment, axial position); documented order
    assert len(set(keys)) == n_out
    assert keys == sorted(keys)
    per_segment = [0] * (max(k[0] for k in keys) + 1)
    for rank, _ in keys:
        per_segment[rank] += 1
    return per_segment


def test_mmr_span_11_gives_the_known_837_planes():
    layout = preset("mmr").layout
    _, n_out = span_groups(layout, 11)
    assert n_out == 837
    # the mMR span-11 michelogram: segment 0 has 127 planes, segments ±1…±5 have 115, 93, 71, 49, 27 each
    assert _check_span_groups(layout, 11) == [127, 115, 115, 93, 93, 71, 71, 49, 49, 27, 27]


@pytest.mark.parametrize(("num_rings", "max_diff", "span"), [(4, 3, 3), (7, 6, 3), (7, 5, 5), (9, 8, 7), (16, 15, 5)])
def test_span_groups_merge_only_equal_axial_positions_within_one_segment(num_rings, max_diff, span):
    scanner = RegularPolygonScanner(
        radius_mm=50.0, num_sides=8, crystals_per_side=2, crystal_pitch_mm=4.0, num_rings=num_rings,
        ring_spacing_mm=4.0,
    )
    layout = SinogramLayout(scanner=scanner, num_radial=8, max_ring_difference=max_diff)
    per_segment = _check_span_groups(layout, span)
    # segment 0 holds one compressed plane per axial position r_a + r_b = 0 … 2(n − 1)
    assert per_segment[0] == 2 * num_rings - 1


def test_span_1_is_the_identity():
    layout = preset("tiny_3d").layout
    group, n_out = span_groups(layout, 1)
    assert n_out == layout.num_planes
    assert group.tolist() == list(range(layout.num_planes))
    op = SpanCompression(layout=layout, span=1)
    x = _random(layout.shape, 9)
    assert torch.equal(op(x), x)
    assert torch.equal(op.adjoint(x), x)


@pytest.mark.parametrize(("num_rings", "span"), [(4, 3), (7, 3), (7, 5)])
def test_span_compression_sums_ring_pairs_and_preserves_counts(num_rings, span):
    scanner = RegularPolygonScanner(
        radius_mm=50.0, num_sides=8, crystals_per_side=2, crystal_pitch_mm=4.0, num_rings=num_rings,
        ring_spacing_mm=4.0,
    )
    layout = SinogramLayout(scanner=scanner, num_radial=8)
    op = SpanCompression(layout=layout, span=span)
    x = _random(layout.shape, 10)
    y = op(x)
    table = _segment_table(span, num_rings - 1)
    pairs = layout.ring_pairs.tolist()
    # brute force: compressed plane = sum of the ring-pair planes with its (segment, r_a + r_b)
    targets = sorted({(_segment_rank(table[rb - ra]), ra + rb) for ra, rb in pairs})
    assert op.out_shape == (len(targets), layout.num_views, layout.num_radial)
    for g, key in enumerate(targets):
        chosen = [p for p, (ra, rb) in enumerate(pairs) if (_segment_rank(table[rb - ra]), ra + rb) == key]
        torch.testing.assert_close(y[g], x[chosen].sum(dim=0), rtol=1e-14, atol=0)
    assert float(y.sum()) == pytest.approx(float(x.sum()), rel=1e-13)
    # adjoint: copy each compressed plane back to its ring pairs
    back = op.adjoint(y)
    for p, (ra, rb) in enumerate(pairs):
        assert torch.equal(back[p], y[targets.index((_segment_rank(table[rb - ra]), ra + rb))])


def test_span_compression_for_a_view_subset():
    layout = preset("tiny_3d").layout
    op = SpanCompression(layout=layout, span=3, num_views=5)
    assert op.in_shape == (16, 5, 64)
    x = _random(op.in_shape, 11)
    full = SpanCompression(layout=layout, span=3)
    assert op.out_shape == (full.out_shape[0], 5, 64)
    assert float(op(x).sum()) == pytest.approx(float(x.sum()), rel=1e-13)


@pytest.mark.parametrize("span", [2, 0, -3, 3.0, "3"])
def test_span_must_be_a_positive_odd_integer(span):
    layout = preset("tiny_3d").layout
    with pytest.raises(ValueError, match=f"span must be a positive odd integer, got {span!r}"):
        span_groups(layout, span)
    with pytest.raises(ValueError, match="span must be a positive odd integer"):
        SpanCompression(layout=layout, span=span)


def test_span_compression_rejects_wrong_shapes():
    op = SpanCompression(layout=preset("tiny_3d").layout, span=3)
    message = r"SpanCompression.apply input must have shape \(16, 64, 64\), got \(8, 64, 64\)"
    with pytest.raises(ValueError, match=message):
        op.apply(torch.zeros(8, 64, 64))
    with pytest.raises(ValueError, match=r"SpanCompression.adjoint input must have shape \(\d+, 64, 64\)"):
        op.adjoint(torch.zeros(16, 64, 64))


def test_segment_table_sanity():
    # the helper itself against the mMR convention: span 11 -> segment 0 = |d| <= 5, segment 1 = 6..16, ...
    table = _segment_table(11, 60)
    assert [table[d] for d in (0, 5, -5, 6, 16, 17, -17, 60, -60)] == [0, 0, 0, 1, 1, 2, -2, 5, -5]
    assert set(table) == set(range(-60, 61))


def test_span_compression_rejects_bad_num_views_and_boolean_span():
    layout = preset("tiny_3d").layout
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="num_views must be a positive integer"):
            SpanCompression(layout=layout, span=3, num_views=bad)
    with pytest.raises(ValueError, match="span must be a positive odd integer"):
        span_groups(layout, True)
