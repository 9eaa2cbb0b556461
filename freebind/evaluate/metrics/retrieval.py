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
           "thermal": "h", "imu": "m", "point": "p"}

#: Memory one block of the streamed metrics may use when no budget is given (bytes): the
#: query and gallery row blocks, the similarity block and its comparison mask.
DEFAULT_BUDGET_BYTES = 256 << 20


def block_rows_for(dim: int, budget_bytes: int | None = None) -> int:
    """Rows per block (queries and gallery alike) so that one block's working set fits
    ``budget_bytes``: b×b float32 similarities + b×b comparison mask (5 bytes a cell) and
    the query and gallery blocks, raw and normalised (16·dim bytes a row of each)."""
    budget = DEFAULT_BUDGET_BYTES if budget_bytes is None else int(budget_bytes)
    if budget <= 0:
        raise MetricInputError(f"budget_bytes={budget_bytes}: must be positive")
    d = max(1, int(dim))
    b = (-16 * d + np.sqrt(256.0 * d * d + 20.0 * budget)) / 10.0
    return int(max(16, b))


def check_relevant(relevant, n_queries: int, n_gallery: int) -> np.ndarray:
    """``relevant`` as an int64 ``[Q, R]`` table (a 1-D array is one relevant per query),
    padded with -1; each query needs one relevant candidate and lists none twice."""
    rel = np.asarray(relevant)
    if rel.ndim == 1:
        rel = rel[:, None]
    q, g = n_queries, n_gallery
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
    return rel


def relevant_positions(sim, relevant, block_rows: int | None = None) -> np.ndarray:
    """0-based positions of each query's relevant candidates in its ranking.

    ``sim`` is ``[Q, G]`` (query × gallery scores); ``relevant`` is ``[Q, R]`` integer gallery
    indices, padded with -1 where a query has fewer than R relevant candidates. Returns a float
    array ``[Q, R]`` of positions (``inf`` for padding). Position of relevant candidate j =
    (#irrelevant with score ≥ s_j) + (#relevant with score > s_j) + (#relevant with score = s_j
    listed before j): the pessimistic tie policy. The matrix is read in blocks of
    ``block_rows`` × ``block_rows`` cells (see :func:`stream_positions`)."""
    s = as_matrix(sim, "similarity")
    rel = check_relevant(relevant, *s.shape)
    rows, _ = stream_positions(_MatrixBlocks(s), rel, block_rows=block_rows)
    return rows


# --- streaming: positions from similarity blocks, never the whole matrix ----------------

def _finite_rows(x: np.ndarray, name: str, start: int) -> np.ndarray:
    if x.size and not np.isfinite(x).all():
        bad = start + int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
        raise MetricInputError(f"{name}: row {bad} contains NaN or infinite values")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32: the suites' cosine."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


