"""``freebind.Index``: cross-modal search over what a space or a bundle embedded.

An index holds, per item modality, the base-space embeddings of every item and the two
components of its fusion at the pivot bond (:mod:`freebind.search.parts`), so a query
under any factors or preset ranks the items exactly as re-fusing them would. Files on disk
(no pickle)::

    INDEX/index.json                 target, factors, modalities, sources, approximate indexes
    INDEX/items/…                    the items' modalities, paths and texts as columns
                                     (:mod:`freebind.search.itemtable`); an item's id is its
                                     position (version 1 kept them in one ``items.json``)
    INDEX/<m>/ids.npy                int64 ids of the modality's rows
    INDEX/<m>/leaf_<i>.npy           float32 base-space embeddings (one per space it reads)
    INDEX/<m>/A.npy, B.npy, dot.npy  the pivot components under the index's factors
    INDEX/<m>/hnsw.faiss             HNSW graph of the fused rows (faiss's format), large modalities

Up to ``exact_limit`` rows (default 1.25·10⁸ / dim) a modality is scored exactly (two
matrix–vector products); beyond it an HNSW graph of the fused rows (under the index's factors)
gives candidates that are then scored exactly under the query's factors (its recall@10 against
exact search is measured when it is built, under the index's factors and under each preset).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from freebind.util.atomic import atomic_write, atomic_write_text
from freebind.util.errors import FreebindError, MediaError, UsageError
from freebind.search import parts
from freebind.fusion.devices import OnDevice
from freebind.fusion.memo import remembered
from freebind.data.store import PoolView
from freebind.search.itemtable import LEGACY as LEGACY_ITEMS, ItemTable

FORMAT = "freebind-index"
VERSION = 2
#: versions :meth:`Index.load` reads (1: the items in one ``items.json``)
READ_VERSIONS = (1, 2)
#: exact search while rows × dim ≤ this (per component): 122k rows at 1024-d, 2.6M at 48-d;
#: about 1 GB read per query at the limit (see benchmarks/bench_search.py)
EXACT_CELLS = 125_000_000
#: Score cells (items x queries) one block of ``search_many`` holds: 64 M float32 cells,
#: 256 MiB (``search --texts`` with many queries runs block after block).
SCORE_CELLS = 1 << 26
QUERY_MODALITIES = ("text", "audio", "image", "video", "depth", "thermal", "imu", "point")


#: ``(accepts(location), open(location, space_options=, store=))`` pairs :meth:`Index.open`
#: tries before reading a folder (:mod:`freebind.search.databases` adds the databases')
OPENERS: list = []


class IndexError_(FreebindError):  # noqa: N801  (IndexError is a builtin)
    """An index folder is unreadable, of another format, or does not match its target."""


@dataclass
class Hit:
    id: int
    modality: str
    path: str
    score: float
    rank: int
    text: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class _Block:
    """One item modality: ids, base-space embeddings, components per key, HNSW graphs."""

    def __init__(self, modality: str, refs: list[str]):
        self.modality = modality
        self.refs = refs
        self.ids = np.zeros(0, dtype=np.int64)
        self.leaves = {r: None for r in refs}
        self.comps: "OrderedDict[str, tuple]" = OrderedDict()
        self.ann: dict | None = None  # {"key", "A": faiss index|None, "B": …, "recall@10"}
        self.scans: dict = {}  # components key -> _Scan (float16 copies for one-query scans)

    @property
    def rows(self) -> int:
        return int(len(self.ids))


class Index:
    """A factor-aware index of a space's or a bundle's embeddings.

    ``target``: a bundle path (``fused.safetensors``, ``fused.safetensors@preset``), a space
    reference (``mini:bind``), or a loaded FusedSpace / Space. ``factors``/``preset`` are the
    index's default factors (queries may override them)."""

    def __init__(self, target, factors: Sequence[str] = (), preset: str | None = None, *,
                 space_options: Mapping | None = None, exact_limit: int | None = None,
                 store=None):
        self.space_options = dict(space_options or {})
        self._store = store
        self.ref, self.fused, self.space = _resolve_target(target, self.space_options)
        if self.fused is not None:
            self.graph = self.fused.graph
            self.overrides = [*self.fused.overrides, *_as_list(factors)]
            self.preset = preset if preset is not None else self.fused.preset
            self.projectors = self.fused.projectors
            self.dim = self.fused.dim
            self.name = self.fused.name
            self.presets = dict(self.fused.presets)
        else:
            if factors or preset:
                raise UsageError(f"factors and presets apply to bundles, not to the plain "
                                 f"space {self.ref!r}")
            sp = self.space
            self.graph = {"op": "space", "ref": self.ref, "dim": int(sp.dim),
                          "modalities": list(sp.modalities), "text": self.ref}
            self.overrides, self.preset, self.projectors = [], None, {}
            self.dim, self.name, self.presets = int(sp.dim), self.ref, {}
        self.table = self._table()
        self.exact_limit = int(exact_limit) if exact_limit else max(1, EXACT_CELLS // self.dim)
        #: the items (``items[i]``: ``{"modality", "path"[, "text"]}``), held as columns
        self.items = ItemTable()
        self.blocks: dict[str, _Block] = {}
        self.sources: list[dict] = []
        self._query_cache: "OrderedDict[tuple, dict]" = OrderedDict()
        self.path: Path | None = None
        # guards the caches (query rows, components) so that searches can run in threads
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        """Its target, items per modality, size, defaults and folder (notebooks show it)."""
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item["modality"]] = counts.get(item["modality"], 0) + 1
        items = ", ".join(f"{m} {n}" for m, n in counts.items()) or "empty"
        extra = f", preset={self.preset!r}" if self.preset else ""
        if self.overrides:
            extra += f", factors={[str(o) for o in self.overrides]!r}"
        if self.path is not None:
            extra += f", path={str(self.path)!r}"
        return (f"Index({self.name!r}, {len(self.items)} items ({items}), dim={self.dim}"
                f"{extra})")

    # --- factors ------------------------------------------------------------------------
    def _table(self, factors=None, preset: str | None = None):
        from freebind.fusion.factors import resolve

        if self.fused is None:
            if factors or preset:
                raise UsageError(f"factors and presets apply to bundles; {self.name} is a "
                                 f"plain space")
            return {}
        return resolve(self.graph, [*self.overrides, *_as_list(factors)], self.presets,
                       preset if preset is not None else self.preset)

    @property
    def modalities(self) -> list[str]:
        """The item modalities the index holds."""
        return [m for m in QUERY_MODALITIES if m in self.blocks and self.blocks[m].rows]

    @property
    def query_modalities(self) -> list[str]:
        from freebind.fusion.graph import output_modalities

        return list(output_modalities(self.graph, self.table)) if self.fused is not None \
            else list(self.space.modalities)

    def factor_controls(self) -> list[dict]:
        """One entry per (bond, modality) factor: what the web page draws a slider for."""
        if self.fused is None:
            return []
        from freebind.algebra.compile import bond_nodes

        out = []
        for b in bond_nodes(self.graph):
            entry = self.table[b["id"]]
            for m in b["shared"]:
                out.append({"bond": b["id"], "modality": m, "kind": b["kind"],
                            "expert": ", ".join(e["text"] for e in b["experts"]),
                            "value": float(entry.factors.get(m, 0.0)), "on": entry.on})
        return out

    # --- adding -------------------------------------------------------------------------
    def _leaf_refs(self, modality: str) -> list[str]:
        if self.fused is None:
            return [self.ref]
        return [ref for ref, meta in self.fused.plan.spaces.items()
                if modality in meta["modalities"]]

    def _block(self, modality: str) -> _Block:
        if modality not in self.blocks:
            from freebind.fusion.graph import output_modalities

            yields = output_modalities(self.graph, self.table) if self.fused is not None \
                else list(self.space.modalities)
            if modality not in yields:
                raise UsageError(f"{self.name} has no {modality} modality here (it yields "
                                 f"{', '.join(yields)})")
            self.blocks[modality] = _Block(modality, self._leaf_refs(modality))
        return self.blocks[modality]

    def add_leaves(self, modality: str, paths: Sequence[str],
                   leaves: Mapping[str, Any], texts: Sequence[str] | None = None) -> int:
        """Add items from precomputed base-space embeddings ``{space_ref: [N, d]}`` (for a
        plain space: ``{ref: vectors}``); ``paths`` name the items (``texts``: the texts of
        text items, when their names are sources such as ``FILE:LINE``). Items whose
        (modality, path) is already indexed are left out. Returns the rows added."""
        block = self._block(modality)
        paths = [str(p) for p in paths]
        missing = [r for r in block.refs if r not in leaves]
        if missing:
            raise UsageError(f"adding {modality} items needs base embeddings of "
                             f"{', '.join(missing)}")
        arrays = {}
        for r in block.refs:
            a = leaves[r] if isinstance(leaves[r], PoolView) else \
                np.asarray(leaves[r], dtype=np.float32)
            if a.ndim != 2 or a.shape[0] != len(paths):
                raise UsageError(f"{r} {modality} embeddings: expected [{len(paths)}, d], "
                                 f"got {list(a.shape)}")
            # store views stay memory-mapped (their rows are normalised when fused)
            arrays[r] = a if isinstance(a, PoolView) else \
                a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        keep = []
        seen = set()
        held = self.items.contains(modality, paths)
        for i, p in enumerate(paths):
            if held[i] or p in seen:
                continue
            seen.add(p)
            keep.append(i)
        del seen
        if not keep:
            return 0
        keep_idx = np.asarray(keep)
        start = len(self.items)
        self.items.append(modality, [paths[i] for i in keep],
                          None if texts is None else [str(texts[i]) for i in keep])
        new_ids = np.arange(start, start + len(keep), dtype=np.int64)
        block.ids = np.concatenate([block.ids, new_ids])
        for r in block.refs:
            new = _rows(arrays[r], keep_idx)
            block.leaves[r] = new if block.leaves[r] is None else _cat(block.leaves[r], new)
        # components of the new rows under every cached key, appended (no full recompute)
        for k, (pv, a, b, dot, table) in list(block.comps.items()):
            na, nb = _components_in_chunks(self.graph, self.projectors,
                                           {r: {modality: _rows(arrays[r], keep_idx)}
                                            for r in block.refs}, modality, table)
            block.comps[k] = (pv, _cat(a, na), _cat(b, nb), _cat(dot, _rowdot(na, nb)), table)
        block.ann = None  # rebuilt by build_ann() / save()
        block.scans.clear()
        return len(keep)

    def add(self, modality: str, items: Sequence, store=None, batch_size: int = 64,
            progress: bool = False, names: Sequence[str] | None = None) -> dict:
        """Encode ``items`` (file paths; texts for the text modality) with the base spaces
        (through the embedding cache) and add them; ``names`` name them (default: the path
        or the text). Undecodable items are skipped and reported: returns
        ``{"added": n, "skipped": [{"path", "reason"}]}``."""
        from freebind.data.align import encode_aligned

        store = self._get_store(store)
        block_refs = self._block(modality).refs
        items = list(items)
        requests = [(ref, self._space_of(ref), modality) for ref in block_refs]
        got = encode_aligned(requests, items, store=store, batch_size=batch_size,
                             progress=progress, lazy=True)   # leaves stay memory-mapped
        kept = got.kept
        failures = {f.index: {"path": _item_name(items[f.index]) if names is None
                              else str(names[f.index]), "reason": f.reason}
                    for f in got.failures}
        leaves = {ref: got.rows[ref] for ref in block_refs}
        names = [_item_name(x) for x in items] if names is None else [str(x) for x in names]
        texts = [items[i] for i in kept] if modality == "text" else None
        added = self.add_leaves(modality, [names[i] for i in kept], leaves, texts=texts) \
            if len(kept) else 0
        return {"added": added, "skipped": [failures[i] for i in sorted(failures)]}

    def add_embeddings(self, folder: str | os.PathLike, store=None, batch_size: int = 64,
                       progress: bool = False) -> dict:
        """Add the partitions of a ``freebind embed`` output folder that are not indexed yet.

        For a plain space the stored vectors are used as they are; for a bundle the items'
        base-space embeddings come from the embedding cache (the one ``embed`` filled; items
        it lacks are encoded). Returns ``{"partitions": n, "added": rows, "skipped": […]}``."""
        from freebind.run.embed_folder import (TextSources, partition_paths, partition_rows,
                                               read_manifest)

        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest.get("target") != self.name:
            raise UsageError(f"{folder}: embedded with {manifest.get('target')!r}, but this "
                             f"index is of {self.name!r}")
        if int(manifest.get("dim", -1)) != self.dim:
            raise UsageError(f"{folder}: {manifest.get('dim')}-d embeddings, the index is "
                             f"{self.dim}-d")
        root = str(folder.resolve())
        done = {(s["dir"], s["k"], s["sources"]) for s in self.sources}
        report = {"partitions": 0, "added": 0, "skipped": []}
        text_sources = TextSources()   # each texts file read once, not once per row
        for part in manifest.get("partitions", []):
            ident = (root, int(part["k"]), part["sources"])
            if ident in done:
                continue
            m = part["modality"]
            npy = partition_paths(folder, m, int(part["k"]))["embeddings"]
            if not npy.is_file():
                continue  # not written yet (an embed run still going): a later add takes it
            rows = partition_rows(folder, manifest, part)
            paths = [_abs(r["path"]) for r in rows]
            if self.fused is None:
                try:   # mapped, not loaded: the rows are read block by block
                    vec = np.load(npy, allow_pickle=False, mmap_mode="r")
                except (OSError, ValueError) as exc:
                    raise IndexError_(f"{npy}: cannot read ({exc})") from None
                if vec.shape[0] != len(paths):
                    raise IndexError_(f"{npy}: {vec.shape[0]} rows but its metadata lists "
                                      f"{len(paths)}")
                texts = [text_sources.text(r["path"]) for r in rows] if m == "text" else None
                added = self.add_leaves(m, [r["path"] for r in rows] if texts else paths,
                                        {self.ref: vec}, texts=texts)
            else:
                if m == "text":
                    items = [text_sources.text(r["path"]) for r in rows]
                    names = [r["path"] for r in rows]
                else:
                    items, names = paths, paths
                res = self.add(m, items, store=store, batch_size=batch_size,
                               progress=progress, names=names)
                added = res["added"]
                report["skipped"] += res["skipped"]
            self.sources.append({"dir": root, "k": int(part["k"]), "sources": part["sources"],
                                 "modality": m, "rows": len(paths)})
            report["partitions"] += 1
            report["added"] += added
        return report

    def _space_of(self, ref: str):
        if self.fused is None:
            return self.space
        from freebind import spaces

        return spaces.get(ref, **self.space_options)

    def _get_store(self, store):
        if store is not None and not isinstance(store, (str, Path)):
            return store
        if store is None and self._store is not None:
            return self._get_store(self._store)
        from freebind.data.store import EmbeddingStore

        return EmbeddingStore(store)

    # --- components ---------------------------------------------------------------------
    def _components(self, block: _Block, table):
        with self._lock:
            return self._components_locked(block, table)

    def _components_locked(self, block: _Block, table):
        k = parts.key(self.graph, block.modality, table)
        if k not in block.comps:
            pv = parts.pivot(self.graph, block.modality, table)
            leaves = {r: {block.modality: block.leaves[r]} for r in block.refs}
            a, b = _components_in_chunks(self.graph, self.projectors, leaves, block.modality,
                                         table)
            block.comps[k] = (pv, a, b, _rowdot(a, b), table)
            own = parts.key(self.graph, block.modality, self.table)
            for old in [x for x in block.comps if x not in (own, k)][:-2]:
                block.comps.pop(old)  # keep the index's own components and the latest two
                block.scans.pop(old, None)
        block.comps.move_to_end(k)
        pv, a, b, dot, _ = block.comps[k]
        return k, pv, a, b, dot

    def build_ann(self, m: int = 32, ef_search: int = 128, progress: bool = False) -> dict:
        """Build HNSW graphs for the modalities over ``exact_limit`` rows; returns
        ``{modality: recall@10 against exact search}`` (measured on up to 200 items as
        queries, under the index's factors)."""
        out = {}
        for mod, block in self.blocks.items():
            if block.rows <= self.exact_limit or block.ann is not None:
                if block.ann is not None:
                    out[mod] = block.ann.get("recall@10")
                continue
            faiss = _faiss()
            k, pv, a, b, dot = self._components(block, self.table)
            f0 = parts.mix(pv, self.table, mod) or 0.0
            vecs = np.ascontiguousarray(parts.fused_rows(a, b, dot, f0), dtype=np.float32)
            g = faiss.IndexHNSWFlat(vecs.shape[1], m, faiss.METRIC_INNER_PRODUCT)
            g.hnsw.efSearch = ef_search
            g.add(vecs)
            block.ann = {"key": k, "graph": g, "m": m, "ef_search": ef_search}
            block.ann["recall@10"] = self._measure_recall(block, self.table)
            for name in sorted(self.presets):
                t = self._table(preset=name)
                if name != "default" and parts.key(self.graph, mod, t) == k:
                    block.ann.setdefault("recall@10 by preset", {})[name] = \
                        self._measure_recall(block, t)
            out[mod] = block.ann["recall@10"]
        return out

    def _measure_recall(self, block: _Block, table, n: int = 200, k: int = 10) -> float:
        """Recall@10 of the approximate search against exact search, with ``n`` of the
        items (their fused vectors under ``table``) as queries."""
        rng = np.random.default_rng(0)
        _, pv, a, b, dot = self._components(block, table)
        f = parts.mix(pv, table, block.modality)
        if f is None:
            return float("nan")
        rows = parts.fused_rows(a, b, dot, f)
        pick = rng.choice(block.rows, size=min(n, block.rows), replace=False)
        hits = 0
        for i in pick:
            q = rows[i]
            exact = set(_topk(parts.scores(q, a, b, dot, f), k).tolist())
            approx = set(self._ann_rows(block, q, a, b, dot, f, k).tolist())
            hits += len(exact & approx)
        return hits / (len(pick) * k)

    def _ann_rows(self, block, q, a, b, dot, f, k):
        """Candidates from the HNSW graph over the fused rows under the index's factors, then
        scored exactly under the query's factors."""
        want = max(10 * k, 100)
        g = block.ann["graph"]
        g.hnsw.efSearch = max(block.ann["ef_search"], want)
        _, idx = g.search(np.ascontiguousarray(q[None, :], dtype=np.float32), want)
        cand = np.unique(idx[0][idx[0] >= 0])
        if not len(cand):
            return cand
        s = parts.scores(q, None if a is None else a[cand], None if b is None else b[cand],
                         None if dot is None else dot[cand], f)
        return cand[_topk(s, k)]

    # --- searching ----------------------------------------------------------------------
    def embed_query(self, modality: str, item, factors=None, preset: str | None = None
                    ) -> np.ndarray:
        """The query's vector in the target's space under these factors (``[dim]``).
        Base embeddings of recent queries are cached, so a factor change encodes nothing."""
        table = self._table(factors, preset)
        return self._query_vectors(modality, [item], table)[0]

    def _query_vectors(self, modality: str, items: Sequence, table) -> np.ndarray:
        if modality not in QUERY_MODALITIES:
            raise UsageError(f"query modality {modality!r}: use one of "
                             f"{', '.join(QUERY_MODALITIES)}")
        leaves = self._query_leaves(modality, items, table)
        return self._fuse_query_leaves(modality, leaves, table)

    def _fuse_query_leaves(self, modality: str, leaves: dict, table) -> np.ndarray:
        """Query rows ``[Q, dim]`` from their base embeddings ``{ref: {modality: [Q, d]}}``."""
        if self.fused is None:
            return leaves[self.ref][modality]
        from freebind.fusion.graph import fuse, output_modalities

        yields = output_modalities(self.graph, table)
        if modality not in yields:
            raise UsageError(f"{self.name} has no {modality} queries under these factors "
                             f"(it yields {', '.join(yields)})")
        rows = len(next(iter(next(iter(leaves.values())).values())))
        with _few_threads(rows):
            out = fuse(self.graph, self._query_projectors(), leaves, table=table,
                       modalities=[modality])
        return out[modality].cpu().numpy()

    def _query_projectors(self) -> dict:
        """The projectors, remembering their outputs for a few query rows: a factor change
        moves how a query's projections combine, not the projections (the same numbers,
        no projector run)."""
        with self._lock:    # one memo per index, not one per racing first query
            memo = getattr(self, "_memo", None)
            if memo is None or memo[0] is not self.projectors:
                on_cpu = OnDevice(self.projectors, "cpu")   # queries are fused on the CPU
                memo = self._memo = (self.projectors, remembered(
                    {k: on_cpu[k] for k in self.projectors}, QUERY_MEMO_ENTRIES,
                    max_rows=QUERY_MEMO_ROWS, cpu_only=True, clone=True))
        return memo[1]

    def _query_leaves(self, modality, items, table) -> dict:
        refs = self._leaf_refs(modality) if self.fused is not None else [self.ref]
        if self.fused is None and modality not in self.space.modalities:
            raise UsageError(f"{self.name} has no {modality} modality")
        if not refs:
            raise UsageError(f"{self.name} has no {modality} modality")
        leaves: dict = {}
        for ref in refs:
            space = self._space_of(ref)
            rows = [None] * len(items)
            todo = []
            for i, it in enumerate(items):
                key = (ref, modality, _query_key(modality, it))
                with self._lock:
                    row = self._query_cache.get(key)
                    if row is not None:
                        self._query_cache.move_to_end(key)
                if row is not None:
                    rows[i] = row
                else:
                    todo.append(i)
            if todo:
                batch = [items[i] for i in todo]
                try:
                    arr = space.encode(modality, batch, batch_size=64)
                except MediaError as exc:
                    raise UsageError(f"query: {exc}") from None
                arr = np.asarray(arr.detach().cpu().numpy() if hasattr(arr, "detach")
                                 else arr, dtype=np.float32)
                for i, row in zip(todo, arr):
                    rows[i] = row
                    key = (ref, modality, _query_key(modality, items[i]))
                    with self._lock:
                        self._query_cache[key] = row
                        while len(self._query_cache) > 4096:
                            self._query_cache.popitem(last=False)
            leaves.setdefault(ref, {})[modality] = np.stack(rows)
        return leaves

    def search(self, query=None, *, modality: str | None = None, k: int = 10,
               query_modality: str = "text", factors=None, preset: str | None = None,
               vector=None, exact: bool = False) -> list[Hit]:
        """Top-``k`` items for one query: ``query`` is a text (``query_modality="text"``) or
        a file path (``"audio"``, ``"image"``, …); ``vector`` a ready query vector in the
        target's space instead. ``modality`` restricts the items (default: every item
        modality). ``factors``/``preset`` apply to the query and the items alike."""
        return self.search_many([query] if vector is None else [None], modality=modality,
                                k=k, query_modality=query_modality, factors=factors,
                                preset=preset,
                                vectors=None if vector is None else
                                np.asarray(vector, dtype=np.float32)[None, :],
                                exact=exact)[0]

    def search_many(self, queries: Sequence, *, modality: str | None = None, k: int = 10,
                    query_modality: str = "text", factors=None, preset: str | None = None,
                    vectors=None, exact: bool = False) -> list[list[Hit]]:
        """:meth:`search` for several queries at once (one list of hits per query)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UsageError(f"k={k!r}: expected a positive whole number")
        table = self._table(factors, preset)
        mods = self.modalities if modality is None else [modality]
        for m in mods:
            if m not in self.blocks or not self.blocks[m].rows:
                have = ", ".join(self.modalities) or "nothing"
                raise UsageError(f"the index holds no {m} items (it holds {have})")
        if vectors is None:
            q = self._query_vectors(query_modality, list(queries), table)
        else:
            q = np.asarray(vectors, dtype=np.float32)
            if q.ndim != 2 or q.shape[1] != self.dim:
                raise UsageError(f"query vectors: expected [Q, {self.dim}], got "
                                 f"{list(q.shape)}")
        per_query: list[list[tuple[float, int, str]]] = [[] for _ in range(len(q))]
        for m in mods:
            block = self.blocks[m]
            key, pv, a, b, dot = self._components(block, table)
            f = parts.mix(pv, table, m)
            if f is None:
                if modality is not None:
                    raise UsageError(f"no {m} items exist under these factors (the bond "
                                     f"that yields them is switched off)")
                continue
            use_ann = (not exact and block.ann is not None and block.ann["key"] == key)
            if use_ann:
                for qi in range(len(q)):
                    rows = self._ann_rows(block, q[qi], a, b, dot, f, k)
                    s = parts.scores(q[qi], None if a is None else a[rows],
                                     None if b is None else b[rows],
                                     None if dot is None else dot[rows], f)
                    per_query[qi] += [(float(s[j]), int(block.ids[r]), m)
                                      for j, r in enumerate(rows)]
                continue
            if len(q) == 1 and block.rows > max(k, SCAN_MIN_ROWS):
                top, col = _scan_topk(block, key, q[0], a, b, dot, f, k)
                if top is not None:
                    per_query[0] += [(float(s_), int(block.ids[r]), m)
                                     for r, s_ in zip(top, col)]
                    continue
            # queries in blocks: one block's [N, Q'] scores at a time, never [N, Q]
            step = max(1, SCORE_CELLS // max(1, block.rows))
            for q0 in range(0, len(q), step):
                qs = q[q0:q0 + step]
                s = parts.scores(qs[0] if len(qs) == 1 else qs, a, b, dot, f)  # [N] / [N, Q']
                for j in range(len(qs)):
                    col = s if s.ndim == 1 else s[:, j]
                    top = _topk(col, k)
                    per_query[q0 + j] += [(float(col[r]), int(block.ids[r]), m) for r in top]
                del s
        out = []
        for hits in per_query:
            hits.sort(key=lambda h: (-h[0], h[1]))
            out.append([Hit(i, m, self.items[i]["path"], s, rank + 1, self.items[i].get("text"))
                        for rank, (s, i, m) in enumerate(hits[:k])])
        return out

    # --- info ---------------------------------------------------------------------------
    def info(self) -> dict:
        return {"target": self.ref, "expression": self.name, "dim": self.dim,
                "bundle": self.fused is not None, "items": len(self.items),
                "modalities": {m: self.blocks[m].rows for m in self.modalities},
                "query_modalities": self.query_modalities,
                "factors": [str(o) if isinstance(o, str) else _override_text(o)
                            for o in self.overrides],
                "preset": self.preset, "presets": sorted(self.presets),
                "controls": self.factor_controls(),
                "approximate": {m: {"rows": b.rows, "recall@10": b.ann.get("recall@10"),
                                    "recall@10 by preset": b.ann.get("recall@10 by preset",
                                                                     {})}
                                for m, b in self.blocks.items() if b.ann is not None},
                "exact_limit": self.exact_limit}

    def item(self, item_id: int) -> dict:
        if not isinstance(item_id, int) or not 0 <= item_id < len(self.items):
            raise UsageError(f"no item {item_id!r} in this index")
        return self.items[item_id]

    # --- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike, progress: bool = False) -> Path:
        """Write the index folder (atomic files; ``index.json`` last). Approximate graphs
        are built first for modalities over ``exact_limit`` rows."""
        path = Path(path)
        if self.fused is not None and self.fused.path is None:
            raise UsageError("an index refers to its bundle by path: save the FusedSpace "
                             "(fused.save(PATH)) before indexing it, or index a bundle path")
        path.mkdir(parents=True, exist_ok=True)
        self.build_ann(progress=progress)
        modalities = {}
        for m, block in self.blocks.items():
            d = path / m
            _save_npy(d / "ids.npy", block.ids)
            leaf_files = {}
            for i, r in enumerate(block.refs):
                _save_npy(d / f"leaf_{i}.npy", block.leaves[r])
                leaf_files[r] = f"{m}/leaf_{i}.npy"
            k, pv, a, b, dot = self._components(block, self.table)
            comp = {"key": k}
            for name, arr in (("A", a), ("B", b), ("dot", dot)):
                if arr is not None:
                    _save_npy(d / f"{name}.npy", arr)
                    comp[name] = f"{m}/{name}.npy"
            ann = None
            if block.ann is not None:
                faiss = _faiss()
                ann = {key: block.ann[key] for key in ("key", "m", "ef_search", "recall@10",
                                                       "recall@10 by preset")
                       if key in block.ann}
                atomic_write(d / "hnsw.faiss",
                             lambda tmp, g=block.ann["graph"]: faiss.write_index(g, tmp))
                ann["graph"] = f"{m}/hnsw.faiss"
            modalities[m] = {"rows": block.rows, "leaves": leaf_files, "components": comp,
                             "ann": ann}
        self.items.save(path)
        meta = {"format": FORMAT, "version": VERSION, "target": self.ref,
                "expression": self.name, "dim": self.dim,
                "weights_fingerprint": self.fused.weights_fingerprint
                if self.fused is not None else str(self.space.fingerprint),
                "factors": [_override_text(o) for o in _parsed(self.overrides)],
                "preset": self.preset, "exact_limit": self.exact_limit,
                "modalities": modalities, "sources": self.sources,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(path / "index.json", json.dumps(meta, indent=1))
        (path / LEGACY_ITEMS).unlink(missing_ok=True)   # a version-1 index, extended
        self.path = path
        return path

    @classmethod
    def open(cls, where: str | os.PathLike, *, space_options: Mapping | None = None,
             store=None):
        """An index folder (:meth:`load`), or a location one of :data:`OPENERS` takes: a
        vector database URI written by ``freebind index --to`` (``lancedb:…``,
        ``qdrant:…``, ``milvus:…``; :mod:`freebind.search.databases`), searched the same
        way."""
        for accepts, opener in OPENERS:
            if accepts(os.fspath(where)):
                return opener(os.fspath(where), space_options=space_options, store=store)
        return cls.load(where, space_options=space_options, store=store)

    @classmethod
    def load(cls, path: str | os.PathLike, *, space_options: Mapping | None = None,
             store=None) -> "Index":
        """Read an index folder written by :meth:`save` (npy, json and faiss files only)."""
        path = Path(path)
        meta_file = path / "index.json"
        if not meta_file.is_file():
            raise UsageError(f"{path}: not an index (no index.json); build one with "
                             f"`freebind index`")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexError_(f"{path}: unreadable index ({exc})") from None
        if meta.get("format") != FORMAT or meta.get("version") not in READ_VERSIONS:
            raise IndexError_(f"{path}: not a version-{VERSION} freebind index (it says "
                              f"{meta.get('format')!r} version {meta.get('version')!r}); "
                              f"rebuild the index")
        try:
            items = ItemTable.load(path)
        except ValueError as exc:
            raise IndexError_(f"{path}: unreadable index ({exc}); rebuild the index") \
                from None
        index = cls(meta["target"], meta.get("factors") or (), None,
                    space_options=space_options, exact_limit=meta.get("exact_limit"),
                    store=store)
        index.preset = meta.get("preset")
        index.table = index._table()
        fp = index.fused.weights_fingerprint if index.fused is not None \
            else str(index.space.fingerprint)
        if fp != meta.get("weights_fingerprint"):
            raise IndexError_(f"{path}: {meta['target']} has changed since it was indexed "
                              f"(fingerprint {fp} ≠ {meta.get('weights_fingerprint')}); "
                              f"rebuild the index")
        index.items = items
        index.sources = list(meta.get("sources", []))
        for m, entry in meta.get("modalities", {}).items():
            block = index._block(m)
            block.ids = _load_npy(path / f"{m}/ids.npy")
            for r in block.refs:
                if r not in entry["leaves"]:
                    raise IndexError_(f"{path}: no {r} embeddings of the {m} items")
                block.leaves[r] = _load_npy(path / entry["leaves"][r])
            comp = entry["components"]
            if comp["key"] == parts.key(index.graph, m, index.table):
                a = _load_npy(path / comp["A"]) if "A" in comp else None
                b = _load_npy(path / comp["B"]) if "B" in comp else None
                dot = _load_npy(path / comp["dot"]) if "dot" in comp else None
                pv = parts.pivot(index.graph, m, index.table)
                block.comps[comp["key"]] = (pv, a, b, dot, index.table)
            ann = entry.get("ann")
            if ann:
                faiss = _faiss()
                block.ann = {"key": ann["key"], "m": ann["m"], "ef_search": ann["ef_search"],
                             "recall@10": ann.get("recall@10"),
                             "recall@10 by preset": ann.get("recall@10 by preset", {}),
                             "graph": faiss.read_index(str(path / ann["graph"]))}
            if block.rows != entry["rows"]:
                raise IndexError_(f"{path}: {m} holds {block.rows} rows, index.json says "
                                  f"{entry['rows']}")
        index.path = path
        return index


# --- helpers --------------------------------------------------------------------------------
def _resolve_target(target, space_options):
    from freebind.fusion.fused import FusedSpace

    if isinstance(target, FusedSpace):
        ref = str(target.path.resolve()) if target.path is not None else target.name
        return ref, target, None
    if not isinstance(target, (str, os.PathLike)):
        if hasattr(target, "encode") and hasattr(target, "modalities"):
            return str(target.name), None, target
        raise UsageError(f"index target {target!r}: expected a bundle path or a space "
                         f"reference")
    from freebind.run.targets import open as open_target

    t = open_target(os.fspath(target), space_options=space_options)
    if t.is_bundle:
        return str(t.path.resolve()), t.fused, None
    return t.ref, None, t.space


def _as_list(specs) -> list:
    if specs is None:
        return []
    if isinstance(specs, str):
        return [specs]
    if isinstance(specs, Mapping):
        return [f"{k}={v}" for k, v in specs.items()]
    return list(specs)


def _parsed(overrides):
    from freebind.fusion.factors import as_overrides

    return as_overrides(list(overrides))


def _override_text(o) -> str:
    from freebind.fusion.factors import _text

    return o if isinstance(o, str) else _text(o)


def _components_in_chunks(graph, projectors, leaves, modality, table, chunk_rows=None):
    """:func:`parts.components` computed ``chunk_rows`` rows at a time (default: what the
    fusion memory budget allows, :func:`freebind.fusion.graph.fusion_chunk_rows`), so the
    projectors' activations never grow with the index."""
    from freebind.fusion.graph import fusion_chunk_rows

    # the index scores on the CPU: a bundle moved to a device is read through CPU copies
    projectors = OnDevice(projectors, "cpu")
    n = int(next(iter(next(iter(leaves.values())).values())).shape[0])
    step = max(1, int(chunk_rows or fusion_chunk_rows(projectors)))
    if n <= step:
        return parts.components(graph, projectors, leaves, modality, table)
    a_out = b_out = None
    for start in range(0, n, step):
        stop = min(n, start + step)
        sub = {r: {m: v[start:stop] for m, v in mods.items()} for r, mods in leaves.items()}
        a, b = parts.components(graph, projectors, sub, modality, table)
        if start == 0:
            a_out = None if a is None else _spill_array((n, a.shape[1]))
            b_out = None if b is None else _spill_array((n, b.shape[1]))
        if a is not None:
            a_out[start:stop] = a
        if b is not None:
            b_out[start:stop] = b
    return a_out, b_out


