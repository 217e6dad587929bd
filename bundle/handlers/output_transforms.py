"""``output_transform`` builders for MONAI's Stats / TensorBoard handlers.  Importing runs nothing."""

from __future__ import annotations

__all__ = ["scalar_terms"]


def scalar_terms(*keys: str):
    """``output_transform`` for Stats/TensorBoard handlers: ``{key: float}`` from an engine output that is a dict or
    a decollated list of dicts (one key: the float itself)."""

    def transform(output):
        first = output[0] if isinstance(output, list | tuple) else output
        values = {k: float(first[k]) for k in keys}
        return values[keys[0]] if len(keys) == 1 else values

    return transform