def _rows(x, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of an array, memory map, tensor or store view, as an array."""
    if hasattr(x, "detach"):
        x = x[start:stop].detach().cpu().numpy()
        return x
    return np.asarray(x[start:stop])


def _gather(x, idx: np.ndarray) -> np.ndarray:
    if hasattr(x, "detach"):
        import torch

        return x[torch.from_numpy(idx)].detach().cpu().numpy()
    if hasattr(x, "rows"):               # freebind.data.store.PoolView
        return x.rows(idx)
    return np.asarray(x[idx])


class _MatrixBlocks:
    """Blocks of a similarity matrix already in memory."""

    def __init__(self, sim: np.ndarray):
        self.sim = sim
        self.shape = sim.shape
        self.dim = 1
        self.dtype = sim.dtype

    def queries(self, a: int, b: int):
        return (a, b)

    def gallery(self, a: int, b: int):
        return (a, b)

    def block(self, q, g) -> np.ndarray:
        return np.array(self.sim[q[0]:q[1], g[0]:g[1]])    # a copy: it gets masked

    def pair_scores(self, pq: np.ndarray, pg: np.ndarray) -> np.ndarray:
        return self.sim[pq, pg]


class EmbeddingBlocks:
    """Cosine similarity blocks of ``queries`` [Q, d] × ``gallery`` [G, d] (arrays, memory
    maps, :class:`~freebind.data.store.PoolView`, tensors), rows read and normalised a block at
    a time: float32, as ``unit(queries) @ unit(gallery).T`` would give them."""

    def __init__(self, queries, gallery, names=("queries", "gallery")):
        qs, gs = tuple(queries.shape), tuple(gallery.shape)
        if len(qs) != 2 or len(gs) != 2:
            raise MetricInputError(f"{names[0]} {qs} and {names[1]} {gs}: expected 2-D "
                                   "embeddings")
        if qs[1] != gs[1]:
            raise MetricInputError(f"dimension mismatch: {names[0]} {qs[1]}, "
                                   f"{names[1]} {gs[1]}")
        self.q, self.g, self.names = queries, gallery, names
        self.shape = (qs[0], gs[0])
        self.dim = qs[1]
        self.dtype = np.dtype(np.float32)

    def queries(self, a: int, b: int) -> np.ndarray:
        return _unit(_finite_rows(_rows(self.q, a, b), self.names[0], a))

    def gallery(self, a: int, b: int) -> np.ndarray:
        return _unit(_finite_rows(_rows(self.g, a, b), self.names[1], a))

    def block(self, q: np.ndarray, g: np.ndarray) -> np.ndarray:
        return q @ g.T

    def pair_scores(self, pq: np.ndarray, pg: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Scores of the pairs (pq[i], pg[i]), pq ascending, by the same float32 product
        (a query chunk against the gallery rows its pairs name)."""
        out = np.empty(len(pq), dtype=np.float32)
        for lo in range(0, len(pq), chunk):
            hi = min(len(pq), lo + chunk)
            q0, q1 = int(pq[lo]), int(pq[hi - 1]) + 1
            uniq, inv = np.unique(pg[lo:hi], return_inverse=True)
            qb = self.queries(q0, q1)
            gb = _unit(_finite_rows(_gather(self.g, uniq), self.names[1], 0))
            out[lo:hi] = (qb @ gb.T)[pq[lo:hi] - q0, inv.reshape(-1)]
        return out


def _relevant_terms(ge_irrelevant: np.ndarray, scores: np.ndarray,
                    valid: np.ndarray) -> np.ndarray:
    """Positions = #irrelevant ≥ s_j + #relevant > s_j + #relevant = s_j listed before j."""
    out = np.full(scores.shape, np.inf)
    for j in range(scores.shape[1]):
        sj = scores[:, j][:, None]
        gt_relevant = ((scores > sj) & valid).sum(axis=1)
        tied_before = ((scores[:, :j] == sj) & valid[:, :j]).sum(axis=1)
        pos = (ge_irrelevant[:, j] + gt_relevant + tied_before).astype(float)
        out[:, j] = np.where(valid[:, j], pos, np.inf)
    return out


def stream_positions(blocks, relevant: np.ndarray, relevant_cols: np.ndarray | None = None,
                     block_rows: int | None = None, budget_bytes: int | None = None,
                     progress: bool = False, desc: str = "retrieval"
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (:func:`relevant_positions`) of each query's relevant candidates, and with
    ``relevant_cols`` ([G, Rc]: each gallery item's relevant queries, the same pairs seen
    from the other side) of each gallery item's relevant queries in *its* ranking of the
    queries — both from one pass over similarity blocks, never the whole ``[Q, G]`` matrix.

    ``blocks`` gives the scores (:class:`EmbeddingBlocks`, or a matrix). The relevant pairs'
    scores are computed first; then every block of ``block_rows`` queries × ``block_rows``
    gallery items is scored once, its relevant cells set aside, and per row (per column)
    the irrelevant cells scoring at least each relevant score are counted. Memory: one block
    (``block_rows`` from ``budget_bytes``, :func:`block_rows_for`) plus per-query and per-item
    counts."""
    nq, ng = blocks.shape
    b = int(block_rows) if block_rows else block_rows_for(blocks.dim, budget_bytes)
    if b < 1:
        raise MetricInputError(f"block_rows={block_rows}: must be at least 1")
    valid = relevant >= 0
    pq, slot = np.nonzero(valid)                       # pairs, ascending query
    pg = relevant[pq, slot]
    scores = np.full(relevant.shape, np.inf, dtype=np.float64)
    if len(pq):
        scores[pq, slot] = blocks.pair_scores(pq, pg)
    ge_rows = np.zeros(relevant.shape, dtype=np.int64)
    cols = None
    if relevant_cols is not None:
        cvalid = relevant_cols >= 0
        cg, cslot = np.nonzero(cvalid)
        cq = relevant_cols[cg, cslot]
        key = pq * ng + pg
        order = np.argsort(key, kind="stable")
        at = np.searchsorted(key[order], cq * ng + cg)
        if len(cq) != len(pq) or (len(cq) and not np.array_equal(
                key[order][np.minimum(at, len(key) - 1)], cq * ng + cg)):
            raise MetricInputError("relevant_cols: not the same pairs as relevant")
        cols = np.full(relevant_cols.shape, np.inf, dtype=np.float64)
        cols[cg, cslot] = scores[pq[order[at]], slot[order[at]]]
        ge_cols = np.zeros(relevant_cols.shape, dtype=np.int64)
    thr = scores.astype(blocks.dtype)          # exact: the scores are of that dtype
    if cols is not None:
        cthr = cols.astype(blocks.dtype)
    from freebind.util.progress import bar

    with bar(total=nq, desc=desc, unit="q", disable=not progress, leave=False) as pbar:
        for qa in range(0, nq, b):
            qb = min(nq, qa + b)
            qrows = blocks.queries(qa, qb)
            p0, p1 = np.searchsorted(pq, [qa, qb])
            bq, bg = pq[p0:p1], pg[p0:p1]
            for ga in range(0, ng, b):
                gb = min(ng, ga + b)
                s = blocks.block(qrows, blocks.gallery(ga, gb))
                inside = (bg >= ga) & (bg < gb)
                s[bq[inside] - qa, bg[inside] - ga] = -np.inf   # relevant cells apart
                for j in range(relevant.shape[1]):
                    ge_rows[qa:qb, j] += np.count_nonzero(s >= thr[qa:qb, j][:, None],
                                                          axis=1)
                if cols is not None:
                    for j in range(cols.shape[1]):
                        ge_cols[ga:gb, j] += np.count_nonzero(s >= cthr[ga:gb, j][None, :],
                                                              axis=0)
                del s
            pbar.update(qb - qa)
    rows_pos = _relevant_terms(ge_rows, scores, valid)
    if cols is None:
        return rows_pos, None
    return rows_pos, _relevant_terms(ge_cols, cols, cvalid)


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


def _named(name: str, pos: np.ndarray, ks: Sequence[int], map_k: int | None) -> dict:
    out = {f"{name}_R@{k}": recall_at_k(pos, k) for k in ks}
    if map_k:
        out[f"{name}_mAP@{map_k}"] = average_precision_at_k(pos, map_k)
    return out


def _paired(blocks, caption_item, caption: str, item: str, ks, map_k, block_rows=None,
            budget_bytes=None, progress: bool = False) -> dict[str, float]:
    n_cap, n_items = blocks.shape
    if n_cap == 0 or n_items == 0:
        raise MetricInputError(f"similarity: empty matrix {(n_cap, n_items)}")
    owner = as_index(caption_item, "caption_item", n_cap, n_items)
    c, i = LETTERS.get(caption, caption[:1]), LETTERS.get(item, item[:1])
    pos_c2i, pos_i2c = stream_positions(blocks, owner[:, None], _item_captions(owner, n_items),
                                        block_rows=block_rows, budget_bytes=budget_bytes,
                                        progress=progress, desc=f"{c}2{i} + {i}2{c}")
    return {**_named(f"{c}2{i}", pos_c2i, ks, map_k), **_named(f"{i}2{c}", pos_i2c, ks, map_k)}


def paired_retrieval_metrics(sim, caption_item: Sequence[int], *, caption: str = "text",
                             item: str = "audio", ks: Sequence[int] = (1, 5, 10),
                             map_k: int | None = 10,
                             block_rows: int | None = None) -> dict[str, float]:
    """Both retrieval directions from one ``[n_captions, n_items]`` similarity matrix.

    ``caption_item[c]`` is the index of caption c's item. Names carry the direction:
    ``{c}2{i}_R@K`` (caption queries) and ``{i}2{c}_R@K`` (item queries) with one-letter codes
    from :data:`LETTERS`, e.g. ``t2a_R@1`` and ``a2t_R@1``; plus ``…_mAP@{map_k}``.
    """
    s = as_matrix(sim, "similarity")
    return _paired(_MatrixBlocks(s), caption_item, caption, item, ks, map_k, block_rows)


def paired_retrieval_from_embeddings(captions, items, caption_item: Sequence[int], *,
                                     caption: str = "text", item: str = "audio",
                                     ks: Sequence[int] = (1, 5, 10), map_k: int | None = 10,
                                     block_rows: int | None = None,
                                     budget_bytes: int | None = None,
                                     progress: bool = False) -> dict[str, float]:
    """:func:`paired_retrieval_metrics` of the cosine similarities of ``captions`` [C, d]
    and ``items`` [I, d] — arrays, ``np.memmap``, :class:`~freebind.data.store.PoolView` or
    tensors — streamed: rows are read ``block_rows`` at a time (default from
    ``budget_bytes``, :func:`block_rows_for`) and no ``[C, I]`` matrix is ever held.
    The values equal those of the whole matrix ``unit(captions) @ unit(items).T``."""
    blocks = EmbeddingBlocks(captions, items, (f"{caption} embeddings", f"{item} embeddings"))
    return _paired(blocks, caption_item, caption, item, ks, map_k, block_rows, budget_bytes,
                   progress)


def retrieval_from_embeddings(queries, gallery, relevant, *, ks: Sequence[int] = (1, 5, 10),
                              map_k: int | None = 10, block_rows: int | None = None,
                              budget_bytes: int | None = None, progress: bool = False,
                              name: str | None = None) -> dict[str, float]:
    """R@K and mAP@``map_k`` of ``queries`` [Q, d] against ``gallery`` [G, d] by cosine
    similarity, streamed (see :func:`paired_retrieval_from_embeddings`). ``relevant`` is
    ``[Q]`` (one relevant gallery row per query) or ``[Q, R]`` padded with -1; a query hits
    at K when any of its relevant rows ranks within K (pessimistic ties). Keys are ``R@K``
    and ``mAP@{map_k}``, prefixed ``{name}_`` when ``name`` is given."""
    blocks = EmbeddingBlocks(queries, gallery)
    rel = check_relevant(relevant, *blocks.shape)
    if blocks.shape[0] == 0:
        raise MetricInputError("queries: no rows")
    pos, _ = stream_positions(blocks, rel, block_rows=block_rows, budget_bytes=budget_bytes,
                              progress=progress)
    out = _named("q", pos, ks, map_k)
    prefix = f"{name}_" if name else ""
    return {prefix + k[2:]: v for k, v in out.items()}
