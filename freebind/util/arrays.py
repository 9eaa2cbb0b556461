"""Arrays from whatever an encoder returns: a tensor on any device, or an array-like, as a
float32 NumPy array."""

from __future__ import annotations

import numpy as np


def as_float32(x) -> np.ndarray:
    """``x`` (a torch tensor, possibly on a GPU, or an array-like) as float32 NumPy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
