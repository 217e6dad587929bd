"""Diffusion-model PET reconstruction and enhancement as a MONAI bundle (LegoPET, PET-DDS-δ, uPETe)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
