"""Factor-aware search over a vector database: ``freebind index --to URI`` writes what the
fusion needs per item into LanceDB, Qdrant or Milvus (URIs: :mod:`freebind.run.sinks`), and
:class:`DatabaseIndex` (``freebind.Index.open(URI)``, ``freebind search URI``) searches it
under any factors or preset.

Per item the collection holds, besides the sink's ``key``/``modality``/``path``/``caption``
(the text of a text item) and the local index's ``id``:

* ``vector``: the fused row under the index's factors (what other clients search);
* ``a``, ``b``, ``dot``: the two components at the modality's pivot bond and their inner
  product (:mod:`freebind.search.parts`; a side the modality lacks is zeros);
* ``leaf_<i>``: the item's base-space embeddings (zeros for a space of another modality),
  from which the components under other switches are recomputed.

A query under factors F gets candidates from the database: the top ``candidates`` rows by
``q·vector``, ``q·a`` and ``q·b`` (any fused row is a normalised mix of a and b, so an item
high under F is high on one side). Freebind then scores the candidates exactly, from the
stored components when F leaves them as stored (only the pivot's factor moves), else from
components recomputed from the stored base embeddings (projectors only, candidates only).
Recall@10 against the exact local index is measured when the collection is written.
"""

from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import numpy as np

from freebind.run.sinks import BASE_SCALARS, connect, check_meta, is_uri, parse
from freebind.search import parts
from freebind.search.index import (OPENERS, Hit, Index, _as_list, _override_text, _parsed,
                                   _topk)
from freebind.util.errors import UsageError

FORMAT = "freebind-index-db"
SCALARS = {**BASE_SCALARS, "id": "int", "dot": "float"}
#: rows written per upsert
CHUNK = 512
#: candidates per searched column: at least this many, and ``CANDIDATE_FACTOR`` × k
MIN_CANDIDATES, CANDIDATE_FACTOR = 40, 4

__all__ = ["DatabaseIndex", "write_index", "measure_recall", "index_to", "is_uri", "parse"]


def item_key(modality: str, item: Mapping) -> str:
    """The content key of an indexed item (the embedding store's: a file's bytes, a text's
    characters; what ``embed --to`` keys rows by); an item that cannot be read is keyed by
    its modality and path."""
    from freebind.data.store import text_key
    from freebind.util.errors import MediaError

    if modality == "text":
        return text_key(str(item.get("text") or item["path"]))
    try:
        return _file_key(item["path"])
    except MediaError:
        return hashlib.sha256(f"{modality}\0{item['path']}".encode()).hexdigest()


def _file_key(path: str) -> str:
    from freebind.data.store import file_key

    if "::" in path:
        from freebind.data.readers import member_key

        k = member_key(path)
        if k is not None:
            return k
    return file_key(path)


def _layout(index: Index) -> dict:
    """The collection's vector columns and, per modality, its components' key and leaves."""
    refs = list(dict.fromkeys(r for b in index.blocks.values() for r in b.refs))
    leaf_cols = {r: f"leaf_{i}" for i, r in enumerate(refs)}
    dims = {}
    for b in index.blocks.values():
        for r in b.refs:
            if b.leaves[r] is not None:
                dims[leaf_cols[r]] = int(b.leaves[r].shape[1])
    mods = {}
    for m, block in index.blocks.items():
        pv = parts.pivot(index.graph, m, index.table)
        mods[m] = {"key": parts.key(index.graph, m, index.table), "rows": block.rows,
                   "has_a": pv.has_a,
                   "has_b": pv.has_b and not pv.routed and pv.bond is not None,
                   "leaves": {r: leaf_cols[r] for r in block.refs}}
    return {"vectors": {"vector": index.dim, "a": index.dim, "b": index.dim, **dims},
            "leaf_columns": leaf_cols, "modalities": mods}


def index_meta(index: Index) -> dict:
    fp = index.fused.weights_fingerprint if index.fused is not None \
        else str(index.space.fingerprint)
    return {"format": FORMAT, "kind": "index", "target": index.ref,
            "expression": index.name, "dim": index.dim, "weights_fingerprint": fp,
            "factors": [_override_text(o) for o in _parsed(index.overrides)],
            "preset": index.preset, **_layout(index)}


