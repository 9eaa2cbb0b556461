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

On a device, or for pools larger than memory, retrieval runs *blocked*
(:func:`topk_retrieve` with ``device=``, ``sim=`` or ``budget_bytes=``, or a
:class:`~freebind.data.store.PoolView` pool): queries go in super-chunks, the pool in blocks
(resident on the device when it fits the budget, else streamed block by block from host
memory or the memory-mapped store), and a running top-k per query is merged block by
block. ``sim="bf16"|"fp16"|"tf32"`` computes the similarities in reduced precision, keeps a
wider candidate list (``candidates``, default ``max(2k, k + 16)``) and re-scores it exactly
in float32, so the neighbours and weights are the float32 ones except where float32 scores
are tied to within the reduced precision's rounding error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from freebind.algebra.compile import MODE_LETTERS
# the defaults (``topk=``, ``tau=``; bonds override them) are set once, with the build's
from freebind.algebra.keywords import DEFAULT_TAU, DEFAULT_TOPK  # noqa: F401
from freebind.util.errors import FreebindError
from freebind.util.progress import bar

#: Bytes of similarity scores one chunk may hold.
DEFAULT_CHUNK_BYTES = 128 << 20
#: Similarity precisions (``sim=``) and the dtype the matmul runs in.
SIM_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
#: Memory the blocked path may use on the CPU when no budget is given (bytes).
DEFAULT_CPU_BUDGET = 1 << 30
#: On the CPU a pool is held whole up to this size, else read in blocks of this size: the
#: pool is read from the page cache either way, and a bigger block only grows the process
#: with the pool (a device keeps a pool resident up to half its budget: no copies per pass).
CPU_BLOCK_BYTES = 64 << 20
#: Host blocks up to this size go to a CUDA device through pinned memory.
PIN_BYTES = 1 << 30
#: Share of a CUDA device's free memory the blocked path may use when no budget is given.
DEVICE_MEMORY_SHARE = 0.8



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
            emb = space_embeddings[m]
            if not _is_view(emb):
                emb = _tensor(emb)
            if m == q:
                out[m] = _take(emb, torch.from_numpy(np.ascontiguousarray(qrows)))
                continue
            fill = self.fills[(q, m)]
            r = slice(None) if rows is None else np.asarray(rows)
            idx = torch.from_numpy(np.ascontiguousarray(fill.index[r]))
            w = torch.from_numpy(np.ascontiguousarray(fill.weight[r]))
            out[m] = _aggregate(emb, idx, w)
        return out


def _is_view(x) -> bool:
    from freebind.data.store import PoolView

    return isinstance(x, PoolView)


def _take(x, idx):
    """float32 rows ``idx`` (a LongTensor or int array) of a pool: tensor, array or view."""
    import torch

    if _is_view(x):
        return torch.from_numpy(x.rows(np.asarray(idx)))
    return _tensor(x)[idx]


