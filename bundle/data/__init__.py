"""Phantoms and dataset builders.  Nothing is downloaded; nothing runs on import."""

from __future__ import annotations

from .ellipsoid_head import EllipsoidHead, ellipsoid_head_phantom

__all__ = ["EllipsoidHead", "ellipsoid_head_phantom"]
