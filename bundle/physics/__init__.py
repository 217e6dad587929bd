"""PET physics shared by simulation, baselines and the three diffusion methods.

Everything between activity and counts: Joseph projector (compiled CPU/CUDA kernels + plain-torch reference),
linear operators with exact adjoints, scanner/sinogram geometry and presets, the forward model
y = n ⊙ a ⊙ A(G x) + s, Poisson noise and dose reduction, the relative difference prior and MLEM/OSEM/MAP-EM.
Importing this package compiles nothing and probes no GPU.
"""

from __future__ import annotations

from .build import forward_model_from_arrays
from .forward_model import (
    PETForwardModel,
    PoissonDataModel,
    attenuation_factors_from_mu_map,
    select_views,
    view_subsets,
)
from .geometry import PRESETS, ImageGeometry, RegularPolygonScanner, ScannerPreset, SinogramLayout, preset
from .joseph import ProjectorBackend, joseph_back, joseph_forward
from .noise import binomial_thinning, poisson_at_total_counts, poisson_noise
from .operators import (
    AdjointOperator,
    CompositeOperator,
    ElementwiseMultiplication,
    IdentityOperator,
    LinearOperator,
    MatrixOperator,
)
from .priors import Neighbourhood, RelativeDifferencePrior
from .recon import map_em, mlem, osem
from .resolution import GaussianResolution
from .sinogram import SinogramProjector, SpanCompression, span_groups

__all__ = [
    "PRESETS",
    "AdjointOperator",
    "CompositeOperator",
    "ElementwiseMultiplication",
    "GaussianResolution",
    "IdentityOperator",
    "ImageGeometry",
    "LinearOperator",
    "MatrixOperator",
    "Neighbourhood",
    "PETForwardModel",
    "PoissonDataModel",
    "ProjectorBackend",
    "RegularPolygonScanner",
    "RelativeDifferencePrior",
    "ScannerPreset",
    "SinogramLayout",
    "SinogramProjector",
    "SpanCompression",
    "attenuation_factors_from_mu_map",
    "binomial_thinning",
    "forward_model_from_arrays",
    "joseph_back",
    "joseph_forward",
    "map_em",
    "mlem",
    "osem",
    "poisson_at_total_counts",
    "poisson_noise",
    "preset",
    "select_views",
    "span_groups",
    "view_subsets",
]
