"""Cross-modal retrieval metrics with the five-caption rule.

A retrieval set has *items* (audio clips, images) and *captions* (texts, or items of another
modality), each caption belonging to exactly one item; an item may have several captions
(AudioCaps and Clotho: 5 per clip in the test sets; COCO and Flickr30k: 5 per image) or
exactly one (audio–image pairs).

* caption → item (``t2a``, ``t2i``): a caption query has one correct item;
* item → caption (``a2t``, ``i2t``): an item query is a hit at K when *any* of its captions
  ranks within the top K.

R@K is the fraction of queries that hit at K. mAP@K averages, over queries,
AP@K = (1 / min(R, K)) · Σ_{relevant at position p ≤ K} precision@p, with R the number of
relevant candidates; for a single relevant candidate this is the reciprocal rank (0 beyond K).

Ties are broken pessimistically: a wrong candidate with the same score as a correct one is
ranked before it (see :mod:`freebind.evaluate.metrics`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freebind.evaluate.metrics.checks import MetricInputError, as_index, as_matrix

#: One-letter modality codes used in metric names (``t2a_R@1``).
LETTERS = {"audio": "a", "image": "i", "text": "t", "video": "v", "depth": "d",
           "thermal": "h", "imu": "m"}

#: Upper bound on the number of matrix cells processed at once (memory, not speed).
_CHUNK_CELLS = 1 << 23


def relevant_positions(sim, relevant) -> np.ndarray:
    """0-based positions of each query's relevant candidates in its ranking.

    ``sim`` is ``[Q, G]`` (query × gallery scores); ``relevant`` is ``[Q, R]`` integer gallery
    indices, padded with -1 where a query has fewer than R relevant candidates. Returns a float
    array ``[Q, R]`` of positions (``inf`` for padding). Position of relevant candidate j =
    (#irrelevant with score ≥ s_j) + (#relevant with score > s_j) + (#relevant with score = s_j
    listed before j): the pessimistic tie policy.
    """
    s = as_matrix(sim, "similarity")
    rel = np.asarray(relevant)
    if rel.ndim == 1:
        rel = rel[:, None]
    q, g = s.shape
    if rel.ndim != 2 or rel.shape[0] != q:
        raise MetricInputError(f"relevant: expected shape [{q}, R], got {rel.shape}")
    if rel.size and not np.issubdtype(rel.dtype, np.integer):
        raise MetricInputError(f"relevant: expected integer indices, got {rel.dtype}")
    rel = rel.astype(np.int64)
    if rel.size and (rel.max() >= g or rel.min() < -1):
        raise MetricInputError(f"relevant: index out of range [0, {g})")
    valid = rel >= 0
    if q and not valid.any(axis=1).all():
        raise MetricInputError("relevant: every query needs at least one relevant candidate")
    srt = np.sort(np.where(valid, rel, -1 - np.arange(rel.shape[1])[None, :]), axis=1)
    if rel.shape[1] > 1 and (np.diff(srt, axis=1) == 0).any():
        raise MetricInputError("relevant: a query lists the same candidate twice")

    out = np.full(rel.shape, np.inf)
    step = max(1, _CHUNK_CELLS // max(g, 1))
    r_count = rel.shape[1]
    for lo in range(0, q, step):
        hi = min(q, lo + step)
        block = s[lo:hi]
        rows = np.arange(hi - lo)
        rb, vb = rel[lo:hi], valid[lo:hi]
        scores = block[rows[:, None], np.where(vb, rb, 0)]  # [q, R] scores of the relevant
        for j in range(r_count):
            sj = scores[:, j][:, None]
            ge_all = (block >= sj).sum(axis=1)
            ge_relevant = ((scores >= sj) & vb).sum(axis=1)
            gt_relevant = ((scores > sj) & vb).sum(axis=1)
            tied_before = ((scores[:, :j] == sj) & vb[:, :j]).sum(axis=1)
            pos = (ge_all - ge_relevant + gt_relevant + tied_before).astype(float)
            out[lo:hi, j] = np.where(vb[:, j], pos, np.inf)
    return out


def recall_at_k(positions: np.ndarray, k: int) -> float:
    """Fraction of queries with at least one relevant candidate within the top ``k``."""
    positions = np.asarray(positions, dtype=float)
    if positions.ndim == 1:
        positions = positions[:, None]
    if len(positions) == 0:
        raise MetricInputError("recall_at_k: no queries")
    return float((positions.min(axis=1) < k).mean())


def average_precision_at_k(positions: np.ndarray, k: int) -> float:
    """Mean over queries of AP@k = (1/min(R, k)) Σ_{relevant at position p < k} hits(p)/(p+1)."""
    positions = np.asarray(positions, dtype=float)
    if positions.ndim == 1:
        positions = positions[:, None]
    if len(positions) == 0:
        raise MetricInputError("average_precision_at_k: no queries")
    p = np.sort(positions, axis=1)
    n_rel = np.isfinite(p).sum(axis=1)
    hits = np.arange(1, p.shape[1] + 1)[None, :]
    precision = np.where(p < k, hits / (p + 1.0), 0.0)
    return float((precision.sum(axis=1) / np.minimum(n_rel, k)).mean())


def _item_captions(caption_item: np.ndarray, n_items: int) -> np.ndarray:
    """``[n_items, R]`` caption indices per item, padded with -1."""
    counts = np.bincount(caption_item, minlength=n_items)
    if n_items and counts.min() == 0:
        empty = int(np.argmin(counts))
        raise MetricInputError(f"item {empty} has no caption")
    width = int(counts.max()) if n_items else 0
    table = np.full((n_items, width), -1, dtype=np.int64)
    order = np.argsort(caption_item, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(order)) - starts[caption_item[order]]
    table[caption_item[order], slot] = order
    return table


def paired_retrieval_metrics(sim, caption_item: Sequence[int], *, caption: str = "text",
                             item: str = "audio", ks: Sequence[int] = (1, 5, 10),
                             map_k: int | None = 10) -> dict[str, float]:
    """Both retrieval directions from one ``[n_captions, n_items]`` similarity matrix.

    ``caption_item[c]`` is the index of caption c's item. Names carry the direction:
    ``{c}2{i}_R@K`` (caption queries) and ``{i}2{c}_R@K`` (item queries) with one-letter codes
    from :data:`LETTERS`, e.g. ``t2a_R@1`` and ``a2t_R@1``; plus ``…_mAP@{map_k}``.
    """
    s = as_matrix(sim, "similarity")
    n_cap, n_items = s.shape
    if n_cap == 0 or n_items == 0:
        raise MetricInputError(f"similarity: empty matrix {s.shape}")
    owner = as_index(caption_item, "caption_item", n_cap, n_items)
    c, i = LETTERS.get(caption, caption[:1]), LETTERS.get(item, item[:1])
    out: dict[str, float] = {}
    pos_c2i = relevant_positions(s, owner[:, None])
    pos_i2c = relevant_positions(s.T, _item_captions(owner, n_items))
    for name, pos in ((f"{c}2{i}", pos_c2i), (f"{i}2{c}", pos_i2c)):
        for k in ks:
            out[f"{name}_R@{k}"] = recall_at_k(pos, k)
        if map_k:
            out[f"{name}_mAP@{map_k}"] = average_precision_at_k(pos, map_k)
    return out
