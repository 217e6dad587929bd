"""Scanner, sinogram-layout and image geometry checked against analytic geometry and brute-force re-derivations."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch

from bundle.physics.geometry import (
    PRESETS,
    ImageGeometry,
    RegularPolygonScanner,
    ScannerPreset,
    SinogramLayout,
    preset,
)

TINY_SCANNER = {
    "radius_mm": 120.0, "num_sides": 16, "crystals_per_side": 8, "crystal_pitch_mm": 5.5,
    "num_rings": 4, "ring_spacing_mm": 4.0,
}
GAPPY_SCANNER = {
    "radius_mm": 90.0, "num_sides": 12, "crystals_per_side": 6, "crystal_pitch_mm": 6.0,
    "num_rings": 5, "ring_spacing_mm": 3.5, "doi_mm": 4.0, "gap_crystals_per_side": 2,
}


def _scanner(**overrides) -> RegularPolygonScanner:
    return RegularPolygonScanner(**{**TINY_SCANNER, **overrides})


def _signed_distance_and_direction(layout: SinogramLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed distance of every transaxial LOR line from the axis and its direction angle (n_views, n_radial).

    Computed from the end points only: d = ((p_b − p_a) × (0 − p_a)) / |p_b − p_a| in the (x, y) plane.
    """
    xstart, xend = layout.endpoints_mm(planes=slice(0, 1), dtype=torch.float64)
    ya, xa = xstart[0, ..., 1], xstart[0, ..., 2]
    yb, xb = xend[0, ..., 1], xend[0, ..., 2]
    dx, dy = xb - xa, yb - ya
    length = torch.sqrt(dx**2 + dy**2)
    distance = (dx * (-ya) - dy * (-xa)) / length
    return distance, torch.atan2(dy, dx)


def _angle_spread(angles: torch.Tensor) -> torch.Tensor:
    """Per row, the spread of undirected line angles (mod π) around the row's first angle."""
    rel = torch.remainder(angles - angles[:, :1] + math.pi / 2, math.pi) - math.pi / 2
    return rel.max(dim=1).values - rel.min(dim=1).values


# --------------------------------------------------------------------------------------------------------------
# RegularPolygonScanner
# --------------------------------------------------------------------------------------------------------------


SCANNERS = {
    "tiny": lambda: _scanner(),
    "gappy": lambda: RegularPolygonScanner(**GAPPY_SCANNER),
    "mmr": lambda: preset("mmr").layout.scanner,
}


@pytest.mark.parametrize("name", sorted(SCANNERS))
def test_detectors_lie_on_the_sides_of_the_regular_polygon(name):
    scanner = SCANNERS[name]()
    n_sides, per_side = scanner.num_sides, scanner.crystals_per_side
    apothem = scanner.radius_mm + scanner.doi_mm
    pos = scanner.transaxial_positions_mm()  # (N, 2) as (y, x)
    assert pos.shape == (n_sides * per_side, 2)
    assert scanner.detectors_per_ring == n_sides * per_side
    # polygon vertices from elementary geometry: circumradius apothem / cos(π/S), at φ_s ± π/S
    circum = apothem / math.cos(math.pi / n_sides)
    half_side = apothem * math.tan(math.pi / n_sides)
    for s in range(n_sides):
        phi = 2 * math.pi * s / n_sides
        normal = torch.tensor([math.sin(phi), math.cos(phi)], dtype=torch.float64)  # (y, x)
        v0, v1 = (
            circum * torch.tensor([math.sin(phi + sign * math.pi / n_sides), math.cos(phi + sign * math.pi / n_sides)],
                                  dtype=torch.float64)
            for sign in (-1, 1)
        )
        side = pos[s * per_side : (s + 1) * per_side].double()
        # distance from the axis measured along the side normal
        torch.testing.assert_close(side @ normal, torch.full((per_side,), apothem, dtype=torch.float64))
        # collinear with the side's two vertices (zero cross product) and between them
        edge = v1 - v0
        rel = side - v0
        cross = edge[0] * rel[:, 1] - edge[1] * rel[:, 0]
        assert float(cross.abs().max()) < 1e-9 * circum**2
        t = (rel @ edge) / float(edge @ edge)
        assert bool(((t > 0) & (t < 1)).all())
        # equally spaced by the pitch, centred on the side's foot point
        gaps = torch.linalg.vector_norm(side.diff(dim=0), dim=1)
        torch.testing.assert_close(gaps, torch.full((per_side - 1,), scanner.crystal_pitch_mm, dtype=torch.float64))
        torch.testing.assert_close(side.mean(dim=0), apothem * normal)
        # the crystals (with their own width) fit on the side: modules do not overlap
        assert (per_side - 1) / 2 * scanner.crystal_pitch_mm + scanner.crystal_pitch_mm / 2 <= half_side + 1e-9


