"""Pseudo tuples from unpaired pools, after Ex-MCR and FreeBind (docs/architecture.md,
"Training a bond").

Each query modality q takes its turn: every pool item of q becomes a tuple, and every other
modality m of the tuple is filled by the item's top-k neighbours in m's pool, retrieved
through the space that aligns (q, m) best — the expert when it has both modalities, else the
base, else a chain through a shared modality s (q → s in one space, then the aggregated s
embedding → m in another) — and aggregated with softmax(similarity / τ) weights.

A tuple is stored as indices and weights, not as vectors: ``fills[(q, m)]`` holds ``index
[N_q, k]`` into m's pool and ``weight [N_q, k]``. :meth:`PseudoTuples.gather` turns rows of
tuples into embeddings in any space whose pool embeddings are given, so the same tuples serve
the source and the target space of a bond, and a sequential bond can reuse them on the
embeddings of the space built so far.

Similarities are computed in chunks of queries: peak memory is chunk × pool, never
pool × pool. Everything is deterministic; the seed only picks query subsets
(``max_queries``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from freebind.algebra.compile import MODE_LETTERS
from freebind.errors import FreebindError

#: Defaults; bonds can override them (``topk=``, ``tau=``).
DEFAULT_TOPK = 8
DEFAULT_TAU = 0.05
#: Bytes of similarity scores one chunk may hold.
DEFAULT_CHUNK_BYTES = 128 << 20



class PseudoTupleError(FreebindError):
    """Pseudo tuples cannot be built (a modality no space can reach, an empty pool, …)."""


@dataclass(frozen=True)
class Route:
    """How a modality m is filled for queries of q: one or two retrieval hops.

    ``hops`` is a tuple of (space key, from modality, to modality)."""

    query: str
    target: str
    hops: tuple[tuple[str, str, str], ...]

    def describe(self) -> str:
        return " → ".join([self.query] + [f"{to} (via {space})" for space, _, to in self.hops])


@dataclass
class Fill:
    index: np.ndarray   # [N_q, k] int64, rows of the target modality's pool
    weight: np.ndarray  # [N_q, k] float32, softmax weights (rows sum to 1)
    route: Route


@dataclass
class PseudoTuples:
    """Tuples for each query modality: the query item's own row plus filled modalities."""

    modalities: tuple[str, ...]
    queries: dict[str, np.ndarray]                       # q -> pool rows used as queries
    fills: dict[tuple[str, str], Fill] = field(default_factory=dict)
    topk: int = DEFAULT_TOPK
    tau: float = DEFAULT_TAU

    def size(self, q: str) -> int:
        return int(self.queries[q].shape[0])

    def __len__(self) -> int:
        return sum(self.size(q) for q in self.modalities)

    def routes(self) -> dict[str, str]:
        return {f"{q}->{m}": f.route.describe() for (q, m), f in self.fills.items()}

    def gather(self, space_embeddings: Mapping[str, object], q: str, rows=None,
               modalities: Sequence[str] | None = None):
        """Embeddings of tuples ``rows`` (indices into this query modality's tuples; all when
        None) in one space: ``{modality: Tensor [B, d]}`` for every modality the space has
        pool embeddings of (or those in ``modalities``). Filled entries are the normalised
        softmax-weighted sums of their neighbours."""
        import torch

        qrows = self.queries[q] if rows is None else self.queries[q][np.asarray(rows)]
        out = {}
        for m in (modalities if modalities is not None else self.modalities):
            if m not in space_embeddings:
                continue
            emb = _tensor(space_embeddings[m])
            if m == q:
                out[m] = emb[torch.from_numpy(np.ascontiguousarray(qrows))]
                continue
            fill = self.fills[(q, m)]
            r = slice(None) if rows is None else np.asarray(rows)
            idx = torch.from_numpy(np.ascontiguousarray(fill.index[r]))
            w = torch.from_numpy(np.ascontiguousarray(fill.weight[r]))
            out[m] = _aggregate(emb, idx, w)
        return out


