"""Sinogram projector (image -> sinogram) built on the Joseph functions, and span compression.

:class:`SinogramProjector` maps an image of :class:`~.geometry.ImageGeometry` shape (n_z, n_y, n_x) to a
sinogram of shape (n_planes, n_views, n_radial) of a :class:`~.geometry.SinogramLayout`, optionally restricted
to a subset of views (OSEM subsets).  LOR end points are cached per (dtype, device) when the sinogram has at
most ``cache_max_lors`` LORs and are otherwise generated plane-chunk by plane-chunk, so memory stays bounded
for the full mMR.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .geometry import ImageGeometry, SinogramLayout
from .joseph import ProjectorBackend, joseph_back, joseph_forward, resolve_backend
from .operators import LinearOperator

__all__ = ["SinogramProjector", "SpanCompression", "span_groups"]


class SinogramProjector(LinearOperator):
    """``A``: line integrals (mm × image units) of an image along every LOR of a sinogram layout.

    Args:
        layout: the sinogram (scanner, radial bins, ring differences).
        image: the image grid.
        views: optional 1D index tensor of the views to keep (in the given order); default all views.
        backend: Joseph backend (:class:`~.joseph.ProjectorBackend`).
        max_lors_per_call: LORs projected per kernel call (plane chunks); bounds temporary memory.
        cache_max_lors: LOR end points are cached when the (view-restricted) sinogram has at most this many LORs.
    """

    def __init__(
        self,
        *,
        layout: SinogramLayout,
        image: ImageGeometry,
        views: torch.Tensor | Sequence[int] | None = None,
        backend: ProjectorBackend | str = ProjectorBackend.AUTO,
        max_lors_per_call: int = 1 << 24,
        cache_max_lors: int = 1 << 25,
    ) -> None:
        if not isinstance(layout, SinogramLayout):
            raise TypeError(f"layout must be a SinogramLayout, got {type(layout).__name__}")
        if not isinstance(image, ImageGeometry):
            raise TypeError(f"image must be an ImageGeometry, got {type(image).__name__}")
        if views is None:
            view_index = torch.arange(layout.num_views)
        else:
            view_index = torch.as_tensor(views, dtype=torch.long).reshape(-1)
            if view_index.numel() == 0 or int(view_index.min()) < 0 or int(view_index.max()) >= layout.num_views:
                raise ValueError(f"views must be non-empty indices in [0, {layout.num_views}), got {views!r}")
        if max_lors_per_call < 1:
            raise ValueError(f"max_lors_per_call must be >= 1, got {max_lors_per_call}")
        if backend not in {b.value for b in ProjectorBackend}:
            raise ValueError(f"backend must be one of {[b.value for b in ProjectorBackend]}, got {backend!r}")
        super().__init__(in_shape=image.shape, out_shape=(layout.num_planes, len(view_index), layout.num_radial))
        self.layout = layout
        self.image = image
        self.views = view_index
        self.backend = backend
        self.max_lors_per_call = int(max_lors_per_call)
        self.cache_max_lors = int(cache_max_lors)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        return self.image.voxel_size_mm

    def view_subset(self, view_indices: torch.Tensor | Sequence[int]) -> SinogramProjector:
        """The projector restricted to ``view_indices`` (positions along this projector's view axis)."""
        index = torch.as_tensor(view_indices, dtype=torch.long).reshape(-1)
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= len(self.views):
            raise ValueError(f"view_indices must be non-empty indices in [0, {len(self.views)}), got {view_indices!r}")
        return SinogramProjector(
            layout=self.layout, image=self.image, views=self.views[index], backend=self.backend,
            max_lors_per_call=self.max_lors_per_call, cache_max_lors=self.cache_max_lors,
        )

    def _plane_chunks(self) -> list[slice]:
        per_plane = self.out_shape[1] * self.out_shape[2]
        step = max(1, self.max_lors_per_call // per_plane)
        return [slice(p, min(p + step, self.out_shape[0])) for p in range(0, self.out_shape[0], step)]

    def _endpoints(self, planes: slice, dtype: torch.dtype, device: torch.device):
        if self.layout.num_lors // self.layout.num_views * len(self.views) <= self.cache_max_lors:
            key = (dtype, device)
            if key not in self._cache:
                self._cache[key] = self.layout.endpoints_mm(views=self.views, dtype=dtype, device=device)
            xstart, xend = self._cache[key]
            return xstart[planes], xend[planes]
        return self.layout.endpoints_mm(planes, self.views, dtype=dtype, device=device)

    def _geometry(self, like: torch.Tensor):
        origin = torch.tensor(self.image.origin_mm, dtype=like.dtype, device=like.device)
        voxel = torch.tensor(self.image.voxel_size_mm, dtype=like.dtype, device=like.device)
        return origin, voxel

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        origin, voxel = self._geometry(x)
        backend = resolve_backend(self.backend, x.device)
        out = torch.empty(self.out_shape, dtype=x.dtype, device=x.device)
        for planes in self._plane_chunks():
            xstart, xend = self._endpoints(planes, x.dtype, x.device)
            out[planes] = joseph_forward(x, xstart, xend, origin, voxel, backend=backend, check_finite=False)
        return out

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        origin, voxel = self._geometry(y)
        backend = resolve_backend(self.backend, y.device)
        image = torch.zeros(self.in_shape, dtype=y.dtype, device=y.device)
        for planes in self._plane_chunks():
            xstart, xend = self._endpoints(planes, y.dtype, y.device)
            image += joseph_back(
                y[planes].contiguous(), xstart, xend, self.in_shape, origin, voxel, backend=backend,
                check_finite=False,
            )
        return image


def span_groups(layout: SinogramLayout, span: int) -> tuple[torch.Tensor, int]:
    """Compressed-plane index of every plane of ``layout`` for axial compression with ``span``, and their count.

    Segment 0 holds ring differences |d| ≤ (span − 1)/2; segment ±s holds the next ``span`` differences on
    each side.  Within a segment, planes with equal r_a + r_b (same axial position) are summed.  Compressed
    planes are ordered by segment 0, +1, −1, +2, −2, … and then by axial position.  ``span = 1`` keeps
    every plane.
    """
    if isinstance(span, bool) or not isinstance(span, int) or span < 1 or span % 2 == 0:
        raise ValueError(f"span must be a positive odd integer, got {span!r}")
    pairs = layout.ring_pairs
    diff = pairs[:, 1] - pairs[:, 0]
    total = pairs[:, 0] + pairs[:, 1]
    if span == 1:
        return torch.arange(len(pairs)), len(pairs)
    half = (span - 1) // 2
    seg = torch.where(diff.abs() <= half, 0, (diff.abs() - half - 1) // span + 1)
    signed = torch.where(diff < 0, -seg, seg)
    order = torch.where(signed > 0, 2 * signed - 1, -2 * signed)  # 0, +1, -1, +2, -2, ...
    keys = order * (4 * layout.scanner.num_rings) + total
    unique, group = torch.unique(keys, sorted=True, return_inverse=True)
    return group, len(unique)


class SpanCompression(LinearOperator):
    """Axial (span) compression ``S``: sums ring-pair planes into compressed planes (see :func:`span_groups`).

    Maps (n_planes, n_views, n_radial) to (n_compressed, n_views, n_radial); the adjoint copies each compressed
    plane back to its ring pairs.  For the mMR (64 rings, max ring difference 60) span 11 gives 837 planes.
    """

    def __init__(self, *, layout: SinogramLayout, span: int, num_views: int | None = None) -> None:
        group, n_out = span_groups(layout, span)
        views = layout.num_views if num_views is None else num_views
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"num_views must be a positive integer, got {num_views!r}")
        super().__init__(
            in_shape=(layout.num_planes, views, layout.num_radial), out_shape=(n_out, views, layout.num_radial)
        )
        self.span = span
        self.group = group

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.out_shape, dtype=x.dtype, device=x.device)
        return out.index_add_(0, self.group.to(x.device), x)

    def _adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y[self.group.to(y.device)].contiguous()