def test_detector_index_runs_once_around_the_ring():
    scanner = _scanner()
    y, x = scanner.transaxial_positions_mm().unbind(dim=1)
    angle = torch.atan2(y, x)
    step = torch.remainder(torch.roll(angle, -1) - angle, 2 * math.pi)  # includes the step from N-1 back to 0
    assert bool((step > 0).all()) and bool((step < math.pi / 4).all())  # counter-clockwise, no jumps
    assert float(step.sum()) == pytest.approx(2 * math.pi)  # exactly one turn


def test_transaxial_positions_dtype():
    assert _scanner().transaxial_positions_mm(torch.float32).dtype == torch.float32
    assert _scanner().ring_positions_mm(torch.float32).dtype == torch.float32


@pytest.mark.parametrize(("num_rings", "spacing"), [(1, 4.0), (4, 4.0), (7, 2.5), (64, 4.0625)])
def test_rings_are_centred_on_z0_with_ring_spacing(num_rings, spacing):
    z = _scanner(num_rings=num_rings, ring_spacing_mm=spacing).ring_positions_mm()
    assert z.shape == (num_rings,)
    expected = torch.tensor([spacing * (r - (num_rings - 1) / 2) for r in range(num_rings)], dtype=torch.float64)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(z, -z.flip(0))  # symmetric about z = 0
    if num_rings > 1:
        torch.testing.assert_close(z.diff(), torch.full((num_rings - 1,), spacing, dtype=torch.float64))


@pytest.mark.parametrize(("per_side", "gaps"), [(8, 0), (9, 1), (6, 2), (5, 4)])
def test_is_gap_marks_the_last_gap_crystals_of_each_side(per_side, gaps):
    scanner = _scanner(num_sides=6, crystals_per_side=per_side, gap_crystals_per_side=gaps, crystal_pitch_mm=1.0)
    is_gap = scanner.is_gap()
    assert is_gap.dtype == torch.bool and is_gap.shape == (6 * per_side,)
    per_side_view = is_gap.reshape(6, per_side)
    assert per_side_view.sum(dim=1).tolist() == [gaps] * 6
    expected = [j >= per_side - gaps for j in range(per_side)]
    assert all(row == expected for row in per_side_view.tolist())


def test_mmr_scanner_has_the_vendor_block_layout():
    scanner = preset("mmr").layout.scanner
    # 56 blocks x (8 crystals + 1 gap) = 504 positions per ring, 448 real crystals
    assert scanner.detectors_per_ring == 504
    assert int((~scanner.is_gap()).sum()) == 56 * 8
    assert scanner.num_rings == 64
    assert scanner.ring_spacing_mm == pytest.approx(4.0625)


SCANNER_ERRORS = [
    ({"radius_mm": 0.0}, "radius_mm must be a positive finite number"),
    ({"radius_mm": -5.0}, "radius_mm must be a positive finite number"),
    ({"radius_mm": float("nan")}, "radius_mm must be a positive finite number"),
    ({"radius_mm": float("inf")}, "radius_mm must be a positive finite number"),
    ({"crystal_pitch_mm": 0.0}, "crystal_pitch_mm must be a positive finite number"),
    ({"ring_spacing_mm": -4.0}, "ring_spacing_mm must be a positive finite number"),
    ({"num_sides": 0}, "num_sides must be a positive integer"),
    ({"num_sides": 16.0}, "num_sides must be a positive integer"),
    ({"num_sides": 2}, "num_sides must be >= 3 for a polygon"),
    ({"crystals_per_side": 0}, "crystals_per_side must be a positive integer"),
    ({"num_rings": 0}, "num_rings must be a positive integer"),
    ({"num_rings": 2.5}, "num_rings must be a positive integer"),
    ({"num_sides": 3, "crystals_per_side": 3}, r"num_sides \* crystals_per_side must be even"),
    ({"num_sides": 5, "crystals_per_side": 7}, r"must be even .*got 35"),
    ({"doi_mm": -1.0}, "doi_mm must be a finite number >= 0"),
    ({"doi_mm": float("inf")}, "doi_mm must be a finite number >= 0"),
    ({"radius_mm": True}, "radius_mm must be a positive finite number"),
    ({"gap_crystals_per_side": 0.5}, r"gap_crystals_per_side must be in \[0, crystals_per_side=8\)"),
    ({"gap_crystals_per_side": 8}, r"gap_crystals_per_side must be in \[0, crystals_per_side=8\)"),
    ({"gap_crystals_per_side": -1}, r"gap_crystals_per_side must be in \[0, crystals_per_side=8\)"),
]


