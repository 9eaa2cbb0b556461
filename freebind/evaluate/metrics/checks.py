"""Input checks shared by the metric functions."""

from __future__ import annotations

import numpy as np

from freebind.util.errors import FreebindError


class MetricInputError(FreebindError, ValueError):
    """A metric was given arrays of the wrong shape, type or content."""


def as_matrix(x, name: str) -> np.ndarray:
    """A finite 2-D float array (torch tensors are accepted)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise MetricInputError(f"{name}: expected a 2-D matrix, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    if a.size and not np.isfinite(a).all():
        raise MetricInputError(f"{name}: contains NaN or infinite values")
    return a


def as_index(x, name: str, length: int, upper: int) -> np.ndarray:
    """A 1-D integer array of ``length`` indices, each in ``[0, upper)``."""
    a = np.asarray(x)
    if a.ndim != 1 or len(a) != length:
        raise MetricInputError(f"{name}: expected {length} indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise MetricInputError(f"{name}: expected integer indices, got {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= upper):
        raise MetricInputError(f"{name}: index out of range [0, {upper})")
    return a
