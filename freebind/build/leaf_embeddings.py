"""The embedding stage (step 1 of a build): every pool item embedded with every leaf space
through the content-addressed store (on an engine, or in process), read back aligned
across spaces as :class:`LeafPools` (memory-mapped store views, arrays when small)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from freebind.build.pools import PoolError, Pools
from freebind.build.report import BuildReport
from freebind.data.align import align
from freebind.data.items import ItemList

#: A build reads store rows (pools, the space built so far) into memory up to this many bytes
#: in all, the first (space, modality) views that fit; the others stay memory-mapped in the
#: store and are read chunk by chunk. A budget for the whole build, not per view: an
#: expression of many spaces would otherwise hold a whole pool of each (12 views of 64 MiB).
RESIDENT_POOL_BYTES = 64 << 20


class ResidentBudget:
    """What a build may still read into memory: ``budget(view)`` is the view's rows as an
    array when they fit in what is left (:data:`RESIDENT_POOL_BYTES` at the start), else the
    view itself, which every later stage reads block by block."""

    def __init__(self, total: int | None = None):
        self.left = RESIDENT_POOL_BYTES if total is None else int(total)

    def __call__(self, view):
        from freebind.data.store import PoolView

        if isinstance(view, PoolView):
            size = len(view) * view.dim * 4
            if size <= self.left:
                self.left -= size
                return np.asarray(view)
        return view


@dataclass
class LeafPools:
    """The embedding stage's result: per leaf space and modality the rows of the items
    every space decoded (memory-mapped store views, or arrays when small), aligned across
    spaces; ``kept[m]`` are those items' indices in the pool; ``pool`` the pool itself."""

    rows: dict
    kept: dict
    pool: Pools
    store: object
    _keys: dict = field(default_factory=dict)
    #: the build's budget of rows read into memory (the space built so far draws on it too)
    resident: ResidentBudget = field(default_factory=ResidentBudget)

    def keys(self, modality: str) -> np.ndarray:
        """The content keys (``S64``) of the kept items of ``modality`` (computed once)."""
        if modality not in self._keys:
            items, kept = self.pool.items[modality], self.kept[modality]
            if isinstance(items, ItemList) and items.keys is not None:
                # every item kept (kept is sorted and distinct): the pool's own keys, no copy
                self._keys[modality] = items.keys if len(kept) == len(items) \
                    else items.keys[kept]
                return self._keys[modality]
            keys = np.zeros(len(kept), dtype="S64")
            for j, i in enumerate(kept.tolist()):
                keys[j] = self.store.key(modality, items[i])
            self._keys[modality] = keys
        return self._keys[modality]


def resolve_leaves(plan, pool: Pools, store, space_options: Mapping) -> dict:
    """Per leaf space where its rows come from (:func:`freebind.run.importer.resolve_leaf`):
    a space whose rows were all imported is never loaded."""
    from freebind import spaces
    from freebind.run.importer import resolve_leaf

    items = {m: pool.items[m] for m in pool.modalities()}
    return {ref: resolve_leaf(store, ref, items, lambda r: spaces.get(r, **space_options))
            for ref in plan.spaces}


def fill_store(plan, pool, store, engine, shard, batch_size, progress, space_options, say,
               leaves):
    """The embedding stage on an engine: every (space, modality) store call of step 1
    (none for a space whose rows were all imported)."""
    from freebind.run.engines import fill
    from freebind.run.engines.chunks import StoreCall

    opened = {ref: leaf.space for ref, leaf in leaves.items() if leaf.rows != "imported"}
    calls = [StoreCall(ref, m, pool.items[m]) for ref, sp in opened.items()
             for m in pool.modalities() if m in sp.modalities]
    where = f" (slice {shard[0]}/{shard[1]})" if shard else ""
    say(f"embedding stage on the {engine.engine} engine{where}")
    return fill(calls, opened, store, engine, shard=shard, batch_size=batch_size,
                progress=progress, space_options=space_options)


def embed_pools(plan, pool: Pools, store, report: BuildReport, batch_size: int = 64,
                progress: bool = False, leaves: Mapping | None = None) -> LeafPools:
    """Step 1: every pool item embedded with every leaf space through the store (cached,
    resumable; rows imported for a space are read from their own identity, and a space
    whose rows were all imported is never loaded: ``leaves`` from
    :func:`freebind.run.importer.resolve_leaf`), read back as memory-mapped views (arrays when
    small), only the items every space decoded, rows aligned across spaces. Failures go
    into ``report.skipped``."""
    leaf_raw: dict[str, dict[str, tuple]] = {}
    for ref in plan.spaces:
        space, fallback = leaves[ref].space, leaves[ref].fallback
        for m in pool.modalities():
            if m not in space.modalities:
                continue
            before = store.encoded
            view, idx, failures = store.embed(space, m, pool.items[m], batch_size=batch_size,
                                              progress=progress, on_error="skip", lazy=True,
                                              fallback=fallback)
            encoded = store.encoded - before
            report.encoded += encoded
            report.reused += len(idx) - encoded
            for f in failures:
                report.skip({"path": f.item, "reason": f.reason, "modality": m})
            leaf_raw.setdefault(ref, {})[m] = (view, idx)
    return _aligned(leaf_raw, pool, store)


def _aligned(leaf_raw: Mapping, pool: Pools, store) -> LeafPools:
    """Only the items every space decoded, rows aligned across spaces."""
    rows: dict[str, dict] = {ref: {} for ref in leaf_raw}
    kept: dict[str, np.ndarray] = {}
    modalities = {m for mods in leaf_raw.values() for m in mods}
    budget = ResidentBudget()
    for m in sorted(modalities):
        aligned, kept[m] = align({ref: mods[m] for ref, mods in leaf_raw.items()
                                  if m in mods})
        for ref, view in aligned.items():
            rows[ref][m] = budget(view)
        if len(kept[m]) == 0:
            raise PoolError(f"no {m} pool item could be decoded")
    return LeafPools(rows, kept, pool, store, resident=budget)


def embed_stage(plan, pool: Pools, store, report: BuildReport, leaves: Mapping, filled=None,
                batch_size: int = 64, progress: bool = False,
                say: Callable[[str], None] = lambda msg: None) -> LeafPools:
    """Step 1 in process, after an engine filled the store (``filled``, its report) or not:
    a line for each space whose rows were imported, then :func:`embed_pools`; the engine's
    encodes count as encodes, not as cache reuse."""
    for ref, got in leaves.items():
        if got.rows != "encoded":
            ident = got.space if got.fallback is None else got.fallback
            say(f"{ref}: rows {got.rows} ({ident.fingerprint})")
    leaf = embed_pools(plan, pool, store, report, batch_size, progress, leaves)
    if filled is not None:
        report.encoded += filled.encoded
        report.reused -= filled.encoded
    return leaf
