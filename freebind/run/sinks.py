"""Vector databases as the destination of ``freebind embed --to URI``: LanceDB, Qdrant and
Milvus, embedded or as a server. One collection holds one row per item, keyed by the item's
content key (the embedding store's key: a file's bytes, a text's characters), so a write is
an idempotent upsert and a killed run resumes where it stopped: a re-run reads which keys
the collection holds and embeds only the others.

URIs::

    lancedb:PATH[#TABLE]                 an embedded LanceDB folder (table ``freebind``)
    qdrant:PATH#COLLECTION               Qdrant local mode (a folder)
    qdrant+http://HOST:PORT#COLLECTION   a Qdrant server (https too)
    milvus:PATH.db#COLLECTION            Milvus Lite (a file; a local server process)
    milvus+http://HOST:PORT#COLLECTION   a Milvus server (https too)

A row holds ``key``, ``modality``, ``path`` (the source: a file, ``FILE:LINE``, a locator),
``caption`` (a text item's text; for a file, its sidecar ``STEM.txt`` when there is one), an
input table's other columns (:class:`TableMetadata`) and the vectors: ``vector`` under the
run's factors, and for a bundle one ``vector_<preset>`` per stored preset (Qdrant named
vectors; extra vector columns in LanceDB and Milvus), so a preset is picked at query time
with the database's own client. Vectors are unit rows, the
metric is the inner product. A companion ``<COLLECTION>__freebind`` table holds what the
collection is (target, fingerprint, factors, vector columns), so a run of another target
or other factors into it is refused.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from freebind.util.errors import MediaError, UsageError

#: engine -> (module to import, the extra that installs it)
EXTRAS = {"lancedb": ("lancedb", "freebind[lancedb]"),
          "qdrant": ("qdrant_client", "freebind[qdrant]"),
          "milvus": ("pymilvus", "freebind[milvus]")}
_URI = re.compile(r"(lancedb|qdrant|milvus)(\+https?)?:(.*)", re.S)
DEFAULT_TABLE = "freebind"
META_SUFFIX = "__freebind"
#: scalar columns every collection has (name -> kind)
BASE_SCALARS = {"key": "str", "modality": "str", "path": "str", "caption": "str"}
#: rows read, embedded and upserted at a time (the most a killed run recomputes)
CHUNK_ROWS = 512


@dataclass(frozen=True)
class SinkURI:
    """A parsed URI: ``engine``, ``location`` (a path, or ``http(s)://HOST:PORT``),
    ``collection`` and whether it names a server."""

    engine: str
    location: str
    collection: str
    remote: bool
    text: str


def is_uri(text: Any) -> bool:
    """Whether ``text`` names a vector database (``lancedb:``, ``qdrant:``, ``milvus:``…)."""
    return isinstance(text, str) and _URI.fullmatch(text) is not None \
        and not Path(text).exists()


def parse(uri: str) -> SinkURI:
    """The parts of a sink URI (a bad one refused in one line saying what is expected)."""
    m = _URI.fullmatch(str(uri))
    if m is None:
        raise UsageError(f"{uri}: not a vector database URI; use lancedb:PATH[#TABLE], "
                         f"qdrant:PATH#COLLECTION, qdrant+http://HOST:PORT#COLLECTION, "
                         f"milvus:PATH.db#COLLECTION or milvus+http://HOST:PORT#COLLECTION")
    engine, scheme, rest = m.group(1), m.group(2), m.group(3)
    where, _, coll = rest.partition("#")
    if engine == "lancedb" and scheme:
        raise UsageError(f"{uri}: LanceDB is embedded here; use lancedb:PATH[#TABLE]")
    if not where:
        raise UsageError(f"{uri}: no {'address' if scheme else 'path'} before '#'")
    if not coll:
        if engine != "lancedb":
            raise UsageError(f"{uri}: name the collection after '#' ({engine}:…#COLLECTION)")
        coll = DEFAULT_TABLE
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,200}", coll):
        raise UsageError(f"{uri}: collection {coll!r}: use letters, digits and '_' (a letter "
                         f"or '_' first), as every engine accepts")
    if engine == "milvus" and not scheme and not where.endswith(".db"):
        raise UsageError(f"{uri}: Milvus Lite keeps a file named *.db (milvus:PATH.db#…)")
    location = f"{scheme[1:]}:{where}" if scheme else where
    return SinkURI(engine, location, coll, bool(scheme), str(uri))


def require(uri: str | SinkURI) -> SinkURI:
    """The parsed URI, once the engine's client imports (else one line naming the extra)."""
    from freebind.util.optional import require as need

    u = uri if isinstance(uri, SinkURI) else parse(uri)
    module, extra = EXTRAS[u.engine]
    need(module, f"writing to {u.text}", install=f"'{extra}'")
    return u


def column_name(preset: str) -> str:
    """The vector column of a preset: ``vector_<preset>`` with what is not a letter, a digit
    or '_' as '_' (every engine's field-name rule)."""
    return "vector_" + re.sub(r"[^A-Za-z0-9_]", "_", preset)


def point_id(key: str) -> str:
    """A Qdrant point id (a UUID) from a content key (64 hex digits, or any text)."""
    hexed = key if re.fullmatch(r"[0-9a-f]{32,}", key) else \
        __import__("hashlib").sha256(key.encode()).hexdigest()
    return str(uuid.UUID(hex=hexed[:32]))


# --- the engines ------------------------------------------------------------------------

class Sink:
    """One collection of one engine: create, which keys it holds, upsert, search, fetch."""

    def __init__(self, uri: SinkURI):
        self.uri = uri
        self.name = uri.collection

    # every engine implements these
    def exists(self) -> bool: ...
    def create(self, vectors: Mapping[str, int], scalars: Mapping[str, str]) -> None: ...
    def present(self, keys: Sequence[str]) -> set[str]: ...
    def upsert(self, rows: list[dict]) -> None: ...
    def search(self, column: str, q: np.ndarray, limit: int,
               modality: str | None = None) -> list[str]: ...
    def fetch(self, keys: Sequence[str], columns: Sequence[str]) -> dict[str, dict]: ...
    def count(self) -> int: ...
    def read_meta(self) -> dict | None: ...
    def write_meta(self, meta: dict) -> None: ...

    def close(self) -> None:
        pass


def _in_list(keys: Iterable[str]) -> str:
    return ", ".join("'" + k.replace("'", "''") + "'" for k in keys)


class LanceSink(Sink):
    def __init__(self, uri: SinkURI):
        super().__init__(uri)
        import lancedb

        self.db = lancedb.connect(uri.location)
        self._table = None

    def _names(self) -> list[str]:
        got = self.db.list_tables() if hasattr(self.db, "list_tables") else self.db.table_names()
        return list(getattr(got, "tables", got))

    @property
    def table(self):
        if self._table is None:
            self._table = self.db.open_table(self.name)
        return self._table

    def exists(self) -> bool:
        return self.name in self._names()

    def create(self, vectors, scalars):
        import pyarrow as pa

        kinds = {"str": pa.string(), "int": pa.int64(), "float": pa.float32()}
        fields = [(n, kinds[k]) for n, k in scalars.items()]
        fields += [(n, pa.list_(pa.float32(), int(d))) for n, d in vectors.items()]
        self._table = self.db.create_table(self.name, schema=pa.schema(fields),
                                           exist_ok=True)

    def present(self, keys):
        out = set()
        for i in range(0, len(keys), CHUNK_ROWS):
            part = keys[i:i + CHUNK_ROWS]
            rows = self.table.search().where(f"key IN ({_in_list(part)})") \
                .select(["key"]).limit(len(part)).to_list()
            out |= {r["key"] for r in rows}
        return out

    def upsert(self, rows):
        if rows:
            self.table.merge_insert("key").when_matched_update_all() \
                .when_not_matched_insert_all().execute(rows)

    def search(self, column, q, limit, modality=None):
        s = self.table.search(np.asarray(q, dtype=np.float32), vector_column_name=column) \
            .distance_type("dot")
        if modality is not None:
            s = s.where(f"modality = '{modality}'", prefilter=True)
        return [r["key"] for r in s.select(["key"]).limit(int(limit)).to_list()]

    def fetch(self, keys, columns):
        out = {}
        for i in range(0, len(keys), CHUNK_ROWS):
            part = list(keys[i:i + CHUNK_ROWS])
            rows = self.table.search().where(f"key IN ({_in_list(part)})") \
                .select(["key", *columns]).limit(len(part)).to_list()
            out.update({r["key"]: r for r in rows})
        return out

    def count(self):
        return int(self.table.count_rows())

    def read_meta(self):
        name = self.name + META_SUFFIX
        if name not in self._names():
            return None
        rows = self.db.open_table(name).search().limit(1).to_list()
        return json.loads(rows[0]["json"]) if rows else None

    def write_meta(self, meta):
        import pyarrow as pa

        data = pa.table({"key": ["meta"], "json": [json.dumps(meta)]})
        self.db.create_table(self.name + META_SUFFIX, data=data, mode="overwrite")


class QdrantSink(Sink):
    def __init__(self, uri: SinkURI):
        super().__init__(uri)
        from qdrant_client import QdrantClient

        if uri.remote:
            self.client = QdrantClient(url=uri.location)
        else:
            Path(uri.location).mkdir(parents=True, exist_ok=True)
            self.client = QdrantClient(path=uri.location)

    def exists(self):
        return bool(self.client.collection_exists(self.name))

    def create(self, vectors, scalars):
        from qdrant_client import models as M

        self.client.create_collection(self.name, vectors_config={
            n: M.VectorParams(size=int(d), distance=M.Distance.DOT)
            for n, d in vectors.items()})
        if self.uri.remote:   # local mode has no payload indexes (it filters by scanning)
            self.client.create_payload_index(self.name, "modality", "keyword")

    def present(self, keys):
        ids = {point_id(k): k for k in keys}
        out = set()
        items = list(ids)
        for i in range(0, len(items), CHUNK_ROWS):
            got = self.client.retrieve(self.name, items[i:i + CHUNK_ROWS],
                                       with_payload=["key"], with_vectors=False)
            out |= {p.payload["key"] for p in got}
        return out

    def upsert(self, rows):
        from qdrant_client import models as M

        if not rows:
            return
        points = []
        for r in rows:
            vec = {k: np.asarray(v, dtype=np.float32).tolist() for k, v in r.items()
                   if _is_vector(v)}
            payload = {k: v for k, v in r.items() if not _is_vector(v)}
            points.append(M.PointStruct(id=point_id(r["key"]), vector=vec, payload=payload))
        self.client.upsert(self.name, points, wait=True)

    def search(self, column, q, limit, modality=None):
        from qdrant_client import models as M

        flt = None if modality is None else M.Filter(must=[M.FieldCondition(
            key="modality", match=M.MatchValue(value=modality))])
        got = self.client.query_points(self.name, query=np.asarray(q, np.float32).tolist(),
                                       using=column, limit=int(limit), query_filter=flt,
                                       with_payload=["key"])
        return [p.payload["key"] for p in got.points]

    def fetch(self, keys, columns):
        ids = [point_id(k) for k in keys]
        out = {}
        for i in range(0, len(ids), CHUNK_ROWS):
            got = self.client.retrieve(self.name, ids[i:i + CHUNK_ROWS], with_payload=True,
                                       with_vectors=True)
            for p in got:
                row = dict(p.payload)
                row.update(p.vector or {})
                out[row["key"]] = {c: row.get(c) for c in ["key", *columns]}
        return out

    def count(self):
        return int(self.client.count(self.name, exact=True).count)

    def read_meta(self):
        name = self.name + META_SUFFIX
        if not self.client.collection_exists(name):
            return None
        got = self.client.retrieve(name, [point_id("meta")], with_payload=True)
        return json.loads(got[0].payload["json"]) if got else None

    def write_meta(self, meta):
        from qdrant_client import models as M

        name = self.name + META_SUFFIX
        if not self.client.collection_exists(name):
            self.client.create_collection(name, vectors_config={})
        self.client.upsert(name, [M.PointStruct(id=point_id("meta"), vector={},
                                                payload={"json": json.dumps(meta)})])

    def close(self):
        self.client.close()


class MilvusSink(Sink):
    #: VARCHAR lengths of the scalar columns (Milvus needs one)
    LENGTHS = {"key": 256, "modality": 16, "path": 4096, "caption": 8192, "json": 65535}

    def __init__(self, uri: SinkURI):
        super().__init__(uri)
        from pymilvus import MilvusClient

        if not uri.remote:
            Path(uri.location).parent.mkdir(parents=True, exist_ok=True)
        self.client = MilvusClient(uri.location)
        self._loaded: set[str] = set()

    def _ready(self, name: str) -> str:
        """``name``, loaded (a collection of an earlier process starts released)."""
        if name not in self._loaded:
            self.client.load_collection(name)
            self._loaded.add(name)
        return name

    def exists(self):
        return bool(self.client.has_collection(self.name))

    def _create(self, name, vectors, scalars):
        from pymilvus import DataType

        s = self.client.create_schema(auto_id=False, enable_dynamic_field=True)
        kinds = {"int": DataType.INT64, "float": DataType.FLOAT}
        for n, k in scalars.items():
            if k == "str":
                s.add_field(n, DataType.VARCHAR, is_primary=n == "key",
                            max_length=self.LENGTHS.get(n, 8192))
            else:
                s.add_field(n, kinds[k])
        ip = self.client.prepare_index_params()
        for n, d in vectors.items():
            s.add_field(n, DataType.FLOAT_VECTOR, dim=int(d))
            ip.add_index(n, index_type="AUTOINDEX" if self.uri.remote else "FLAT",
                         metric_type="IP")
        self.client.create_collection(name, schema=s, index_params=ip)
        self._loaded.add(name)

    def create(self, vectors, scalars):
        self._create(self.name, vectors, scalars)

    def present(self, keys):
        out = set()
        for i in range(0, len(keys), CHUNK_ROWS):
            part = keys[i:i + CHUNK_ROWS]
            got = self.client.query(self._ready(self.name),
                                    filter=f"key in {json.dumps(list(part))}",
                                    output_fields=["key"])
            out |= {r["key"] for r in got}
        return out

    def upsert(self, rows):
        if rows:
            self.client.upsert(self._ready(self.name), [{k: (np.asarray(v, np.float32).tolist()
                                                if _is_vector(v) else v)
                                            for k, v in r.items()} for r in rows])

    def search(self, column, q, limit, modality=None):
        got = self.client.search(self._ready(self.name), [np.asarray(q, np.float32).tolist()],
                                 anns_field=column, limit=int(limit),
                                 filter="" if modality is None else
                                 f'modality == "{modality}"',
                                 search_params={"metric_type": "IP"}, output_fields=["key"])
        return [h["entity"]["key"] if "entity" in h else h["key"] for h in got[0]]

    def fetch(self, keys, columns):
        out = {}
        for i in range(0, len(keys), CHUNK_ROWS):
            part = list(keys[i:i + CHUNK_ROWS])
            got = self.client.query(self._ready(self.name), filter=f"key in {json.dumps(part)}",
                                    output_fields=["key", *columns])
            out.update({r["key"]: dict(r) for r in got})
        return out

    def count(self):
        got = self.client.query(self._ready(self.name), filter="", output_fields=["count(*)"])
        return int(got[0]["count(*)"])

    def read_meta(self):
        name = self.name + META_SUFFIX
        if not self.client.has_collection(name):
            return None
        got = self.client.query(self._ready(name), filter='key == "meta"', output_fields=["json"])
        return json.loads(got[0]["json"]) if got else None

    def write_meta(self, meta):
        name = self.name + META_SUFFIX
        if not self.client.has_collection(name):
            self._create(name, {"unused": 2}, {"key": "str", "json": "str"})
        self.client.upsert(self._ready(name), [{"key": "meta", "json": json.dumps(meta),
                                   "unused": [0.0, 0.0]}])

    def close(self):
        self.client.close()


def _is_vector(v) -> bool:
    return isinstance(v, np.ndarray) or (isinstance(v, list) and v and
                                         isinstance(v[0], float))


SINKS = {"lancedb": LanceSink, "qdrant": QdrantSink, "milvus": MilvusSink}


def connect(uri: str | SinkURI) -> Sink:
    """The collection a URI names (its engine's client imported, or the extra named)."""
    u = require(uri)
    try:
        return SINKS[u.engine](u)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001  (each client raises its own types)
        from freebind.util.text import first_line

        raise UsageError(f"{u.text}: cannot open ({type(exc).__name__}: "
                         f"{first_line(str(exc))})") from None


def check_meta(sink: Sink, meta: dict, what: Sequence[str]) -> None:
    """Refuse a collection that holds another run (the fields ``what`` differ)."""
    old = sink.read_meta()
    if old is None:
        if sink.exists() and sink.count():
            raise UsageError(f"{sink.uri.text}: the collection exists and was not written "
                             f"by freebind; choose another collection")
        return
    diff = [k for k in what if old.get(k) != meta.get(k)]
    if diff:
        raise UsageError(f"{sink.uri.text}: holds another run ({diff[0]}: "
                         f"{old.get(diff[0])!r}, this run: {meta.get(diff[0])!r}); choose "
                         f"another collection")


# --- embed into a sink --------------------------------------------------------------------

@dataclass
class SinkReport:
    """What ``embed --to`` did: rows upserted now, rows the collection already held, inputs
    skipped (path and reason), rows in the collection afterwards."""

    target: str
    uri: str
    dim: int
    vectors: dict[str, str | None]
    written: int = 0
    present: int = 0
    rows: int = 0
    skipped: list[dict] = field(default_factory=list)
    modalities: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def caption_of(modality: str, source: str, item: Any) -> str:
    """A text item's text; a file's sidecar ``STEM.txt`` (first line) when there is one."""
    if modality == "text":
        return str(item)
    side = Path(str(source)).with_suffix(".txt")
    try:
        if "::" not in str(source) and side.is_file():
            return side.read_text(encoding="utf-8").strip().splitlines()[0][:8000]
    except (OSError, UnicodeDecodeError, IndexError):
        pass
    return ""


_CELL = re.compile(r"(.+)::([^\[\]]+)\[(\d+)\]")
_RESERVED = {"key", "modality", "path", "caption", "id", "dot", "a", "b", "json"}


class TableMetadata:
    """The other columns of table rows as metadata: an item read from a table (its source
    ``TABLE::COLUMN[ROW]``) gets the row's cells of every non-binary column except the
    media columns, as text. One column of one table is read once (only the columns kept)."""

    def __init__(self, sources: Iterable[str]):
        from freebind.data.readers import TABLE_SUFFIXES

        media: dict[str, set[str]] = {}
        for src in sources:
            m = _CELL.fullmatch(str(src))
            if m and Path(m.group(1)).suffix.lower() in TABLE_SUFFIXES:
                media.setdefault(m.group(1), set()).add(m.group(2))
        #: table -> {field name: column}
        self.tables = {t: {self.field(c): c for c in self._scalar_columns(Path(t))
                           if c not in cols} for t, cols in media.items()}
        self.fields = list(dict.fromkeys(f for cols in self.tables.values() for f in cols))
        self._cells: dict[tuple[str, str], list] = {}

    @staticmethod
    def field(column: str) -> str:
        """A column's field name: letters, digits and '_'; ``meta_`` before a name freebind
        uses or one that does not start with a letter."""
        name = re.sub(r"[^A-Za-z0-9_]", "_", column)
        if name in _RESERVED or name.startswith(("vector", "leaf_")) or \
                not re.match(r"[A-Za-z]", name):
            name = "meta_" + name
        return name

    @staticmethod
    def _scalar_columns(path: Path) -> list[str]:
        from freebind.data.readers import table_columns

        names = table_columns(path)
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pq.ParquetFile(path).schema_arrow
            names = [n for n in names if not (pa.types.is_binary(schema.field(n).type) or
                                              pa.types.is_large_binary(schema.field(n).type))]
        return names

    def values(self, source: str) -> dict[str, str]:
        """``{field: cell text}`` of the row ``source`` names (every field: '' where the
        item's table lacks it or the cell is empty)."""
        out = dict.fromkeys(self.fields, "")
        m = _CELL.fullmatch(str(source))
        if not m or m.group(1) not in self.tables:
            return out
        for f, col in self.tables[m.group(1)].items():
            cells = self._cells.get((m.group(1), col))
            if cells is None:
                from freebind.data.readers import _column_batches

                cells = self._cells[(m.group(1), col)] = [
                    v for b in _column_batches(Path(m.group(1)), col) for v in b]
            v = cells[int(m.group(3))] if int(m.group(3)) < len(cells) else None
            out[f] = "" if v is None else str(v)
        return out


def preset_targets(tgt, presets: bool | Sequence[str], space_options) -> dict:
    """``{vector column: (preset or None, Target)}``: ``vector`` is the run's target; for a
    bundle, one column per stored preset (``presets=True``) or per preset named."""
    out = {"vector": (None, tgt)}
    if not tgt.is_bundle or not presets:
        return out
    from freebind.run.targets import open as open_target, split_ref

    have = sorted(tgt.fused.presets)
    names = have if presets is True else list(presets)
    for p in names:
        if p not in have:
            raise UsageError(f"preset {p!r}: {tgt.name} has {', '.join(have) or 'none'}")
        out[column_name(p)] = (p, open_target(split_ref(tgt.ref)[0], preset=p,
                                              space_options=space_options))
    return out


def write_plan(plan, uri: str | SinkURI, *, presets: bool | Sequence[str] = True
               ) -> SinkReport:
    """Embed the shards of ``plan`` (:func:`freebind.run.partitions.plan_embed`; what
    ``freebind.embed(..., to=URI)`` runs) straight into the vector database ``uri``: one
    upsert per item keyed by its content key; items the collection holds are not embedded
    again (a killed run resumes; a re-run adds only what is missing). ``presets``: the
    bundle's presets as extra vector columns (True: all)."""
    u = require(uri)
    tgt = plan.open_target()
    columns = preset_targets(tgt, presets, plan.options.space_options)
    report = SinkReport(plan.name, u.text, plan.dim,
                        {c: p for c, (p, _) in columns.items()})
    report.skipped = [dict(s) for s in plan.skipped]
    meta = {"format": "freebind-sink", "kind": "embed", "target": plan.name,
            "fingerprint": plan.fingerprint, "dim": plan.dim,
            "factors": list(plan.options.factors), "preset": plan.options.preset,
            "vectors": report.vectors}
    tables = TableMetadata(s for shard in plan.shards for s in shard.sources)
    meta["columns"] = tables.fields
    sink = connect(u)
    try:
        check_meta(sink, meta, ("kind", "target", "fingerprint", "factors", "preset",
                                "vectors", "columns"))
        if not sink.exists():
            sink.create({c: plan.dim for c in columns},
                        {**BASE_SCALARS, **{f: "str" for f in tables.fields}})
        sink.write_meta(meta)
        store = plan.open_store()
        for shard in plan.shards:
            report.skipped += [{"path": s, "reason": r} for s, r in shard.failed]
            _embed_shard(sink, shard, columns, store, plan, report, tables)
        report.rows = sink.count()
    finally:
        sink.close()
    return report


def _embed_shard(sink: Sink, shard, columns: dict, store, plan, report: SinkReport,
                 tables: TableMetadata) -> None:
    st = report.modalities.setdefault(shard.modality, {"written": 0, "present": 0,
                                                       "skipped": 0})
    m = shard.modality
    for start in range(0, len(shard.items), CHUNK_ROWS):
        items = shard.items[start:start + CHUNK_ROWS]
        sources = shard.sources[start:start + CHUNK_ROWS]
        keys, todo, seen = [], [], set()
        for i, it in enumerate(items):
            try:
                k = store.key(m, it)
            except MediaError as exc:
                report.skipped.append({"path": sources[i], "reason": str(exc)})
                st["skipped"] += 1
                continue
            if k not in seen:
                seen.add(k)
                keys.append(k)
                todo.append(i)
        have = sink.present(keys)
        st["present"] += len(have)
        report.present += len(have)
        todo = [(i, k) for i, k in zip(todo, keys) if k not in have]
        if not todo:
            continue
        batch = [items[i] for i, _ in todo]
        vecs = {}
        rows, kept, failures = columns["vector"][1].embed(
            m, batch, store=store, batch_size=plan.options.batch_size)
        vecs["vector"] = np.asarray(rows, dtype=np.float32)
        kept = [int(i) for i in kept]
        for f in failures:   # EmbedFailure records: position in ``batch``, reason
            report.skipped.append({"path": sources[todo[f.index][0]], "reason": f.reason})
            st["skipped"] += 1
        for col, (_, t) in columns.items():
            if col != "vector":
                vecs[col] = np.asarray(t.embed(m, [batch[i] for i in kept], store=store,
                                               batch_size=plan.options.batch_size)[0],
                                       dtype=np.float32)
        out = []
        for r, j in enumerate(kept):
            i, k = todo[j]
            out.append({"key": k, "modality": m, "path": str(sources[i]),
                        "caption": caption_of(m, sources[i], items[i]),
                        **tables.values(sources[i]), **{c: v[r] for c, v in vecs.items()}})
        sink.upsert(out)
        st["written"] += len(out)
        report.written += len(out)