@pytest.mark.parametrize(("overrides", "message"), SCANNER_ERRORS)
def test_scanner_rejects_bad_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        _scanner(**overrides)


# --------------------------------------------------------------------------------------------------------------
# SinogramLayout
# --------------------------------------------------------------------------------------------------------------


def _plane_order_key(pair: tuple[int, int]) -> tuple[int, int]:
    """Documented order: ring difference 0, +1, −1, +2, −2, …, then axial position r_a + r_b."""
    ra, rb = pair
    d = rb - ra
    rank = 0 if d == 0 else (2 * d - 1 if d > 0 else -2 * d)
    return rank, ra + rb


@pytest.mark.parametrize(("num_rings", "max_diff"), [(1, 0), (4, 0), (4, 1), (4, 3), (7, 4), (16, 15), (64, 60)])
def test_planes_are_all_ring_pairs_within_max_ring_difference_in_documented_order(num_rings, max_diff):
    layout = SinogramLayout(scanner=_scanner(num_rings=num_rings), num_radial=16, max_ring_difference=max_diff)
    brute = [(ra, rb) for ra, rb in itertools.product(range(num_rings), repeat=2) if abs(ra - rb) <= max_diff]
    pairs = [tuple(p) for p in layout.ring_pairs.tolist()]
    assert layout.num_planes == len(brute) == len(pairs)
    assert len(set(pairs)) == len(pairs)  # no duplicates
    assert set(pairs) == set(brute)
    assert pairs == sorted(brute, key=_plane_order_key)
    assert layout.ring_pairs.dtype == torch.long and layout.ring_pairs.shape == (len(brute), 2)
    assert layout.shape == (len(brute), layout.num_views, 16)
    assert layout.num_lors == len(brute) * layout.num_views * 16


def test_max_ring_difference_defaults_to_all_ring_differences():
    layout = SinogramLayout(scanner=_scanner(num_rings=5), num_radial=16)
    assert layout.max_ring_difference == 4
    assert layout.num_planes == 25


@pytest.mark.parametrize("name", ["tiny", "gappy", "mmr"])
def test_num_views_is_half_the_detectors(name):
    scanner = SCANNERS[name]()
    layout = SinogramLayout(scanner=scanner, num_radial=16, max_ring_difference=0)
    assert layout.num_views == scanner.detectors_per_ring // 2


