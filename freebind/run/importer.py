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

from freebind.run.embed_folder import (MANIFEST, TextSources, existing_file, read_manifest,
                                       read_metadata)
from freebind.util.errors import FreebindError, MediaError, UsageError
from freebind.util.progress import bar

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


def _row_keys(store, modality: str, meta: dict[str, list], n: int, where: Path,
              texts: TextSources, skipped: list) -> list[str | None]:
    """One content key per row (None for a row whose file or text cannot be read)."""
    from freebind.data.store import text_key
    from freebind.util.text import reason

    names = list(meta)
    col = next((c for c in PATH_COLUMNS[modality] if c in meta), None)
    if col is None:
        raise ImportRefused(f"{where}: no {'caption' if modality == 'text' else 'path'} column "
                           f"for {modality} rows; the columns are {', '.join(names)}")
    values = meta[col]
    if "row" in meta and "modality" in meta:   # freebind embed's metadata: rows of one kind
        order = [None] * n
        for v, r, mm in zip(values, meta["row"], meta["modality"]):
            if mm == modality and r is not None and 0 <= int(r) < n:
                order[int(r)] = v
        values = order
    if len(values) < n:
        raise ImportRefused(f"{where}: {len(values)} metadata row(s) for {n} embedding rows")
    keys: list[str | None] = []
    for v in values[:n]:
        if v is None or (isinstance(v, str) and not v.strip()):
            keys.append(None)
            skipped.append({"path": str(where), "reason": "a null metadata cell"})
            continue
        v = str(v)
        try:
            if modality == "text":
                # freebind embed's path column: FILE:LINE, a shard's or a table's caption, or
                # a text file; else the caption itself
                keys.append(text_key(texts.text(v) if col == "path" else v))
            else:
                f = existing_file(v, texts.base)
                keys.append(store.key(modality, f if f is not None else v))
        except (MediaError, OSError, UnicodeDecodeError) as exc:
            keys.append(None)
            skipped.append({"path": v, "reason": reason(exc, v) if isinstance(exc, MediaError)
                            else str(exc)})
    return keys


def import_embeddings(space: str, source, *, ids=None, texts=None, modality: str | None = None,
                      weights_digest: str | None = None, cache_dir=None,
                      progress: bool = True) -> ImportReport:
    """Add the embeddings in ``source`` (a clip-retrieval or ``freebind embed`` folder, or a
    ``.npy`` with ``ids``/``texts``) to the store for ``space`` (a reference; nothing is
    loaded). Returns an :class:`ImportReport`; rows whose file or text cannot be read are
    skipped and listed. See the module doc."""
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
    with bar(total=sum(a.shape[0] for a in arrays), unit="row", desc=f"import {name}",
             disable=not progress) as pbar:
        for (m, npy, meta), arr in zip(jobs, arrays):
            where = meta if isinstance(meta, Path) else npy
            if isinstance(meta, Path):
                meta = read_metadata(meta)
            keys = _row_keys(store, m, meta, arr.shape[0], where, sources, report.skipped)
            _write_rows(store, ident, m, arr, keys, report, pbar)
            report.files += 1
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
    return [(m, source, {col: values})]


def _checked_rows(npy: Path, info):
    """The rows of ``npy`` (memory-mapped), checked against space ``info``."""
    arr = _load_npy(npy)
    _check_rows(npy, arr, int(info.dim), info.name)
    return arr


def _write_rows(store, ident: ImportedSpace, modality: str, arr, keys: list, report,
                pbar) -> None:
    """Put the rows of ``arr`` with a key (the first of each key) into the store."""
    seen: set[str] = set()
    rows = []
    for i, k in enumerate(keys):
        if k is not None and k not in seen:
            seen.add(k)
            rows.append(i)
    report.rows[modality] = report.rows.get(modality, 0) + len(rows)
    for start in range(0, len(rows), store.shard_size):
        idx = np.asarray(rows[start:start + store.shard_size], dtype=np.int64)
        block = np.asarray(arr[idx], dtype=np.float32)
        report.written[modality] = report.written.get(modality, 0) + store.write(
            ident, modality, [keys[i] for i in idx.tolist()], block)
        pbar.update(len(idx))


def _lines(spec) -> list[str]:
    """The ids or texts of a ``.npy``'s rows: those given, or a file's (one a non-empty
    line, as texts files are read everywhere)."""
    if isinstance(spec, (str, os.PathLike)):
        from freebind.data.media import read_texts

        try:
            return read_texts(spec)
        except MediaError as exc:
            raise ImportRefused(str(exc)) from None
    return [str(v) for v in spec]


def _modality_of_ids(values: list[str], source: Path) -> str:
    from freebind.util.vocab import modality_of

    found = {modality_of(str(v).rpartition("::")[2] or v) for v in values}
    found.discard(None)
    if len(found) != 1:
        raise ImportRefused(f"{source}: cannot tell the modality of the ids by extension; "
                           "give it (--modality audio|image|…)")
    return found.pop()