def _tensor(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype != torch.float32 else x
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if not arr.flags.writeable:  # read-only memmaps: torch needs a writeable view
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.from_numpy(arr)
    return torch.from_numpy(np.ascontiguousarray(arr))


def _aggregate(emb, idx, w):
    """n(Σ_j w_j · emb[idx_j]) for each row; emb [N, d], idx/w [B, k]."""
    import torch
    from torch.nn import functional as F

    picked = emb[idx.reshape(-1)].reshape(idx.shape[0], idx.shape[1], emb.shape[1])
    return F.normalize(torch.einsum("bk,bkd->bd", w, picked), dim=-1)


def choose_route(q: str, m: str, coverage: Mapping[str, Sequence[str]],
                 preference: Sequence[str], modalities: Sequence[str]) -> Route:
    """The space (or two-hop chain) that aligns (q, m) best.

    ``coverage`` maps space keys to their modalities; ``preference`` orders the spaces (the
    expert first, then the base). A pair one space covers uses the first such space; else a
    chain q → s → m through a shared modality s, preferring the expert on either hop."""

    def direct(a, b):
        for key in preference:
            mods = coverage[key]
            if a in mods and b in mods:
                return key
        return None

    key = direct(q, m)
    if key is not None:
        return Route(q, m, ((key, q, m),))
    for s in modalities:
        if s in (q, m):
            continue
        first, second = direct(q, s), direct(s, m)
        if first is not None and second is not None:
            return Route(q, m, ((first, q, s), (second, s, m)))
    raise PseudoTupleError(f"no space aligns {q} with {m}, directly or through a shared "
                           f"modality ({', '.join(f'{k}: {list(v)}' for k, v in coverage.items())})")


def chunk_rows(pool_size: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Queries per chunk so that one chunk's similarity block fits in ``chunk_bytes``."""
    return int(max(16, min(8192, chunk_bytes // max(1, 4 * pool_size))))


def topk_retrieve(queries, pool, k: int, tau: float, chunk: int | None = None,
                  progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``pool`` for each query (cosine on unit rows) and their softmax(sim/τ)
    weights, computed in chunks of queries. Returns (index int64 [Nq, k], weight f32)."""
    import torch

    queries, pool = _tensor(queries), _tensor(pool)
    n, npool = queries.shape[0], pool.shape[0]
    if npool == 0:
        raise PseudoTupleError("cannot retrieve from an empty pool")
    k = min(k, npool)
    chunk = chunk or chunk_rows(npool)
    index = np.empty((n, k), dtype=np.int64)
    weight = np.empty((n, k), dtype=np.float32)
    pool_t = pool.t()
    with torch.no_grad():
        for start in range(0, n, chunk):
            sims = queries[start:start + chunk] @ pool_t
            top, idx = torch.topk(sims, k, dim=1, largest=True, sorted=True)
            del sims
            index[start:start + idx.shape[0]] = idx.numpy()
            weight[start:start + idx.shape[0]] = torch.softmax(top / tau, dim=1).numpy()
            if progress is not None:
                progress(idx.shape[0])
    return index, weight


def build(pools: Mapping[str, Mapping[str, object]], expert: str, base: str,
          modalities: Sequence[str] | None = None, topk: int = DEFAULT_TOPK,
          tau: float = DEFAULT_TAU, seed: int = 0, max_queries: int | None = None,
          chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = False,
          desc: str = "pseudo tuples") -> PseudoTuples:
    """Pseudo tuples for one bond.

    ``pools[key][modality]`` are unit-row pool embeddings ``[N_modality, dim]`` (numpy or
    torch) for the expert and the base (the space built so far); every space's pool of a
    modality holds the same items in the same order. ``modalities`` defaults to every
    modality some space has a pool for."""
    import torch

    if topk < 1:
        raise PseudoTupleError(f"topk must be at least 1 (got {topk})")
    if not tau > 0:
        raise PseudoTupleError(f"tau must be positive (got {tau})")
    coverage = {key: tuple(pools[key]) for key in (expert, base)}
    if modalities is None:
        modalities = [m for m in ("audio", "image", "text")
                      if any(m in c for c in coverage.values())]
    modalities = tuple(modalities)
    sizes = {}
    for m in modalities:
        ns = {key: _len(pools[key][m]) for key in coverage if m in pools[key]}
        if not ns:
            raise PseudoTupleError(f"no pool embeddings of {m} in {expert} or {base}")
        if len(set(ns.values())) != 1:
            raise PseudoTupleError(f"{m} pools differ in size across spaces: {ns}")
        sizes[m] = next(iter(ns.values()))
        if sizes[m] == 0:
            raise PseudoTupleError(f"the {m} pool is empty")

    rng = np.random.default_rng(seed)
    queries = {}
    for q in modalities:
        if max_queries is not None and sizes[q] > max_queries:
            queries[q] = np.sort(rng.choice(sizes[q], size=max_queries, replace=False))
        else:
            queries[q] = np.arange(sizes[q])
    preference = (expert, base) if expert != base else (expert,)
    routes = {(q, m): choose_route(q, m, coverage, preference, modalities)
              for q in modalities for m in modalities if m != q}

    bar = None
    if progress:
        from freebind.progress import bar as tqdm

        total = sum(len(queries[q]) * len(r.hops) for (q, _), r in routes.items())
        bar = tqdm(total=total, unit="query", desc=desc, leave=False)
    tick = bar.update if bar is not None else None
    result = PseudoTuples(modalities, queries, topk=topk, tau=tau)
    hop_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    try:
        for (q, m), route in routes.items():
            space, _, s = route.hops[0]
            key1 = (space, q, s)
            if key1 not in hop_cache:
                qemb = _tensor(pools[space][q])[torch.from_numpy(queries[q])]
                hop_cache[key1] = topk_retrieve(qemb, pools[space][s], topk, tau,
                                                chunk=chunk_rows(sizes[s], chunk_bytes),
                                                progress=tick)
            idx, w = hop_cache[key1]
            if len(route.hops) == 2:
                space2, _, _ = route.hops[1]
                idx, w = _second_hop(pools[space2][s], pools[space2][m], idx, w, topk, tau,
                                     chunk_rows(sizes[m], chunk_bytes), tick)
            result.fills[(q, m)] = Fill(idx, w, route)
    finally:
        if bar is not None:
            bar.close()
    return result


def _second_hop(mid_pool, target_pool, idx, w, k, tau, chunk, tick):
    """Chain: aggregate the first hop's neighbours in the second space, retrieve from there."""
    import torch

    mid = _tensor(mid_pool)
    n = idx.shape[0]
    k2 = min(k, _len(target_pool))
    index = np.empty((n, k2), dtype=np.int64)
    weight = np.empty((n, k2), dtype=np.float32)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        qv = _aggregate(mid, torch.from_numpy(idx[sl]), torch.from_numpy(w[sl]))
        i2, w2 = topk_retrieve(qv, target_pool, k, tau, chunk=chunk)
        index[sl], weight[sl] = i2, w2
        if tick is not None:
            tick(i2.shape[0])
    return index, weight


def _len(x) -> int:
    return int(x.shape[0])


def mode_modalities(mode: str, modalities: Sequence[str]) -> tuple[str, ...]:
    """Query modalities a data mode draws tuples from."""
    if mode == "mix":
        return tuple(modalities)
    by_letter = {MODE_LETTERS[m]: m for m in modalities}
    try:
        return tuple(by_letter[c] for c in mode)
    except KeyError:
        raise PseudoTupleError(f"data mode {mode!r} uses a modality without a pool "
                               f"(have {', '.join(modalities)})") from None
