"""Optional parallelproj backend (conda-forge only), imported lazily; same contract as :mod:`.joseph`.

parallelproj's ``joseph3d_fwd(xstart, xend, img, img_origin, voxsize)`` and
``joseph3d_back(xstart, xend, img_shape, img_origin, voxsize, img_fwd)`` use the conventions this bundle
adopted (end points in mm in array-axis order, origin = centre of voxel [0, 0, 0]), so the adapter only passes
tensors through.  It is exercised by a test that compares it with the default backend when parallelproj is
importable, and skipped otherwise.
"""

from __future__ import annotations

import torch

__all__ = ["parallelproj_back", "parallelproj_forward"]


def _parallelproj():
    try:
        import parallelproj
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='parallelproj' needs the optional parallelproj package (conda install -c conda-forge "
            "parallelproj); the default backend needs nothing beyond PyPI"
        ) from error
    return parallelproj


def parallelproj_forward(image, xstart, xend, origin, voxel) -> torch.Tensor:
    """Forward projection of (n0, n1, n2) along flat LORs (N, 3) with parallelproj -> (N,)."""
    return torch.as_tensor(_parallelproj().joseph3d_fwd(xstart, xend, image, origin, voxel))


def parallelproj_back(values, xstart, xend, image_shape, origin, voxel) -> torch.Tensor:
    """Back projection of flat ``values`` (N,) with parallelproj -> image of ``image_shape``."""
    return torch.as_tensor(_parallelproj().joseph3d_back(xstart, xend, tuple(image_shape), origin, voxel, values))