def _tensor(x):
    import torch

    if _is_view(x):
        return torch.from_numpy(np.asarray(x))
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

    flat = idx.reshape(-1)
    picked = (_take(emb, flat) if _is_view(emb) else emb[flat]).reshape(
        idx.shape[0], idx.shape[1], emb.shape[1])
    if w.device != picked.device:
        w = w.to(picked.device)
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
                  progress=None, *, device=None, sim: str = "fp32",
                  budget_bytes: int | None = None,
                  candidates: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``pool`` for each query (cosine on unit rows) and their softmax(sim/τ)
    weights, computed in chunks of queries. Returns (index int64 [Nq, k], weight f32).

    ``device``, ``sim``, ``budget_bytes`` (and a :class:`~freebind.data.store.PoolView` as
    queries or pool) select the blocked path (see the module); on the CPU in float32 with
    arrays in memory the plain chunked path runs."""
    import torch

    if sim not in SIM_PRECISIONS:
        raise PseudoTupleError(f"sim {sim!r}: expected one of {', '.join(SIM_PRECISIONS)}")
    if (device is not None and torch.device(device).type != "cpu") or sim != "fp32" \
            or budget_bytes is not None or _is_view(queries) or _is_view(pool):
        return _retrieve_blocked(queries, pool, k, tau, device, sim, budget_bytes,
                                 candidates, chunk, progress)
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


def _budget(dev, budget_bytes: int | None) -> int:
    import torch

    if budget_bytes is not None:
        return int(budget_bytes)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free * DEVICE_MEMORY_SHARE)
    return DEFAULT_CPU_BUDGET


def _host_rows(x, start: int, stop: int, buf: dict | None = None):
    """Rows [start, stop) of a pool as a float32 CPU tensor (a view when x is in memory;
    read from a store view into the reusable buffer ``buf["rows"]`` when given)."""
    import torch

    if _is_view(x):
        out = None
        if buf is not None:
            have = buf.get("rows")
            if have is None or have.shape[0] < stop - start:
                have = buf["rows"] = np.empty((stop - start, x.shape[1]), dtype=np.float32)
            out = have
        return torch.from_numpy(x.rows(np.arange(start, stop), out=out))
    if isinstance(x, torch.Tensor):
        return x[start:stop]
    return _tensor(x[start:stop])


def _to(t, dev, dtype=None):
    if t.device == dev:
        return t if dtype is None else t.to(dtype)
    if dev.type == "cuda" and t.device.type == "cpu" and not t.is_pinned() \
            and t.numel() * t.element_size() <= PIN_BYTES:   # streamed blocks: pinned
        t = t.pin_memory()
    t = t.to(dev, non_blocking=t.is_pinned())
    return t if dtype is None else t.to(dtype)


class _Precision:
    """``torch.set_float32_matmul_precision`` for the duration of a block."""

    def __init__(self, sim: str):
        self.sim = sim

    def __enter__(self):
        import torch

        self.previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high" if self.sim == "tf32" else "highest")

    def __exit__(self, *exc):
        import torch

        torch.set_float32_matmul_precision(self.previous)


#: Columns per group of the two-stage top-k (group maxima first).
TOPK_GROUP = 64


def _block_topk(sims, c: int, group: int = TOPK_GROUP):
    """``torch.topk(sims, c, dim=1)`` (unsorted) in two stages: the maximum of every group
    of ``group`` columns, the c groups with the largest maxima, then the top c of those
    groups' columns. Exact: a group holding one of the top c values has a maximum at
    least that value, so it is among the c best groups (ties aside). Cheaper than one
    top-k over long rows, on the CPU and on a GPU alike."""
    import torch

    q, n = sims.shape
    ng = n // group
    if ng < 4 * c:
        return torch.topk(sims, c, dim=1, largest=True, sorted=False)
    body = ng * group
    gmax = sims[:, :body].reshape(q, ng, group).amax(dim=2)
    _, gi = torch.topk(gmax, c, dim=1, largest=True, sorted=False)
    cols = (gi[:, :, None] * group
            + torch.arange(group, device=sims.device)).reshape(q, c * group)
    if body < n:   # the last, partial group joins as it is
        tail = torch.arange(body, n, device=sims.device).expand(q, n - body)
        cols = torch.cat([cols, tail], dim=1)
    v, pos = torch.topk(torch.gather(sims, 1, cols), c, dim=1, largest=True, sorted=False)
    return v, torch.gather(cols, 1, pos)


@dataclass
class _Cut:
    """How a blocked retrieval cuts its work within the memory budget: ``c`` candidates kept
    per query, the pool in blocks of ``block`` rows (one block, kept on the device, when
    ``resident``), queries in super-chunks of ``sup`` and similarity chunks of ``qchunk``;
    ``mm_dtype`` the matmul dtype (``reduced``: half precision), ``rescore`` whether the
    candidates are scored again in float32."""

    c: int
    block: int
    sup: int
    qchunk: int
    resident: bool
    reduced: bool
    mm_dtype: object
    rescore: bool


def _cut(n: int, pool, k: int, dev, sim: str, budget_bytes, candidates, chunk) -> _Cut:
    import torch

    npool, d = int(pool.shape[0]), int(pool.shape[1])
    reduced = sim in ("bf16", "fp16")
    mm_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(sim, torch.float32)
    rescore = sim != "fp32"
    c = min(npool, max(k, int(candidates))) if candidates else \
        (min(npool, max(2 * k, k + 16)) if rescore else k)
    budget = _budget(dev, budget_bytes)
    el = 2 if reduced else 4
    # the pool resident on the device when its copies take at most half the budget (on
    # the CPU: at most one block)
    cpu = dev.type == "cpu"
    pool_bytes = npool * d * (4 + (el if reduced else 0))
    resident = pool_bytes <= (min(budget // 2, CPU_BLOCK_BYTES) if cpu else budget // 2)
    rest = budget - pool_bytes if resident else budget
    # what remains: a third each for the pool block, the query super-chunk (+ running
    # top-c) and the similarity chunk
    third = max(1 << 20, rest // 3)
    block_bytes = min(third, CPU_BLOCK_BYTES) if cpu else third
    block = npool if resident else int(max(1, min(npool, block_bytes // (d * (4 + el)))))
    sup = int(max(1, min(n, third // (d * (4 + el) + c * 24))))
    sims_bytes = min(third, DEFAULT_CHUNK_BYTES if dev.type == "cpu" else third)
    qchunk = int(chunk or max(1, min(sup, 8192, sims_bytes // max(1, el * block))))
    return _Cut(c, block, sup, min(qchunk, sup), resident, reduced, mm_dtype, rescore)


def _retrieve_blocked(queries, pool, k, tau, device, sim, budget_bytes, candidates, chunk,
                      progress):
    """Blocked top-k: query super-chunks × pool blocks, a running top-c merged per block,
    exact float32 re-scoring of the c candidates when ``sim`` is reduced."""
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    n, npool = int(queries.shape[0]), int(pool.shape[0])
    if npool == 0:
        raise PseudoTupleError("cannot retrieve from an empty pool")
    k = min(k, npool)
    cut = _cut(n, pool, k, dev, sim, budget_bytes, candidates, chunk)
    index = np.empty((n, k), dtype=np.int64)
    weight = np.empty((n, k), dtype=np.float32)
    if n == 0:
        return index, weight
    pool32 = pool_mm = None
    if cut.resident:
        pool32 = _to(_host_rows(pool, 0, npool), dev).float()
        pool_mm = pool32.to(cut.mm_dtype) if cut.reduced else pool32

    block_buf: dict = {}   # one host buffer for every streamed block
    with torch.no_grad(), _Precision(sim):
        for s0 in range(0, n, cut.sup):
            s1 = min(n, s0 + cut.sup)
            q32 = _to(_host_rows(queries, s0, s1), dev).float()
            q_mm = q32.to(cut.mm_dtype) if cut.reduced else q32
            run_v, run_i = _top_candidates(q_mm, pool, pool_mm, cut, dev, block_buf)
            _rank(q32, run_v, run_i, pool, pool32, cut, dev, tau, index[s0:s1],
                  weight[s0:s1])
            if progress is not None:
                progress(s1 - s0)
    return index, weight


def _top_candidates(q_mm, pool, pool_mm, cut: _Cut, dev, block_buf: dict):
    """The running top-c (values, pool rows) of a super-chunk of queries, merged block by
    block of the pool (``pool_mm`` when resident, else streamed through ``block_buf``)."""
    import torch

    rows, npool = int(q_mm.shape[0]), int(pool.shape[0])
    run_v = torch.full((rows, cut.c), -torch.inf, device=dev)
    run_i = torch.zeros((rows, cut.c), dtype=torch.int64, device=dev)
    for p0 in range(0, npool, cut.block):
        p1 = min(npool, p0 + cut.block)
        if cut.resident:
            pb = pool_mm[p0:p1]
        else:
            pb = _to(_host_rows(pool, p0, p1, block_buf), dev, cut.mm_dtype)
        cb = min(cut.c, p1 - p0)
        for a in range(0, rows, cut.qchunk):
            b = min(rows, a + cut.qchunk)
            sims = q_mm[a:b] @ pb.t()
            v, i = _block_topk(sims, cb)
            del sims
            v = v.float()
            v = torch.cat([run_v[a:b], v], dim=1)
            i = torch.cat([run_i[a:b], i + p0], dim=1)
            top, pos = torch.topk(v, cut.c, dim=1, largest=True, sorted=False)
            run_v[a:b], run_i[a:b] = top, torch.gather(i, 1, pos)
        del pb
    return run_v, run_i


def _rank(q32, run_v, run_i, pool, pool32, cut: _Cut, dev, tau, index, weight) -> None:
    """The k best of each query's c candidates (scored again in float32 when ``cut.rescore``)
    and their softmax(score / τ) weights, written into the super-chunk's ``index`` and
    ``weight`` rows."""
    import torch

    rows, k, d = int(q32.shape[0]), index.shape[1], int(pool.shape[1])
    for a in range(0, rows, cut.qchunk):
        b = min(rows, a + cut.qchunk)
        cand = run_i[a:b]
        if cut.rescore:   # exact float32 scores of the candidates
            if cut.resident:
                found = pool32[cand.reshape(-1)]
            else:
                found = _to(_take(pool, cand.reshape(-1).cpu()), dev)
            found = found.reshape(b - a, cut.c, d)
            with _Precision("fp32"):
                exact = torch.bmm(found, q32[a:b, :, None])[..., 0]
        else:
            exact = run_v[a:b]
        top, pos = torch.topk(exact, k, dim=1, largest=True, sorted=True)
        idx = torch.gather(cand, 1, pos)
        index[a:b] = idx.cpu().numpy()
        weight[a:b] = torch.softmax(top / tau, dim=1).cpu().numpy()


def build(pools: Mapping[str, Mapping[str, object]], expert: str, base: str,
          modalities: Sequence[str] | None = None, topk: int = DEFAULT_TOPK,
          tau: float = DEFAULT_TAU, seed: int = 0, max_queries: int | None = None,
          chunk_bytes: int = DEFAULT_CHUNK_BYTES, progress: bool = False,
          desc: str = "pseudo tuples", device=None, sim: str = "fp32",
          budget_bytes: int | None = None) -> PseudoTuples:
    """Pseudo tuples for one bond.

    ``pools[key][modality]`` are unit-row pool embeddings ``[N_modality, dim]`` (numpy,
    torch, or a memory-mapped :class:`~freebind.data.store.PoolView`) for the expert and the
    base (the space built so far); every space's pool of a modality holds the same items in
    the same order. ``modalities`` defaults to every modality some space has a pool for.
    ``device``, ``sim`` and ``budget_bytes`` go to :func:`topk_retrieve`."""
    _check_options(topk, tau, sim)
    opts = {"device": device, "sim": sim, "budget_bytes": budget_bytes}
    coverage = {key: tuple(pools[key]) for key in (expert, base)}
    if modalities is None:
        modalities = [m for m in ("audio", "image", "text")
                      if any(m in c for c in coverage.values())]
    modalities = tuple(modalities)
    sizes = _pool_sizes(pools, coverage, modalities, expert, base)
    queries = _sample_queries(sizes, modalities, seed, max_queries)
    preference = (expert, base) if expert != base else (expert,)
    routes = {(q, m): choose_route(q, m, coverage, preference, modalities)
              for q in modalities for m in modalities if m != q}

    total = sum(len(queries[q]) * len(r.hops) for (q, _), r in routes.items())
    result = PseudoTuples(modalities, queries, topk=topk, tau=tau)
    hop_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    with bar(total=total, unit="query", desc=desc, disable=not progress) as pbar:
        tick = pbar.update if progress else None
        for (q, m), route in routes.items():
            space, _, s = route.hops[0]
            key1 = (space, q, s)
            if key1 not in hop_cache:
                hop_cache[key1] = _first_hop(pools[space][q], pools[space][s], queries[q],
                                             topk, tau, chunk_rows(sizes[s], chunk_bytes),
                                             tick, opts)
            idx, w = hop_cache[key1]
            if len(route.hops) == 2:
                space2, _, _ = route.hops[1]
                idx, w = _second_hop(pools[space2][s], pools[space2][m], idx, w, topk, tau,
                                     chunk_rows(sizes[m], chunk_bytes), tick, opts)
            result.fills[(q, m)] = Fill(idx, w, route)
    return result


def _check_options(topk: int, tau: float, sim: str) -> None:
    if topk < 1:
        raise PseudoTupleError(f"topk must be at least 1 (got {topk})")
    if not tau > 0:
        raise PseudoTupleError(f"tau must be positive (got {tau})")
    if sim not in SIM_PRECISIONS:
        raise PseudoTupleError(f"sim {sim!r}: expected one of {', '.join(SIM_PRECISIONS)}")


def _pool_sizes(pools: Mapping, coverage: Mapping, modalities, expert: str,
                base: str) -> dict[str, int]:
    """Each modality's pool size, the same in every space that has the modality."""
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
    return sizes


