"""The output guard shared by every space: an embedding with a NaN or an infinity is never
returned (and so never written to a cache or an output file).

:func:`check_finite` runs on what an encoder produced for one ``encode`` call and raises
:class:`NonFiniteEmbedding` naming the space, the modality and the first offending item.
The error is a :class:`~freebind.util.errors.MediaError`, so the embedding store and
``freebind embed`` treat it like an undecodable file: under their skip policy the batch is
retried item by item, the offending item is reported (path or text and reason) and skipped;
under the strict policy the run stops with that one line. See docs/real-spaces.md.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from freebind.util.errors import MediaError

_LABEL_CHARS = 80


class NonFiniteEmbedding(MediaError):
    """An encoder produced a NaN or an infinite value for an item."""


def item_label(item: Any) -> str:
    """A one-line name for an item: its path, or its text (whitespace folded, shortened)."""
    if isinstance(item, str):
        text = item
    elif isinstance(item, os.PathLike):
        text = os.fspath(item)
    elif isinstance(item, bytes):
        text = item.decode("utf-8", "replace")
    else:
        text = repr(item)
    text = " ".join(text.split())
    return text if len(text) <= _LABEL_CHARS else text[:_LABEL_CHARS - 1] + "…"


def check_finite(out, space: str, modality: str, items: Sequence[Any]):
    """Return ``out`` (a ``[len(items), dim]`` tensor or array) when every value is finite;
    otherwise raise :class:`NonFiniteEmbedding` for the first row that is not."""
    import numpy as np

    if hasattr(out, "detach"):
        import torch

        finite = torch.isfinite(out.detach())
        if bool(finite.all()):
            return out
        bad_rows = (~finite).cpu().numpy()
    else:
        finite = np.isfinite(np.asarray(out))
        if finite.all():
            return out
        bad_rows = ~finite
    if bad_rows.ndim > 1:
        bad_rows = bad_rows.reshape(bad_rows.shape[0], -1).any(axis=1)
    first = int(np.flatnonzero(bad_rows)[0])
    count = int(bad_rows.sum())
    label = item_label(items[first]) if first < len(items) else f"row {first}"
    more = f" (and {count - 1} more)" if count > 1 else ""
    raise NonFiniteEmbedding(f"{label}: space {space} produced a non-finite (NaN or infinite) "
                             f"{modality} embedding for item {first}{more}; the batch is "
                             "refused")
