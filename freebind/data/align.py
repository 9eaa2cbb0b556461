"""Encode many items, some of which fail, and keep the rows aligned across base spaces.

A fused space reads one item's embedding from several base spaces; an item that one of them
cannot decode (a truncated file, a mislabelled one) must be dropped from all of them, or the
rows of the others no longer describe the same items. The steps, shared by
:meth:`freebind.fusion.fused.FusedSpace.encode`, :func:`freebind.run.partitions.embed`, the
builder and the evaluation runner:

* :func:`encode_skipping` — one space, one modality: ``(rows, kept, failures)``, through
  an embedding store when one is given (cached, resumable), else directly, a failing
  batch retried item by item;
* :func:`align` — rows of several spaces for the same item list, each with its own kept
  indices: the items every space kept, and each space's rows for exactly those;
* :func:`encode_aligned` — both, for one modality read by several spaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from freebind.data.items import as_sequence
from freebind.util.errors import MediaError
from freebind.util.text import reason
from freebind.util.arrays import as_float32


def encode_skipping(space, modality: str, items: Sequence[Any], *, store=None,
                    batch_size: int = 64, progress: bool = False, lazy: bool = False):
    """``(rows [len(kept), dim] float32, kept indices int64, failures)`` of ``items``.

    With ``store`` (an :class:`freebind.data.store.EmbeddingStore`) the rows come from and go to
    its cache (``lazy=True``: as a memory-mapped :class:`~freebind.data.store.PoolView`);
    without one ``space.encode`` runs batch by batch and a batch that raises
    :class:`MediaError` is retried item by item, so only the undecodable items are lost.
    ``failures`` are :class:`freebind.data.store.EmbedFailure` records in item order."""
    from freebind.data.store import EmbedFailure

    items = as_sequence(items)   # compact item arrays stay arrays
    if store is not None:
        return store.embed(space, modality, items, batch_size=batch_size, progress=progress,
                           on_error="skip", lazy=lazy)
    rows: list[np.ndarray] = []
    kept: list[int] = []
    failures: list = []
    for start in range(0, len(items), max(1, int(batch_size))):
        batch = list(items[start:start + batch_size])
        try:
            got = as_float32(space.encode(modality, batch, batch_size=len(batch)))
            rows.extend(got)
            kept.extend(range(start, start + len(batch)))
            continue
        except MediaError:
            pass
        for j, item in enumerate(batch):
            try:
                rows.append(as_float32(space.encode(modality, [item], batch_size=1))[0])
                kept.append(start + j)
            except MediaError as exc:
                text = item if isinstance(item, str) else str(item)
                failures.append(EmbedFailure(start + j, text, reason(exc, text)))
    dim = int(space.dim)
    arr = np.stack(rows).astype(np.float32, copy=False) if rows else \
        np.zeros((0, dim), dtype=np.float32)
    return arr, np.asarray(kept, dtype=np.int64), failures


def align(results: Mapping[Hashable, tuple[np.ndarray, np.ndarray]], n: int | None = None
          ) -> tuple[dict[Hashable, np.ndarray], np.ndarray]:
    """``results[key] = (rows, kept)`` for the same item list → ``(aligned, kept)``: the
    indices every key kept (sorted) and each key's rows for exactly those. With no results,
    every one of ``n`` items counts as kept."""
    kept = None
    for _, idx in results.values():
        kept = np.asarray(idx, dtype=np.int64) if kept is None else np.intersect1d(kept, idx)
    if kept is None:
        kept = np.arange(int(n or 0), dtype=np.int64)
    out = {}
    for key, (arr, idx) in results.items():
        if len(idx) == len(kept):
            out[key] = arr
        else:  # a memory-mapped pool (freebind.data.store.PoolView) stays memory-mapped
            rows = np.searchsorted(idx, kept)
            out[key] = arr.subset(rows) if hasattr(arr, "subset") else arr[rows]
    return out, kept


@dataclass
class Aligned:
    """The outcome of :func:`encode_aligned`: ``rows[key]`` for the ``kept`` items, the
    first failure of each dropped item (item order), and every failure by key."""

    rows: dict
    kept: np.ndarray
    failures: list = field(default_factory=list)
    all_failures: list = field(default_factory=list)  # (key, EmbedFailure), request order


def encode_aligned(requests: Sequence[tuple[Hashable, Any, str]], items: Sequence[Any], *,
                   store=None, batch_size: int = 64, progress: bool = False,
                   lazy: bool = False) -> Aligned:
    """Encode ``items`` with every ``(key, space, modality)`` of ``requests``; keep only the
    items all of them could encode, with aligned rows (memory-mapped store views with
    ``lazy=True`` and a store)."""
    items = as_sequence(items)
    raw, firsts, every = {}, {}, []
    for key, space, modality in requests:
        arr, idx, fails = encode_skipping(space, modality, items, store=store,
                                          batch_size=batch_size, progress=progress,
                                          lazy=lazy)
        raw[key] = (arr, idx)
        for f in fails:
            every.append((key, f))
            firsts.setdefault(f.index, f)
    rows, kept = align(raw, len(items))
    return Aligned(rows, kept, [firsts[i] for i in sorted(firsts)], every)