#: Arrays (leaves joined, components) larger than this live in an unlinked temporary file,
#: memory-mapped: the page cache holds them, not the process (an index of millions of rows).
SPILL_BYTES = 64 << 20


def _spill_array(shape, dtype=np.float32) -> np.ndarray:
    """A writable float array: in memory when small, else memory-mapped on an unlinked
    temporary file (removed by the OS when the last reference goes)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= SPILL_BYTES:
        return np.empty(shape, dtype=dtype)
    import tempfile

    fh = tempfile.TemporaryFile(prefix="freebind-index-")
    fh.truncate(max(1, nbytes))
    return np.memmap(fh, dtype=dtype, mode="r+", shape=shape)


def _rows(x, idx):
    """Rows ``idx`` of an array or a store view (a view stays a view)."""
    return x.subset(idx) if isinstance(x, PoolView) else x[idx]


def _cat(old, new):
    """Rows of ``old`` then ``new``: views joined without reading, arrays copied block by
    block into a spill array when large."""
    if old is None or new is None:
        return None
    if isinstance(old, PoolView) and isinstance(new, PoolView):
        return PoolView.concat([old, new])
    n_old, n_new = len(old), len(new)
    out = _spill_array((n_old + n_new,) + tuple(old.shape[1:]))
    for src, base in ((old, 0), (new, n_old)):
        for a in range(0, len(src), 65536):
            b = min(len(src), a + 65536)
            out[base + a:base + b] = np.asarray(src[a:b])
    return out


def _rowdot(a, b):
    if a is None or b is None:
        return None
    return np.einsum("ij,ij->i", a, b).astype(np.float32)


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` highest scores, best first (ties: lower row first)."""
    n = len(scores)
    if n <= k:
        return np.lexsort((np.arange(n), -scores))
    part = np.argpartition(-scores, k - 1)[:k]
    kth = scores[part].min()
    if np.count_nonzero(scores == kth) > np.count_nonzero(scores[part] == kth):
        # rows tied with the k-th score fall on both sides of the partition: the lower ones
        above = np.nonzero(scores > kth)[0]
        part = np.concatenate([above, np.nonzero(scores == kth)[0][:k - len(above)]])
    return part[np.lexsort((part, -scores[part]))]


