"""Embeddings computed elsewhere, added to the store for a space (``freebind import``).

Accepted sources:

* a clip-retrieval folder: ``{audio,image,img,text}_emb/*_emb_<k>.npy`` with
  ``metadata/metadata_<k>.parquet`` (or ``.jsonl``) whose rows are those of partition ``k``
  and hold a path column (``audio_path``, ``image_path``, ``path``, …) for media or a caption
  column (``caption``, ``text``) for texts;
* ``freebind embed``'s own output (the same layout plus ``embed.json``; texts given as
  ``FILE:LINE`` are read back from the file);
* one ``.npy`` with ``ids`` (media paths, one a line, or a list) or ``texts``.

Rows are keyed by content (:meth:`freebind.data.store.EmbeddingStore.key`), so the media and text
files they describe must be readable here; the rows never go through an encoder. A space's
identity for imported rows is its reference plus an optional declared weights digest
(:func:`declared_fingerprint`), recorded in ``<cache>/imports/``; a build naming that space
uses them without loading its encoder (:func:`imported_space`). Rows from ``freebind embed``
of the same space keep that run's own identity (its fingerprint), so a build from them is
the build from the files. Each ``.npy`` is checked before anything is written: rows of the
wrong dimension or not finite refuse the import in one line naming the file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from freebind.run.embed_folder import MANIFEST, TextSources, existing_file, read_manifest
from freebind.util.errors import FreebindError, MediaError, UsageError
from freebind.util.progress import bar
from freebind.util.text import first_line

IMPORTS_DIR = "imports"
#: folder names of the embedding partitions per modality (clip-retrieval says ``img``)
EMB_DIRS = {"audio": ("audio_emb",), "image": ("image_emb", "img_emb"), "text": ("text_emb",),
            "point": ("point_emb",)}
PATH_COLUMNS = {"audio": ("audio_path", "path", "audio", "file", "filename"),
                "image": ("image_path", "path", "image", "file", "filename", "url"),
                "text": ("caption", "text", "path"),
                "point": ("point_path", "path", "point", "file", "filename")}
_BLOCK = 65536


class ImportRefused(UsageError):
    """Precomputed embeddings that cannot be imported."""


@dataclass
class ImportReport:
    space: str
    fingerprint: str
    native: bool
    weights_digest: str | None
    cache_dir: str
    rows: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    files: int = 0
    skipped: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class ImportedSpace:
    """A space as the store knows it from imported rows: name, modalities, dimension and
    fingerprint, no encoder (``encode`` refuses: every row must already be in the store)."""

    def __init__(self, name: str, modalities, dim: int, fingerprint: str,
                 weights_digest: str | None = None, native: bool = False):
        self.name, self.modalities, self.dim = name, tuple(modalities), int(dim)
        self.fingerprint, self.weights_digest, self.native = fingerprint, weights_digest, native

    def encode(self, modality, items, batch_size: int = 32):
        raise FreebindError(f"{self.name}: only imported rows are available here (no encoder "
                            f"loaded); {len(items)} {modality} item(s) are not in the store")

    def record(self) -> dict:
        return {"name": self.name, "modalities": list(self.modalities), "dim": self.dim,
                "fingerprint": self.fingerprint, "weights_digest": self.weights_digest,
                "native": self.native}


def declared_fingerprint(name: str, weights_digest: str | None = None) -> str:
    """The fingerprint of rows imported for space ``name`` (with the declared digest of the
    weights that made them, if any)."""
    return f"imported:{name}" + (f"@{weights_digest}" if weights_digest else "")


# ------------------------------------------------------------------------------ records

def _records_path(store, name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
    return store.root / IMPORTS_DIR / f"{slug}.json"


def imported_identities(store, name: str) -> list[ImportedSpace]:
    """The identities under which rows were imported for space ``name`` (newest first)."""
    path = _records_path(store, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    out = []
    for r in reversed(data if isinstance(data, list) else []):
        try:
            out.append(ImportedSpace(r["name"], r["modalities"], r["dim"], r["fingerprint"],
                                     r.get("weights_digest"), bool(r.get("native"))))
        except (KeyError, TypeError):
            continue
    return out


def _record(store, space: ImportedSpace) -> None:
    from freebind.util.atomic import atomic_write_text

    path = _records_path(store, space.name)
    have = [s.record() for s in reversed(imported_identities(store, space.name))]
    if space.record() in have:
        return
    have.append(space.record())
    atomic_write_text(path, json.dumps(have, indent=1))


def imported_space(store, ref: str, keys: dict[str, Sequence[str]]):
    """An :class:`ImportedSpace` of ``ref`` under which the store holds every key of
    ``keys`` (``{modality: keys}``, the modalities the space has), or None: then the space's
    encoder is needed. No encoder or weights are touched."""
    from freebind import spaces

    info = spaces.info(ref)
    wanted = {m: k for m, k in keys.items() if m in info.modalities}
    if not wanted:
        return None
    for ident in imported_identities(store, info.name):
        if int(ident.dim) != int(info.dim):
            continue
        if all(m in ident.modalities
               and bool((store.index(ident, m).find(list(k)) >= 0).all())
               for m, k in wanted.items()):
            return ident
    return None


@dataclass
class Leaf:
    """How the build's embedding stage gets a space's rows: ``space`` (loaded, or an
    :class:`ImportedSpace` when the store holds every pool item under an imported
    identity), the ``fallback`` identity whose rows fill in for a loaded space, and
    ``rows``: ``"encoded"``, ``"imported"`` or ``"partly imported"``."""

    space: Any
    fallback: Any = None
    rows: str = "encoded"

    def meta(self) -> dict:
        """What the bundle's ``spaces`` entry adds (nothing for the space's own rows)."""
        ident = self.space if self.rows == "imported" else self.fallback
        if ident is None or getattr(ident, "native", False):
            return {}
        out = {"rows": self.rows}
        if ident.weights_digest:
            out["weights_digest"] = ident.weights_digest
        return out


def resolve_leaf(store, ref: str, items: dict[str, Sequence], open_space) -> Leaf:
    """The :class:`Leaf` of ``ref`` for pools ``items`` (``{modality: items}``):
    ``open_space(ref)`` (which loads the encoder) is called only when no imported identity
    holds every item of every modality the space has."""
    from freebind import spaces

    info = spaces.info(ref)
    idents = [i for i in imported_identities(store, info.name) if int(i.dim) == int(info.dim)]
    if not idents:
        return Leaf(open_space(ref))
    keys: dict[str, np.ndarray] = {}   # distinct keys as fixed-width arrays, not sets
    for m, its in items.items():
        if m not in info.modalities:
            continue
        got = []
        for it in its:
            try:
                got.append(store.key(m, it))
            except MediaError:   # reported by the embedding stage
                continue
        keys[m] = np.unique(np.asarray(got, dtype="S64"))
    if not keys:
        return Leaf(open_space(ref))
    cover = []
    for ident in idents:
        have = {m: (int((store.index(ident, m).find(k) >= 0).sum())
                    if m in ident.modalities else 0) for m, k in keys.items()}
        if all(have[m] == len(k) for m, k in keys.items()):
            return Leaf(ident, None, "imported")
        cover.append((sum(have.values()), ident))
    space = open_space(ref)
    n, best = max(cover, key=lambda c: c[0])
    if n == 0 or str(best.fingerprint) == str(space.fingerprint):
        return Leaf(space)
    return Leaf(space, best, "partly imported")


# ------------------------------------------------------------------------------ sources

def _check_rows(path: Path, arr, dim: int, name: str) -> None:
    if arr.ndim != 2:
        raise ImportRefused(f"{path}: expected a 2-D array of rows, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise ImportRefused(f"{path}: rows of dimension {arr.shape[1]}, but {name} has {dim}; "
                           "refused")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImportRefused(f"{path}: rows of type {arr.dtype}; expected float32 or float16")
    for start in range(0, arr.shape[0], _BLOCK):
        block = np.asarray(arr[start:start + _BLOCK])
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            raise ImportRefused(f"{path}: row {first} is not finite (NaN or infinite); refused")


def _load_npy(path: Path):
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        why = str(exc).strip().splitlines()
        raise ImportRefused(f"{path}: not a .npy array ({why[0] if why else type(exc).__name__})"
                            ) from None


def _partitions(folder: Path, modalities) -> list[tuple[str, Path, Path]]:
    """``(modality, npy, metadata)`` of every partition in a clip-retrieval folder."""
    out = []
    meta_dir = folder / "metadata"
    for m in modalities:
        for d in EMB_DIRS.get(m, (f"{m}_emb",)):
            for npy in sorted((folder / d).glob("*.npy"), key=_part_number):
                k = _part_number(npy)
                meta = next((p for p in (meta_dir / f"metadata_{k}.parquet",
                                         meta_dir / f"metadata_{k}.jsonl") if p.is_file()),
                            None)
                if meta is None:
                    raise ImportRefused(f"{npy}: no metadata/metadata_{k}.parquet (or .jsonl) "
                                       "beside it")
                out.append((m, npy, meta))
    return out


def _part_number(p: Path) -> int:
    m = re.search(r"(\d+)$", p.stem)
    return int(m.group(1)) if m else 0


#: metadata rows read (and rows written) at a time: memory follows this, not the partition
_ROWS = 16384
#: a path column names each row's file (clip-retrieval's files mode)
_FILE_COLUMNS = {m: tuple(c for c in cols if c != "url") for m, cols in PATH_COLUMNS.items()}


class _Metadata:
    """A partition's metadata, read in blocks of rows: its column names and row count
    (from the parquet footer, or one pass over JSON lines) and :meth:`batches` of the
    columns needed. ``source`` is a file or columns given in memory (a ``.npy``'s)."""

    def __init__(self, source):
        self.source = source
        if isinstance(source, dict):
            self.names = list(source)
            self.rows = len(next(iter(source.values()), []))
        elif isinstance(source, _Lines):
            self.names, self.rows = [source.col], sum(1 for _ in source)
        elif source.suffix == ".parquet":
            self.names, self.rows = self._parquet_shape(source)
        else:
            self.names, self.rows = self._jsonl_shape(source)

    @staticmethod
    def _parquet_shape(path: Path) -> tuple[list[str], int]:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError(f"{path}: reading parquet metadata needs pyarrow") from None
        try:
            pf = pq.ParquetFile(path)
            return list(pf.schema_arrow.names), int(pf.metadata.num_rows)
        except Exception as exc:  # noqa: BLE001  (pyarrow raises many types)
            raise UsageError(f"{path}: unreadable ({first_line(exc)})") from None

    @staticmethod
    def _jsonl_shape(path: Path) -> tuple[list[str], int]:
        names: dict[str, None] = {}
        rows = 0
        for obj in _json_lines(path):
            names.update(dict.fromkeys(obj))
            rows += 1
        return list(names), rows

    def batches(self, columns: Sequence[str]):
        """``{column: cells}`` blocks of at most :data:`_ROWS` rows, in row order."""
        src = self.source
        if isinstance(src, dict):
            for start in range(0, self.rows, _ROWS):
                yield {c: src[c][start:start + _ROWS] for c in columns}
        elif isinstance(src, _Lines):
            block: list[str] = []
            for t in src:
                block.append(t)
                if len(block) >= _ROWS:
                    yield {src.col: block}
                    block = []
            if block:
                yield {src.col: block}
        elif src.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                for b in pq.ParquetFile(src).iter_batches(batch_size=_ROWS,
                                                          columns=list(columns)):
                    yield b.to_pydict()
            except Exception as exc:  # noqa: BLE001
                raise UsageError(f"{src}: unreadable ({first_line(exc)})") from None
        else:
            block = {c: [] for c in columns}
            for obj in _json_lines(src):
                for c in columns:
                    block[c].append(obj.get(c))
                if len(block[columns[0]]) >= _ROWS:
                    yield block
                    block = {c: [] for c in columns}
            if block[columns[0]]:
                yield block


def _json_lines(path: Path):
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    raise UsageError(f"{path}:{n}: not a JSON line") from None
                yield obj if isinstance(obj, dict) else {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: unreadable ({exc})") from None


def _key_column(modality: str, meta: _Metadata, where: Path, samples) -> str:
    """The column whose cells name each row's content: a path (a caption for texts), else
    a sample's ``key`` or ``url`` (clip-retrieval over webdataset shards: ``samples``, the
    shards' index, resolves them)."""
    names = meta.names
    if {"path", "row", "modality"} <= set(names):
        return "path"   # freebind embed's metadata: its caption/url/key are the inputs'
    col = next((c for c in _FILE_COLUMNS[modality] if c in names), None)
    if col is not None:
        return col
    by_sample = [c for c in ("key", "url") if c in names]
    if by_sample and samples is not None:
        return by_sample[0]
    if by_sample:
        raise ImportRefused(f"{where}: {modality} rows are named by their webdataset sample "
                           f"({' and '.join(by_sample)} columns, no path): give the shards "
                           "they were made from (--shards PATTERN)")
    raise ImportRefused(f"{where}: no {'caption' if modality == 'text' else 'path'} column "
                       f"for {modality} rows; the columns are {', '.join(names)}")


class _Keyer:
    """Content keys of a partition's cells (``b""`` for a cell that cannot be read, listed
    in ``skipped``): captions hashed, files hashed (no per-file memo kept), members and
    ``FILE:LINE`` sources read back, webdataset keys and urls looked up in ``samples``."""

    def __init__(self, store, modality: str, col: str, texts: TextSources, samples,
                 skipped: list, where: Path):
        self.store, self.modality, self.col, self.texts = store, modality, col, texts
        self.samples, self.skipped, self.where = samples, skipped, where

    def keys(self, values: Sequence) -> np.ndarray:
        from freebind.util.text import reason

        out = np.zeros(len(values), dtype="S64")
        if self.col in ("key", "url") and self.modality != "text":
            return self._sample_keys(values, out)
        for i, v in enumerate(values):
            if v is None or (isinstance(v, str) and not v.strip()):
                self.skipped.append({"path": str(self.where), "reason": "a null metadata cell"})
                continue
            v = str(v)
            try:
                out[i] = self._key(v)
            except (MediaError, OSError, UnicodeDecodeError) as exc:
                self.skipped.append({"path": v, "reason": reason(exc, v)
                                     if isinstance(exc, MediaError) else str(exc)})
        return out

    def _key(self, v: str) -> str:
        from freebind.data.store import file_key, text_key

        if self.modality == "text":
            # freebind embed's path column: FILE:LINE, a shard's or a table's caption, or a
            # text file; else the caption itself
            return text_key(self.texts.text(v) if self.col == "path" else v)
        f = existing_file(v, self.texts.base)
        return file_key(f) if f is not None else self.store.key(self.modality, v)

    def _sample_keys(self, values, out: np.ndarray) -> np.ndarray:
        got = self.samples.lookup(self.modality, self.col, values)
        for i in np.flatnonzero(got == b"").tolist():
            self.skipped.append({"path": f"{self.where} ({self.col} {values[i]!r})",
                                 "reason": f"no {self.modality} sample of that {self.col} "
                                           "in the shards given"})
        out[:] = got
        return out


def _import_partition(store, writer, modality: str, arr, meta: _Metadata, where: Path,
                      keyer_args: tuple, report, pbar) -> None:
    """Put the rows of one partition into ``writer``, :data:`_ROWS` rows at a time."""
    n = int(arr.shape[0])
    col = _key_column(modality, meta, where, keyer_args[1])
    keyer = _Keyer(store, modality, col, *keyer_args, report.skipped, where)
    by_row = "row" in meta.names and "modality" in meta.names  # freebind embed's metadata
    if not by_row and meta.rows < n:
        raise ImportRefused(f"{where}: {meta.rows} metadata row(s) for {n} embedding rows")
    columns = [col, "row", "modality"] if by_row else [col]
    start = covered = 0
    for batch in meta.batches(columns):
        values = batch[col]
        if by_row:
            rows = np.array([-1 if r is None or mm != modality else int(r)
                             for r, mm in zip(batch["row"], batch["modality"])], np.int64)
        else:
            rows = np.arange(start, start + len(values), dtype=np.int64)
        start += len(values)
        use = (rows >= 0) & (rows < n)
        if not use.any():
            continue
        values = [v for v, u in zip(values, use.tolist()) if u]
        rows = rows[use]
        covered += len(rows)
        keys = keyer.keys(values)
        ok = keys != b""
        writer.add(keys[ok], arr[rows[ok]])
        pbar.update(len(rows))
    if covered < n:
        report.skipped.append({"path": str(where), "reason": f"{n - covered} of its {n} "
                               f"{modality} embedding rows have no metadata row"})


def import_embeddings(space: str, source, *, ids=None, texts=None, modality: str | None = None,
                      weights_digest: str | None = None, cache_dir=None,
                      shards=None, allow_missing: bool = False,
                      progress: bool = True) -> ImportReport:
    """Add the embeddings in ``source`` (a clip-retrieval or ``freebind embed`` folder, or a
    ``.npy`` with ``ids``/``texts``) to the store for ``space`` (a reference; nothing is
    loaded). Returns an :class:`ImportReport`; rows whose file or text cannot be read are
    skipped and listed. ``shards`` (webdataset tar shards: a path, a brace pattern or a
    folder) resolve rows named by their sample's ``key`` or ``url`` (clip-retrieval run
    over those shards); ``allow_missing`` lets a pattern's missing shards be reported, not
    refused. Metadata is read :data:`_ROWS` rows at a time and the store's index once, so
    time is linear in the rows and memory bounded by the keys. See the module doc."""
    from freebind import spaces
    from freebind.data.store import EmbeddingStore

    info = spaces.info(space)
    store = EmbeddingStore(cache_dir)
    source = Path(source)
    if not source.exists():
        raise ImportRefused(f"{source}: no such folder or file")
    fingerprint, native, name = _identity(source, info, space, weights_digest)
    report = ImportReport(info.name, fingerprint, native, weights_digest, str(store.root))
    jobs = _jobs(source, info, ids, texts, modality)
    arrays = [_checked_rows(npy, info) for _, npy, _ in jobs]   # before anything is written
    ident = ImportedSpace(name, info.modalities, int(info.dim), fingerprint, weights_digest,
                          native)
    sources = TextSources(source if source.is_dir() else source.parent)
    samples = None
    if shards is not None:
        from freebind.data.readers import SampleIndex

        samples = SampleIndex.of(shards, sorted({m for m, _, _ in jobs if m != "text"}),
                                 allow_missing=allow_missing)
        report.skipped += samples.problems
    writers: dict[str, Any] = {}
    with bar(total=sum(a.shape[0] for a in arrays), unit="row", desc=f"import {name}",
             disable=not progress) as pbar:
        for (m, npy, meta), arr in zip(jobs, arrays):
            where = meta if isinstance(meta, Path) else npy
            if m not in writers:
                # shards of _ROWS rows: fewer files and fsyncs (a re-run skips them)
                writers[m] = store.writer(ident, m, shard_rows=_ROWS)
            _import_partition(store, writers[m], m, arr, _Metadata(meta), where,
                              (sources, samples), report, pbar)
            report.files += 1
    for m, w in writers.items():
        w.close()
        report.rows[m] = w.met
        report.written[m] = w.written
    _record(store, ident)
    return report


def _identity(source: Path, info, space: str, weights_digest: str | None
              ) -> tuple[str, bool, str]:
    """``(fingerprint, native, name)`` of the rows in ``source``: those of the ``freebind
    embed`` run that wrote them (its ``embed.json`` names one), else the declared ones."""
    fingerprint = declared_fingerprint(info.name, weights_digest)
    if not (source.is_dir() and (source / MANIFEST).is_file()):
        return fingerprint, False, info.name
    data = read_manifest(source)
    target = str(data.get("name") or data.get("target") or "")
    if target not in (info.name, space, *info.aliases):
        raise ImportRefused(f"{source}: embeddings of {target!r}, not of {info.name}; "
                           "import them for that space")
    if data.get("fingerprint"):
        return str(data["fingerprint"]), True, target or info.name
    return fingerprint, False, info.name


def _jobs(source: Path, info, ids, texts, modality: str | None) -> list[tuple[str, Path, Any]]:
    """What to import: ``(modality, npy, metadata)``, the metadata a file's path (a folder's
    partitions) or columns (a ``.npy`` with ``ids`` or ``texts``)."""
    if source.is_dir():
        parts = _partitions(source, info.modalities)
        if not parts:
            raise ImportRefused(f"{source}: no {{audio,image,img,text}}_emb/*.npy partitions "
                               f"for {info.name}'s modalities ({', '.join(info.modalities)})")
        return parts
    if source.suffix != ".npy":
        raise ImportRefused(f"{source}: expected a folder or a .npy file")
    if (ids is None) == (texts is None):
        raise ImportRefused(f"{source}: give the ids (media paths) or the texts of its rows")
    if texts is not None:
        values = _lines(texts)
        m, col = "text", "caption"
    else:
        values = _lines(ids)
        m, col = modality or _modality_of_ids(values, source), "path"
    if m not in info.modalities:
        raise ImportRefused(f"{source}: {info.name} has no {m} modality "
                           f"({', '.join(info.modalities)})")
    return [(m, source, values.named(col) if isinstance(values, _Lines) else {col: values})]


def _checked_rows(npy: Path, info):
    """The rows of ``npy`` (memory-mapped), checked against space ``info``."""
    arr = _load_npy(npy)
    _check_rows(npy, arr, int(info.dim), info.name)
    return arr


def _lines(spec):
    """The ids or texts of a ``.npy``'s rows: those given (a list), or a file's, streamed
    (:class:`_Lines`)."""
    if isinstance(spec, (str, os.PathLike)):
        return _Lines(Path(spec))
    return [str(v) for v in spec]


class _Lines:
    """The texts of a file, one a non-empty line (surrounding whitespace stripped), the
    lines :func:`freebind.data.media.read_texts` gives, streamed
    (:func:`freebind.data.media.iter_texts`): a ``.npy``'s ids or texts, never held whole.
    ``named(col)`` makes it a column of metadata."""

    def __init__(self, path: Path, col: str = "caption"):
        self.path, self.col = path, col

    def named(self, col: str) -> "_Lines":
        return _Lines(self.path, col)

    def __iter__(self):
        from freebind.data.media import iter_texts

        try:
            yield from iter_texts(self.path)
        except MediaError as exc:
            raise ImportRefused(str(exc)) from None


def _modality_of_ids(values, source: Path) -> str:
    from freebind.util.vocab import modality_of

    found = {modality_of(str(v).rpartition("::")[2] or v) for v in values}
    found.discard(None)
    if len(found) != 1:
        raise ImportRefused(f"{source}: cannot tell the modality of the ids by extension; "
                           "give it (--modality audio|image|…)")
    return found.pop()