@pytest.mark.parametrize("name", ["tiny_2d", "tiny_3d", "brain_2d", "mmr_2d", "mmr"])
def test_detector_pairs_follow_the_documented_formula(name):
    layout = preset(name).layout
    n_det = layout.scanner.detectors_per_ring
    a, b = layout.detector_pairs()
    assert a.shape == b.shape == (layout.num_views, layout.num_radial)
    assert bool(((a >= 0) & (a < n_det) & (b >= 0) & (b < n_det)).all())
    v = torch.arange(layout.num_views)[:, None]
    k = torch.arange(-layout.num_radial // 2, layout.num_radial // 2)[None, :]
    assert bool((torch.remainder(b - a, n_det) == torch.remainder(n_det // 2 + k, n_det)).all())
    total = torch.remainder(a + b, n_det)
    lo = torch.remainder(2 * v + n_det // 2, n_det)
    hi = torch.remainder(2 * v + n_det // 2 + 1, n_det)
    assert bool(((total == lo) | (total == hi)).all())
    # both neighbouring angle sums occur in every view (the radial interleaving)
    assert bool(((total == lo).any(dim=1) & (total == hi).any(dim=1)).all())
    # no LOR joins a detector to itself, and every unordered detector pair occurs at most once per plane
    assert bool((a != b).all())
    key = torch.minimum(a, b) * n_det + torch.maximum(a, b)
    assert torch.unique(key).numel() == key.numel()


def test_each_3d_lor_occurs_at_most_once_in_the_sinogram():
    layout = preset("tiny_3d").layout
    n_det = layout.scanner.detectors_per_ring
    a, b = layout.detector_pairs()
    ra, rb = layout.ring_pairs.unbind(dim=1)
    end_a = ra[:, None, None] * n_det + a[None]  # global crystal id (ring, detector)
    end_b = rb[:, None, None] * n_det + b[None]
    key = torch.minimum(end_a, end_b) * (n_det * layout.scanner.num_rings) + torch.maximum(end_a, end_b)
    assert key.numel() == layout.num_lors
    assert torch.unique(key).numel() == key.numel()


def test_circular_scanner_lor_distances_are_analytic():
    """One crystal per side puts the detectors on a circle: LOR k of any view is at distance ρ |sin(π k / N)|."""
    n_det, rho = 64, 100.0
    scanner = RegularPolygonScanner(
        radius_mm=rho, num_sides=n_det, crystals_per_side=1, crystal_pitch_mm=1.0, num_rings=1, ring_spacing_mm=1.0
    )
    layout = SinogramLayout(scanner=scanner, num_radial=40)
    distance, angle = _signed_distance_and_direction(layout)
    k = torch.arange(-20, 20, dtype=torch.float64)
    expected = rho * torch.sin(math.pi * k / n_det).abs()
    torch.testing.assert_close(distance.abs(), expected.expand_as(distance), atol=1e-9, rtol=0)
    # signed distance strictly monotone in k, with the same orientation in every view
    steps = distance.diff(dim=1)
    assert bool((steps > 0).all()) or bool((steps < 0).all())
    # exactly two LOR directions per view, π/N apart (the interleaved angle sums); view v+1 turns by 2π/N
    rel = torch.remainder(angle - angle[:, :1] + math.pi / 2, math.pi) - math.pi / 2
    for row in rel:
        distinct = torch.unique(torch.round(row / (math.pi / n_det) * 1e6) / 1e6)
        assert distinct.numel() == 2
        assert float(distinct.max() - distinct.min()) == pytest.approx(1.0)
    turn = torch.remainder(angle[1:, 0] - angle[:-1, 0], math.pi)
    torch.testing.assert_close(turn, torch.full_like(turn, 2 * math.pi / n_det))


@pytest.mark.parametrize("name", ["tiny_2d", "brain_2d", "mmr_2d", "mmr"])
def test_radial_sampling_is_monotone_with_half_pitch_spacing(name):
    layout = preset(name).layout
    scanner = layout.scanner
    distance, _ = _signed_distance_and_direction(layout)
    steps = distance.diff(dim=1)
    assert bool((steps > 0).all()) or bool((steps < 0).all())  # monotone in k for every view
    steps = steps.abs()
    centre = layout.num_radial // 2  # index of k = 0
    # average spacing over ±16 bins (≈ two modules) is the mean arc per half detector step, π (R + doi) / N
    window = 16
    mean_spacing = (distance[:, centre + window] - distance[:, centre - window]).abs() / (2 * window)
    nominal = math.pi * (scanner.radius_mm + scanner.doi_mm) / scanner.detectors_per_ring
    assert float((mean_spacing / nominal - 1).abs().max()) < 0.05
    # within one flat module the spacing is half the crystal pitch
    central = steps[:, centre - 8 : centre + 8]
    assert float(central.median()) == pytest.approx(scanner.crystal_pitch_mm / 2, rel=0.03)
    # the LOR closest to the axis passes within one half-pitch of it
    assert float(distance[:, centre].abs().max()) < scanner.crystal_pitch_mm / 2


@pytest.mark.parametrize("name", ["tiny_2d", "brain_2d", "mmr_2d", "mmr"])
def test_lors_of_one_view_are_nearly_parallel(name):
    layout = preset(name).layout
    _, angle = _signed_distance_and_direction(layout)
    detector_step = 2 * math.pi / layout.scanner.detectors_per_ring
    assert float(_angle_spread(angle).max()) <= detector_step
    # the mean direction (circular mean of the doubled angle) turns by one detector step per view, π in all
    mean = torch.atan2(torch.sin(2 * angle).mean(dim=1), torch.cos(2 * angle).mean(dim=1)) / 2
    turn = torch.remainder(mean.diff(), math.pi)
    assert float((turn - detector_step).abs().max()) < 0.5 * detector_step
    assert float(turn.sum()) + detector_step == pytest.approx(math.pi, rel=1e-3)


@pytest.mark.parametrize("name", ["gappy", "mmr"])
def test_gap_mask_is_zero_exactly_where_an_endpoint_is_a_gap(name):
    scanner = dataclasses.replace(SCANNERS[name](), num_rings=2)
    num_radial = 64 if name == "gappy" else 344
    layout = SinogramLayout(scanner=scanner, num_radial=num_radial)
    mask = layout.gap_mask()
    assert mask.shape == layout.shape and mask.dtype == torch.float32
    per_side, gaps = scanner.crystals_per_side, scanner.gap_crystals_per_side
    a, b = layout.detector_pairs()
    expected = torch.ones(layout.num_views, layout.num_radial)
    for v, k in itertools.product(range(layout.num_views), range(layout.num_radial)):
        if int(a[v, k]) % per_side >= per_side - gaps or int(b[v, k]) % per_side >= per_side - gaps:
            expected[v, k] = 0.0
    for plane in mask:
        assert torch.equal(plane, expected)
    assert 0 < int((expected == 0).sum()) < expected.numel()


def test_gap_mask_is_all_ones_without_gaps():
    layout = preset("tiny_3d").layout
    assert torch.equal(layout.gap_mask(), torch.ones(layout.shape))


def test_endpoints_lie_on_the_detectors_of_the_ring_pair():
    layout = SinogramLayout(scanner=RegularPolygonScanner(**GAPPY_SCANNER), num_radial=40, max_ring_difference=3)
    scanner = layout.scanner
    xstart, xend = layout.endpoints_mm(dtype=torch.float64)
    assert xstart.shape == xend.shape == (layout.num_planes, layout.num_views, layout.num_radial, 3)
    z = [(r - (scanner.num_rings - 1) / 2) * scanner.ring_spacing_mm for r in range(scanner.num_rings)]
    for p, (ra, rb) in enumerate(layout.ring_pairs.tolist()):
        assert bool((xstart[p, ..., 0] == z[ra]).all()) and bool((xend[p, ..., 0] == z[rb]).all())
    # transaxially every end point is a detector on the polygon: its distance along the side normal is R + doi
    apothem = scanner.radius_mm + scanner.doi_mm
    for end in (xstart, xend):
        phi = torch.atan2(end[..., 1], end[..., 2])
        side = torch.round(phi / (2 * math.pi / scanner.num_sides))
        side_phi = side * 2 * math.pi / scanner.num_sides
        along_normal = end[..., 1] * torch.sin(side_phi) + end[..., 2] * torch.cos(side_phi)
        torch.testing.assert_close(along_normal, torch.full_like(along_normal, apothem))
    pos = scanner.transaxial_positions_mm()
    a, b = layout.detector_pairs()
    torch.testing.assert_close(xstart[0, ..., 1:], pos[a])
    torch.testing.assert_close(xend[0, ..., 1:], pos[b])


def test_endpoints_subsets_are_slices_of_the_full_result():
    layout = preset("tiny_3d").layout
    full_start, full_end = layout.endpoints_mm(dtype=torch.float64)
    views = torch.tensor([5, 0, 63, 17])
    planes_index = torch.tensor([15, 2, 7])
    cases = [
        (slice(3, 9), None, full_start[3:9], full_end[3:9]),
        (planes_index, None, full_start[planes_index], full_end[planes_index]),
        (None, views, full_start[:, views], full_end[:, views]),
        (slice(0, 16, 5), views, full_start[0:16:5][:, views], full_end[0:16:5][:, views]),
        (torch.tensor(4), views, full_start[4:5, views], full_end[4:5, views]),
    ]
    for planes, view_sel, want_start, want_end in cases:
        got_start, got_end = layout.endpoints_mm(planes, view_sel, dtype=torch.float64)
        assert torch.equal(got_start, want_start)
        assert torch.equal(got_end, want_end)
    start32, end32 = layout.endpoints_mm()
    assert start32.dtype == end32.dtype == torch.float32
    torch.testing.assert_close(start32, full_start.float())


SINOGRAM_ERRORS = [
    ({"num_radial": 63}, r"num_radial must be an even integer in \[2, detectors_per_ring - 2 = 126\], got 63"),
    ({"num_radial": 130}, r"num_radial must be an even integer in \[2, detectors_per_ring - 2 = 126\], got 130"),
    # all N radial bins would pair every detector with itself at k = -N/2
    ({"num_radial": 128}, r"num_radial must be an even integer in \[2, detectors_per_ring - 2 = 126\], got 128"),
    ({"num_radial": 0}, "num_radial must be an even integer"),
    ({"num_radial": 64.0}, "num_radial must be an even integer"),
    ({"max_ring_difference": 4}, r"max_ring_difference must be in \[0, num_rings - 1 = 3\], got 4"),
    ({"max_ring_difference": -1}, r"max_ring_difference must be in \[0, num_rings - 1 = 3\], got -1"),
    ({"max_ring_difference": 1.0}, r"max_ring_difference must be in \[0, num_rings - 1 = 3\]"),
]


@pytest.mark.parametrize(("overrides", "message"), SINOGRAM_ERRORS)
def test_sinogram_layout_rejects_bad_arguments(overrides, message):
    kwargs = {"scanner": _scanner(num_rings=4), "num_radial": 64, **overrides}
    with pytest.raises(ValueError, match=message):
        SinogramLayout(**kwargs)


# --------------------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------------------


def test_mmr_preset_matches_the_biograph_mmr():
    p = preset("mmr")
    layout = p.layout
    assert layout.scanner.num_rings == 64
    assert layout.max_ring_difference == 60
    assert layout.num_radial == 344 and layout.num_views == 252
    assert layout.num_planes == 4084
    assert layout.shape == (4084, 252, 344)
    assert p.image.shape == (127, 344, 344)
    assert p.image.voxel_size_mm == pytest.approx((2.03125, 2.08626, 2.08626))
    assert p.span == 11
    # 127 slices at half the ring spacing
    assert p.image.voxel_size_mm[0] == pytest.approx(layout.scanner.ring_spacing_mm / 2)


def test_mmr_2d_preset():
    p = preset("mmr_2d")
    assert p.layout.shape == (1, 252, 172)
    assert p.image.shape == (1, 172, 172)
    assert p.layout.scanner.detectors_per_ring == 504


def test_mmr_16rings_preset():
    p = preset("mmr_16rings")
    assert p.layout.scanner.num_rings == 16
    assert p.layout.num_planes == 256 == 16 * 16
    assert p.layout.shape == (256, 252, 172)
    assert p.image.shape == (31, 172, 172)


@pytest.mark.parametrize(("name", "shape", "image_shape"), [
    ("tiny_2d", (1, 64, 64), (1, 40, 40)),
    ("tiny_3d", (16, 64, 64), (8, 40, 40)),
])
def test_tiny_presets(name, shape, image_shape):
    p = preset(name)
    assert p.layout.shape == shape
    assert p.image.shape == image_shape


def test_brain_2d_preset_covers_a_brain_on_a_64_grid():
    """64 views x 64 radial bins and a 64 x 64 image at 3.75 mm (240 mm): the LORs reach beyond the image's
    inscribed circle (a head of up to 240 mm diameter is fully sampled); radial spacing 4.35 mm at the centre,
    about 4 mm on average, close to the voxel size."""
    p = preset("brain_2d")
    assert p.layout.shape == (1, 64, 64) and p.image.shape == (1, 64, 64)
    assert p.image.voxel_size_mm[1:] == (3.75, 3.75)
    distance, _ = _signed_distance_and_direction(p.layout)
    assert 120.0 < float(distance.abs().max()) < p.layout.scanner.radius_mm
    steps = distance.diff(dim=1).abs()
    assert float(steps[:, 24:40].median()) == pytest.approx(p.layout.scanner.crystal_pitch_mm / 2, rel=0.03)  # 4.35
    assert 3.75 < float(steps.mean()) < 4.35


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_named_and_consistent(name):
    p = preset(name)
    assert isinstance(p, ScannerPreset)
    assert p.name == name
    assert isinstance(p.layout, SinogramLayout) and isinstance(p.image, ImageGeometry)
    assert p.span >= 1 and p.span % 2 == 1
    assert p == preset(name)  # a fresh, equal object each call


def _image_half_extent(image: ImageGeometry) -> tuple[float, float, float]:
    return tuple(n * v / 2 for n, v in zip(image.shape, image.voxel_size_mm, strict=True))


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "mmr"])
def test_preset_image_fits_inside_the_bore_and_the_axial_fov(name):
    p = preset(name)
    scanner = p.layout.scanner
    half_z, half_y, half_x = _image_half_extent(p.image)
    assert math.hypot(half_y, half_x) < scanner.radius_mm  # image corners inside the bore
    ring_half = (scanner.num_rings - 1) / 2 * scanner.ring_spacing_mm + scanner.ring_spacing_mm / 2
    assert half_z <= ring_half + 1e-9


def test_mmr_image_is_the_vendor_grid_covering_the_transaxial_fov():
    """The mMR grid (344 × 2.086 mm = 718 mm) is wider than the 656 mm bore, as the vendor's; it covers every LOR."""
    p = preset("mmr")
    scanner = p.layout.scanner
    half_z, half_y, half_x = _image_half_extent(p.image)
    assert half_y > scanner.radius_mm  # documented exception: wider than the bore
    distance, _ = _signed_distance_and_direction(p.layout)
    fov_radius = float(distance.abs().max())
    assert fov_radius < scanner.radius_mm
    assert fov_radius < min(half_y, half_x)  # the whole transaxial FOV seen by the LORs lies inside the image
    ring_half = (scanner.num_rings - 1) / 2 * scanner.ring_spacing_mm + scanner.ring_spacing_mm / 2
    assert half_z <= ring_half + 1e-9


def test_unknown_preset_name():
    with pytest.raises(ValueError, match=r"preset name must be one of \(.*'mmr'.*\), got 'biograph'"):
        preset("biograph")


# --------------------------------------------------------------------------------------------------------------
# ImageGeometry
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "voxel"), [((1, 40, 40), (4.0, 3.0, 3.0)), ((8, 5, 6), (2.0, 1.5, 2.5))])
def test_image_default_origin_centres_the_image(shape, voxel):
    image = ImageGeometry(shape=shape, voxel_size_mm=voxel)
    for n, v, o in zip(shape, voxel, image.origin_mm, strict=True):
        first, last = o, o + (n - 1) * v  # centres of the first and last voxel
        assert first == pytest.approx(-last)
        assert o - v / 2 == pytest.approx(-(n * v) / 2)  # outer edge at −half extent


def test_image_explicit_origin_and_normalised_types():
    image = ImageGeometry(shape=[2, 3, 4], voxel_size_mm=[1, 2, 3], origin_mm=(1, -2, 0.5))
    assert image.shape == (2, 3, 4)
    assert image.voxel_size_mm == (1.0, 2.0, 3.0)
    assert image.origin_mm == (1.0, -2.0, 0.5)


IMAGE_ERRORS = [
    ({"shape": (4, 4)}, r"shape must be three positive sizes \(n_z, n_y, n_x\), got \(4, 4\)"),
    ({"shape": (1, 0, 4)}, "shape must be three positive sizes"),
    ({"shape": (1, 4, 4, 4)}, "shape must be three positive sizes"),
    ({"voxel_size_mm": (1.0, 1.0)}, r"voxel_size_mm must have 3 entries \(z, y, x\)"),
    ({"voxel_size_mm": (1.0, 0.0, 1.0)}, "voxel_size_mm must be a positive finite number, got 0.0"),
    ({"voxel_size_mm": (1.0, -2.0, 1.0)}, "voxel_size_mm must be a positive finite number"),
    ({"voxel_size_mm": (1.0, float("inf"), 1.0)}, "voxel_size_mm must be a positive finite number"),
    ({"origin_mm": (0.0, 0.0)}, r"origin_mm must be 3 finite numbers \(z, y, x\)"),
    ({"origin_mm": (0.0, float("nan"), 0.0)}, "origin_mm must be 3 finite numbers"),
]


@pytest.mark.parametrize(("overrides", "message"), IMAGE_ERRORS)
def test_image_geometry_rejects_bad_arguments(overrides, message):
    kwargs = {"shape": (2, 4, 4), "voxel_size_mm": (1.0, 1.0, 1.0), **overrides}
    with pytest.raises(ValueError, match=message):
        ImageGeometry(**kwargs)