#: the query projections remembered per index: queries of at most this many rows, this many
#: (group, query) entries
QUERY_MEMO_ROWS, QUERY_MEMO_ENTRIES = 8, 256


#: one query over more rows than this scans float16 copies first (below, the float32 scan
#: costs less than building them)
SCAN_MIN_ROWS = 20_000
_U16 = 2.0 ** -11      # float16 unit roundoff (round to nearest)
_ETA16 = 2.0 ** -25    # float16 absolute rounding error in the subnormal range


class _Scan:
    """Float16 copies of a block's components (half the memory read per query) and what the
    rounding error bound of a row needs: its components' norms."""

    def __init__(self, a, b):
        import torch

        self.a, self.b = a, b   # the arrays copied (a stale copy is rebuilt)
        self.half = {}
        self.norm = {}
        finite = True
        for side, x in (("a", a), ("b", b)):
            if x is None:
                continue
            # copied block by block (round to nearest, as torch's cast) into a spill array:
            # a large index's copies live in memory-mapped files, not in the process
            half = _spill_array(tuple(x.shape), np.float16)
            norm = np.empty(len(x), dtype=np.float64)
            for r0 in range(0, len(x), 65536):
                blk = np.asarray(x[r0:r0 + 65536], dtype=np.float32)
                half[r0:r0 + len(blk)] = blk
                finite = finite and bool(np.isfinite(half[r0:r0 + len(blk)]).all())
                norm[r0:r0 + len(blk)] = np.sqrt(np.einsum("ij,ij->i", blk, blk,
                                                           dtype=np.float64))
            self.half[side] = torch.from_numpy(half)
            self.norm[side] = norm
        self.ok = finite and _half_mv_accumulates_in_float32()

    def bound(self, side: str, dim: int) -> np.ndarray:
        """Per row: the largest difference between the float16 product of a unit query and
        the exact one (inputs and output rounded to float16, a float32 sum), with a margin."""
        x = self.norm[side]
        gamma = dim * 2.0 ** -24 / (1.0 - dim * 2.0 ** -24)
        eta = _ETA16
        return 1.25 * ((3.0 * _U16 + 1.1 * gamma) * x + 1.1 * eta * np.sqrt(dim) * (1.0 + x)
                       + dim * eta * eta) + 1e-7