def write_index(index: Index, uri: str, *, store=None, progress: bool = False) -> dict:
    """Upsert every item of ``index`` into the collection ``uri`` (items it holds, by
    content key, are skipped: a killed write resumes). Returns ``{"written", "present",
    "rows"}``."""
    from freebind.util.progress import bar

    meta = index_meta(index)
    sink = connect(uri)
    report = {"written": 0, "present": 0, "rows": 0}
    try:
        check_meta(sink, meta, ("kind", "target", "weights_fingerprint", "factors",
                                "preset", "vectors"))
        if not sink.exists():
            sink.create(meta["vectors"], SCALARS)
        old = sink.read_meta() or {}
        merged = dict(meta)
        merged["modalities"] = {**old.get("modalities", {}), **meta["modalities"]}
        sink.write_meta(merged)
        total = sum(b.rows for b in index.blocks.values())
        with bar(total=total, desc=f"writing {sink.uri.text}", disable=not progress) as pb:
            for m, block in index.blocks.items():
                for start in range(0, block.rows, CHUNK):
                    n = _write_rows(index, sink, block, meta, start, store, report)
                    pb.update(n)
        report["rows"] = sink.count()
    finally:
        sink.close()
    return report


def _write_rows(index, sink, block, meta, start, store, report) -> int:
    m = block.modality
    stop = min(block.rows, start + CHUNK)
    ids = np.asarray(block.ids[start:stop])
    items = [index.items[int(i)] for i in ids]
    keys = [item_key(m, it) for it in items]
    have = sink.present(list(dict.fromkeys(keys)))
    report["present"] += len(have)
    _, pv, a, b, dot = index._components(block, index.table)
    f0 = parts.mix(pv, index.table, m) or 0.0
    zeros = np.zeros(index.dim, dtype=np.float32)
    sl = slice(start, stop)
    A = None if a is None else np.asarray(a[sl], np.float32)
    B = None if b is None else np.asarray(b[sl], np.float32)
    D = None if dot is None else np.asarray(dot[sl], np.float32)
    fused = parts.fused_rows(A, B, D, f0) if (A is not None or B is not None) else None
    leaves = {meta["leaf_columns"][r]: np.asarray(block.leaves[r][sl], np.float32)
              for r in block.refs}
    rows, seen = [], set(have)
    for j, (it, k) in enumerate(zip(items, keys)):
        if k in seen:
            continue
        seen.add(k)
        row = {"key": k, "modality": m, "path": it["path"], "caption": it.get("text") or "",
               "id": int(ids[j]), "dot": float(D[j]) if D is not None else 0.0,
               "vector": fused[j] if fused is not None else zeros,
               "a": A[j] if A is not None else zeros, "b": B[j] if B is not None else zeros}
        for col, d in meta["vectors"].items():
            if col.startswith("leaf_"):
                row[col] = leaves[col][j] if col in leaves else np.zeros(d, np.float32)
        rows.append(row)
    sink.upsert(rows)
    report["written"] += len(rows)
    return stop - start