def _sample_queries(sizes: Mapping[str, int], modalities, seed: int,
                    max_queries: int | None) -> dict[str, np.ndarray]:
    """The pool items of each query modality that become tuples: all of them, or
    ``max_queries`` drawn with ``seed`` (in pool order)."""
    rng = np.random.default_rng(seed)
    queries = {}
    for q in modalities:
        if max_queries is not None and sizes[q] > max_queries:
            queries[q] = np.sort(rng.choice(sizes[q], size=max_queries, replace=False))
        else:
            queries[q] = np.arange(sizes[q])
    return queries


def _first_hop(src, pool, rows: np.ndarray, k: int, tau: float, chunk: int, tick, opts):
    """Retrieval of the pool items ``rows`` of ``src`` from ``pool`` in the same space (the
    chunk only on the plain path)."""
    import torch

    if _is_view(src):
        qemb = src if len(rows) == len(src) else src.subset(rows)
    else:
        qemb = _tensor(src)[torch.from_numpy(rows)]
    return topk_retrieve(qemb, pool, k, tau, progress=tick,
                         chunk=None if _blocked(opts, src, pool) else chunk, **opts)


def _blocked(opts, *arrays) -> bool:
    import torch

    dev = opts.get("device")
    return ((dev is not None and torch.device(dev).type != "cpu") or opts.get("sim", "fp32")
            != "fp32" or opts.get("budget_bytes") is not None
            or any(_is_view(a) for a in arrays))


def _second_hop(mid_pool, target_pool, idx, w, k, tau, chunk, tick, opts=None):
    """Chain: aggregate the first hop's neighbours in the second space, retrieve from there."""
    import torch

    opts = opts or {}
    mid = mid_pool if _is_view(mid_pool) else _tensor(mid_pool)
    if _blocked(opts, mid_pool, target_pool):   # bigger query chunks: one pool pass each
        chunk = max(chunk, 16384)
    n = idx.shape[0]
    k2 = min(k, _len(target_pool))
    index = np.empty((n, k2), dtype=np.int64)
    weight = np.empty((n, k2), dtype=np.float32)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        qv = _aggregate(mid, torch.from_numpy(idx[sl]), torch.from_numpy(w[sl]))
        i2, w2 = topk_retrieve(qv, target_pool, k, tau,
                               chunk=None if _blocked(opts, mid_pool, target_pool) else chunk,
                               **opts)
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