_SCAN_LOCK = threading.Lock()


def _scan_topk(block, key, q, a, b, dot, f, k):
    """Exact top ``k`` of ``parts.scores(q, a, b, dot, f)`` (the same rows in the same order,
    the same float32 scores) from a float16 scan: every row's float16 score is within a
    proven bound of its exact one, so the rows that can reach the top ``k`` are those whose
    upper bound reaches the ``k``-th best lower bound; only they are scored in float32.
    ``(None, None)`` when the float16 scan does not apply (the caller scans in float32)."""
    import torch

    qn = float(np.linalg.norm(q))
    if not np.isfinite(qn) or qn == 0.0 or not np.isfinite(f):
        return None, None
    scan = block.scans.get(key)
    if scan is None or scan.a is not a or scan.b is not b:
        with _SCAN_LOCK:    # built once, however many searches arrive together
            scan = block.scans.get(key)
            if scan is None or scan.a is not a or scan.b is not b:
                scan = block.scans[key] = _Scan(a, b)
    if not scan.ok:
        return None, None
    u = np.asarray(q, dtype=np.float32) / np.float32(qn)
    uh = torch.from_numpy(u).to(torch.float16)
    dim = len(u)
    sides = [("a", 1.0)] if (f == 0.0 or b is None) else [("b", 1.0)] \
        if (f == 1.0 or a is None) else [("a", 1.0 - f), ("b", f)]
    approx = None
    err = None
    for side, w in sides:
        part = torch.mv(scan.half[side], uh).numpy().astype(np.float64)
        approx = w * part if approx is None else approx + w * part
        e = w * scan.bound(side, dim)
        err = e if err is None else err + e
    if len(sides) == 2:
        norm = np.sqrt((1.0 - f) ** 2 + f ** 2 + 2.0 * f * (1.0 - f)
                       * dot.astype(np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            approx, err = approx / norm, err / norm
    lower = approx - err
    if not np.isfinite(lower).all():
        return None, None
    tau = np.partition(lower, len(lower) - k)[len(lower) - k]
    cand = np.nonzero(approx + err >= tau)[0]
    s = parts.scores(q, None if a is None else a[cand], None if b is None else b[cand],
                     None if dot is None else dot[cand], f)
    order = _topk(s, k)
    # ties: lower row first, as _topk over every row orders them
    order = order[np.lexsort((cand[order], -s[order]))]
    return cand[order], s[order]


_HALF_MV_OK: list = []


def _half_mv_accumulates_in_float32() -> bool:
    """Whether torch's float16 matrix–vector product sums in float32 and rounds once (the
    scan's error bound assumes it): on 64 random positive rows of 4096 terms every result
    is within one float16 rounding of the exact sum, which float16 sums would not reach."""
    if not _HALF_MV_OK:
        import torch

        rng = np.random.default_rng(0)
        x = rng.random((64, 4096)).astype(np.float16)
        v = rng.random(4096).astype(np.float16)
        exact = x.astype(np.float64) @ v.astype(np.float64)
        got = torch.mv(torch.from_numpy(x), torch.from_numpy(v)).numpy().astype(np.float64)
        _HALF_MV_OK.append(bool((np.abs(got - exact) <= 1.001 * _U16 * exact).all()))
    return _HALF_MV_OK[0]


@contextmanager
def _few_threads(rows: int):
    """One torch thread for a few query rows: their projections are tiny, and on a busy
    machine waiting for a second thread costs more than the work."""
    import torch

    if rows > 8 or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UsageError("approximate search needs faiss (pip install 'freebind[search]' or "
                         "faiss-cpu)") from None
    return faiss


def _save_npy(path: Path, arr) -> None:
    """An ``.npy`` of ``arr`` (an array, a memory map or a store view), written block by
    block (atomic; the bytes of ``np.save``)."""
    if isinstance(arr, np.ndarray) and not isinstance(arr, np.memmap):
        def write(tmp):
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
    else:
        def write(tmp):
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=tuple(arr.shape))
            for a in range(0, len(arr), 65536):
                b = min(len(arr), a + 65536)
                out[a:b] = np.asarray(arr[a:b])
            out.flush()
            del out

    atomic_write(path, write)


def _load_npy(path: Path) -> np.ndarray:
    """An index file: memory-mapped when large (read through the page cache)."""
    try:
        big = path.stat().st_size > SPILL_BYTES
        return np.load(path, allow_pickle=False, mmap_mode="r" if big else None)
    except (OSError, ValueError) as exc:
        raise IndexError_(f"{path}: cannot read ({exc})") from None


def _abs(p: str) -> str:
    """Metadata paths as absolute paths (relative ones are taken from the working folder)."""
    q = Path(p)
    return str(q) if q.is_absolute() or not q.exists() else str(q.resolve())


def _item_name(item) -> str:
    return item if isinstance(item, str) else os.fspath(item)


def _query_key(modality: str, item) -> str:
    if modality == "text":
        return str(item)
    from freebind.data.store import file_key

    try:
        return file_key(item)
    except MediaError as exc:
        raise UsageError(f"query: {exc}") from None