class DatabaseIndex:
    """A collection written by :func:`write_index`, searched under any factors: candidates
    from the database, exact scores from freebind. The same ``search``/``search_many`` as
    :class:`freebind.Index` (hits' ``id`` is the item's id in the local index written)."""

    def __init__(self, uri: str, *, space_options: Mapping | None = None, store=None):
        self.uri = uri
        self.sink = connect(uri)
        meta = self.sink.read_meta()
        if meta is None or meta.get("format") != FORMAT:
            what = "written by `freebind embed --to` (vectors only)" if meta else \
                "not a freebind index"
            self.sink.close()
            raise UsageError(f"{uri}: {what}; write one with `freebind index EMBED_DIR "
                             f"--to {uri}`")
        self.meta = meta
        self.shell = Index(meta["target"], meta.get("factors") or (), None,
                           space_options=space_options, store=store)
        self.shell.preset = meta.get("preset")
        self.shell.table = self.shell._table()
        fp = self.shell.fused.weights_fingerprint if self.shell.fused is not None \
            else str(self.shell.space.fingerprint)
        if fp != meta.get("weights_fingerprint"):
            self.sink.close()
            raise UsageError(f"{uri}: {meta['target']} has changed since it was indexed "
                             f"(fingerprint {fp} ≠ {meta.get('weights_fingerprint')}); "
                             f"index it again")
        self.dim, self.name = self.shell.dim, self.shell.name
        self.presets = self.shell.presets

    @classmethod
    def open(cls, uri: str, **kw) -> "DatabaseIndex":
        return cls(uri, **kw)

    @property
    def modalities(self) -> list[str]:
        return [m for m in self.meta["modalities"] if self.meta["modalities"][m]["rows"]]

    def info(self) -> dict:
        return {"target": self.meta["target"], "expression": self.name, "dim": self.dim,
                "uri": self.uri, "items": self.sink.count(),
                "modalities": {m: e["rows"] for m, e in self.meta["modalities"].items()},
                "factors": self.meta.get("factors"), "preset": self.meta.get("preset"),
                "presets": sorted(self.presets)}

    def close(self) -> None:
        self.sink.close()

    def search(self, query=None, *, modality: str | None = None, k: int = 10,
               query_modality: str = "text", factors=None, preset: str | None = None,
               vector=None, candidates: int | None = None) -> list[Hit]:
        """Top-``k`` items for one query (as :meth:`freebind.Index.search`)."""
        return self.search_many([query] if vector is None else [None], modality=modality,
                                k=k, query_modality=query_modality, factors=factors,
                                preset=preset, candidates=candidates,
                                vectors=None if vector is None else
                                np.asarray(vector, dtype=np.float32)[None, :])[0]

    def search_many(self, queries: Sequence, *, modality: str | None = None, k: int = 10,
                    query_modality: str = "text", factors=None, preset: str | None = None,
                    vectors=None, candidates: int | None = None, exact: bool = False
                    ) -> list[list[Hit]]:
        """:meth:`search` for several queries (``exact`` is accepted for the CLI's sake:
        candidates always come from the database)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise UsageError(f"k={k!r}: expected a positive whole number")
        table = self.shell._table(factors, preset)
        mods = self.modalities if modality is None else [modality]
        for m in mods:
            if m not in self.modalities:
                raise UsageError(f"{self.uri} holds no {m} items (it holds "
                                 f"{', '.join(self.modalities) or 'nothing'})")
        if vectors is None:
            q = self.shell._query_vectors(query_modality, list(queries), table)
        else:
            q = np.asarray(vectors, dtype=np.float32)
            if q.ndim != 2 or q.shape[1] != self.dim:
                raise UsageError(f"query vectors: expected [Q, {self.dim}], got "
                                 f"{list(q.shape)}")
        n = int(candidates or max(MIN_CANDIDATES, CANDIDATE_FACTOR * k))
        out = []
        for qi in range(len(q)):
            hits = []
            for m in mods:
                hits += self._search_modality(q[qi], m, table, k, n)
            hits.sort(key=lambda h: (-h[0], h[1]))
            out.append([Hit(i, m, p, s, r + 1, t or None)
                        for r, (s, i, m, p, t) in enumerate(hits[:k])])
        return out

    def _search_modality(self, q, m, table, k, n) -> list[tuple]:
        entry = self.meta["modalities"][m]
        pv = parts.pivot(self.shell.graph, m, table)
        f = parts.mix(pv, table, m)
        if f is None:
            return []
        cols = ["vector"] + (["a"] if entry["has_a"] else []) + (["b"] if entry["has_b"]
                                                                 else [])
        cand = list(dict.fromkeys(key for c in cols
                                  for key in self.sink.search(c, q, n, modality=m)))
        if not cand:
            return []
        same = parts.key(self.shell.graph, m, table) == entry["key"]
        want = ["id", "path", "caption", "dot", "a", "b"] if same else \
            ["id", "path", "caption", *entry["leaves"].values()]
        rows = self.sink.fetch(cand, want)
        cand = [c for c in cand if c in rows]
        a, b, dot = self._components(m, [rows[c] for c in cand], table, pv, same)
        s = parts.scores(q, a, b, dot, f)
        return [(float(s[j]), int(rows[cand[j]]["id"]), m, str(rows[cand[j]]["path"]),
                 rows[cand[j]].get("caption")) for j in _topk(s, k)]

    def _components(self, m, rows, table, pv, same):
        if same:
            a = np.stack([np.asarray(r["a"], np.float32) for r in rows]) if pv.has_a else None
            b = np.stack([np.asarray(r["b"], np.float32) for r in rows]) if pv.has_b else None
            dot = np.asarray([r["dot"] for r in rows], np.float32)
            if pv.routed or pv.bond is None:
                b = None
            return a, b, dot
        from freebind.fusion.devices import OnDevice

        leaves = {ref: {m: np.stack([np.asarray(r[col], np.float32) for r in rows])}
                  for ref, col in self.meta["modalities"][m]["leaves"].items()}
        a, b = parts.components(self.shell.graph, OnDevice(self.shell.projectors, "cpu"),
                                leaves, m, table)
        dot = None if a is None or b is None else np.einsum("ij,ij->i", a, b)
        return a, b, dot


OPENERS.append((is_uri, DatabaseIndex))


def recall_settings(index: Index) -> list[tuple[str, list, str | None]]:
    """``(label, factors, preset)`` the recall is measured under: the index's own factors,
    each stored preset, and (two bonds or more) the first bond switched off, which moves the
    components the database holds (they are recomputed from the stored base embeddings)."""
    out = [("index factors", [], None)]
    out += [(f"preset {p}", [], p) for p in sorted(index.presets) if p != "default"]
    if index.fused is not None:
        from freebind.algebra.compile import bond_nodes

        bonds = bond_nodes(index.graph)
        if len(bonds) >= 2:
            out.append((f"{bonds[0]['id']}=off", [f"{bonds[0]['id']}=off"], None))
    return out


def measure_recall(index: Index, db: DatabaseIndex, *, n: int = 50, k: int = 10,
                   settings=None) -> dict[str, float]:
    """Recall@``k`` of ``db`` against exact search of ``index`` (the same items), per
    setting (:func:`recall_settings`): ``n`` items' fused vectors under the setting as
    queries, every modality searched; items compared by path and modality."""
    rng = np.random.default_rng(0)
    out = {}
    for label, factors, preset in settings or recall_settings(index):
        table = index._table(factors, preset)
        queries = []
        for m, block in index.blocks.items():
            _, pv, a, b, dot = index._components(block, table)
            f = parts.mix(pv, table, m)
            if f is None or not block.rows:
                continue
            rows = parts.fused_rows(a, b, dot, f)
            pick = rng.choice(block.rows, size=min(n, block.rows), replace=False)
            queries += [np.asarray(rows[i], np.float32) for i in pick]
        hits = total = 0
        for qv in queries:
            exact = index.search(vector=qv, k=k, factors=factors or None, preset=preset,
                                 exact=True)
            got = db.search(vector=qv, k=k, factors=factors or None, preset=preset)
            want = {(h.modality, h.path) for h in exact}
            hits += len(want & {(h.modality, h.path) for h in got})
            total += len(want)
        out[label] = hits / total if total else float("nan")
    return out


def index_to(embed_dirs: Sequence, uri: str, *, target: str | None = None,
             factors: Sequence[str] = (), preset: str | None = None, store=None,
             batch_size: int = 64, progress: bool = True,
             space_options: Mapping | None = None, recall_queries: int = 20) -> dict:
    """``freebind index EMBED_DIR... --to URI``: index the embed folders in memory, upsert
    every item into the collection, and measure the database search's recall@10 against
    the exact local index under several factor settings (``recall_queries`` items of each
    modality as queries; 0: not measured). Returns the report."""
    from pathlib import Path

    from freebind.run.sinks import require
    from freebind.search.indexing import add_folders, embed_ref, embed_target

    require(uri)   # the engine's package, before any work
    dirs = [Path(d) for d in embed_dirs]
    if not dirs:
        raise UsageError("give at least one folder written by `freebind embed`")
    for d in dirs:
        embed_target(d)
    ref = target or embed_ref(dirs[0])
    index = Index(ref, _as_list(factors), preset, space_options=space_options, store=store)
    report = add_folders(index, dirs, store=store, batch_size=batch_size, progress=progress)
    written = write_index(index, uri, store=None, progress=progress)
    recall = {}
    if recall_queries:
        db = DatabaseIndex(uri, space_options=space_options, store=store)
        try:
            recall = measure_recall(index, db, n=recall_queries)
        finally:
            db.close()
    return {"uri": uri, "target": index.ref, "expression": index.name,
            "items": len(index.items),
            "modalities": {m: b.rows for m, b in index.blocks.items()},
            **written, **report, "recall@10": recall}
