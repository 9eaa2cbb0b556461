"""Pools and embedding inputs as people keep them: webdataset tar shards, tables (parquet, CSV,
TSV, JSON lines) and Hugging Face ``datasets`` folders (``save_to_disk``), beside folders.

A medium stored inside a container is a :class:`Member`: a ``str`` whose value is a readable
locator, ``CONTAINER::NAME`` (``shards/000012.tar::000123.flac``,
``clips.parquet::audio[17]``, ``ds::audio[17]``), carrying where its bytes are (the
container, an offset and a size, or a row) and its content key. Nothing is extracted and no
decoded bytes are kept: listing a shard reads it once, sequentially, hashing each member into
the same content key a file with those bytes has (:func:`freebind.data.store.file_key`), so a
clip in a folder, in a tar and in a table shares one cache entry and a build from tars and
tables is the build from folders. The media decoders (:mod:`freebind.data.media`) read a member's
bytes through :func:`open_member` when a space encodes it.

:func:`read_pool` lists one pool (``build --audio/--image/--text``, ``pools.json``);
:func:`read_inputs` the members of every modality in containers given to ``embed``. Both
return a :class:`Listing` whose ``problems`` (a truncated shard, unreadable bytes skipped,
null cells) are reported like unreadable files. See docs/building.md ("Your own pools").

Tar shards are read with the standard library's :mod:`tarfile` (it gives each member's
offset and size, which streaming readers do not), tables with pyarrow, ``datasets`` folders
with ``datasets`` (the ``[hf]`` extra), memory-mapped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from freebind.util.progress import bar
from freebind.data.item_column import SEP, ItemColumn
from freebind.util.errors import MediaError, UsageError
from freebind.util.text import first_line

_CHUNK = 1 << 20
TAR_SUFFIXES = (".tar",)
#: compressed shards cannot be read back by offset: refused with what to do
COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv",
                  ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: columns (or JSON fields of a tar sample) tried, in order, when none is named
DEFAULT_COLUMNS = {
    "text": ("caption", "text", "captions", "txt", "sentence", "description"),
    "audio": ("audio", "flac", "wav", "mp3", "ogg", "audio_path", "path", "file", "filename",
              "file_name"),
    "image": ("image", "jpg", "jpeg", "png", "webp", "img", "image_path", "path", "file",
              "filename", "file_name"),
    "point": ("point", "points", "ply", "pcd", "pc", "shape", "mesh", "point_path", "path",
              "file", "filename", "file_name"),
}


class Member(str):
    """A medium inside a container; its ``str`` is the locator ``CONTAINER::NAME``.

    ``kind`` is ``tar`` (bytes ``[offset, offset + size)`` of the file ``container``),
    ``parquet`` or ``hf`` (row ``offset`` of column ``column``); ``digest`` is the raw
    SHA-256 of its content key (:func:`freebind.data.store.file_key`'s scheme)."""

    __slots__ = ("container", "kind", "column", "offset", "size", "digest")

    def __new__(cls, label: str, container: str, kind: str, offset: int, size: int,
                digest: bytes | None = None, column: str | None = None):
        self = super().__new__(cls, label)
        self.container, self.kind, self.column = container, kind, column
        self.offset, self.size, self.digest = int(offset), int(size), digest
        return self

    def __reduce__(self):
        return (Member, (str(self), self.container, self.kind, self.offset, self.size,
                         self.digest, self.column))

    @property
    def key(self) -> str:
        """The content key (hex), hashing the bytes when the listing did not."""
        if self.digest is None:
            self.digest = _content_digest(self.read())
        return self.digest.hex()

    def read(self) -> bytes:
        """The member's bytes (a MediaError naming the member when they cannot be read)."""
        return read_member(self)


def file_hasher():
    """A SHA-256 started with the store's file-key scheme (``b"file\\0"``, then the bytes):
    a file on disk (:func:`freebind.data.store.file_key`), a tar member and a table cell with
    the same bytes get the same key, so their embeddings are shared."""
    return hashlib.sha256(b"file\0")


def _content_digest(data: bytes) -> bytes:
    h = file_hasher()
    h.update(data)
    return h.digest()


@dataclass
class Listing:
    """What a reader found: ``items`` (Members, paths or texts) per modality, where they came
    from, and the ``problems`` met (``{"path", "reason"}``, reported like unreadable files)."""

    items: dict[str, ItemColumn] = field(default_factory=dict)
    origin: str = ""
    problems: list[dict] = field(default_factory=list)
    nulls: int = 0
    #: where each text came from (``CONTAINER::NAME``), parallel to ``items["text"]``
    sources: ItemColumn = field(default_factory=ItemColumn)

    def column(self, modality: str) -> ItemColumn:
        """The items of ``modality`` (packed: :class:`~freebind.data.item_column.ItemColumn`),
        made empty when there are none yet."""
        col = self.items.get(modality)
        if col is None:
            col = self.items[modality] = ItemColumn()
        return col

    def entries(self, modality: str) -> Iterator[tuple[str, Any]]:
        """``(source, item)`` pairs, one at a time: a member's locator, a path, a text's
        locator."""
        items = self.items.get(modality, [])
        if modality == "text":
            return zip(self.sources, items)
        return ((str(it), it) for it in items)


# ------------------------------------------------------------------------------ forms

def is_brace_pattern(spec: str) -> bool:
    return bool(re.search(r"\{[^{}]*(\.\.|,)[^{}]*\}", spec))


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion as webdataset uses it: ``{000..123}`` (zero padding kept,
    an optional ``..step``) and ``{a,b}``, nested and repeated; left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?", body)
    if rng:
        a, b = int(rng.group(1)), int(rng.group(2))
        step = int(rng.group(3) or 1) or 1
        width = max(len(rng.group(1)), len(rng.group(2))) \
            if rng.group(1).startswith("0") or rng.group(2).startswith("0") else 0
        seq = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
        parts = [str(v).zfill(width) for v in seq]
    elif "," in body:
        parts = body.split(",")
    else:   # not an expansion: keep the braces literally
        return [head + "{" + body + "}" + t for t in expand_braces(tail)]
    return [x for p in parts for x in expand_braces(head + p + tail)]


def container_kind(spec) -> str | None:
    """``tar``, ``table`` or ``hf`` when ``spec`` names one of those forms; None for a plain
    folder or file (including a folder of media files)."""
    if isinstance(spec, Mapping):
        spec = spec.get("path")
    if not isinstance(spec, (str, os.PathLike)):
        return None
    text = os.fspath(spec)
    if is_brace_pattern(text):
        return "tar"
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in TAR_SUFFIXES or text.lower().endswith(COMPRESSED_TAR):
        return "tar"
    if suffix in TABLE_SUFFIXES:
        return "table"
    if path.is_dir():
        if any((path / n).is_file() for n in ("dataset_info.json", "state.json",
                                               "dataset_dict.json")):
            return "hf"
        if any(p.suffix == ".tar" for p in path.iterdir()) and not _has_media(path):
            return "tar"
    return None


def _has_media(folder: Path) -> bool:
    from freebind.util.vocab import modality_of

    return any(modality_of(p) is not None for p in folder.rglob("*") if p.is_file())


def _split_spec(spec) -> tuple[str, str | None]:
    if isinstance(spec, Mapping):
        if "path" not in spec:
            raise UsageError(f"{dict(spec)}: a pool given as an object needs a \"path\"")
        col = spec.get("column")
        return os.fspath(spec["path"]), (str(col) if col else None)
    return os.fspath(spec), None


# ------------------------------------------------------------------------------ pools

def read_pool(modality: str, spec, column: str | None = None,
              progress: bool = False, allow_missing: bool = False) -> Listing | None:
    """The ``modality`` pool of ``spec`` (a tar shard, brace pattern or folder of shards, a
    table, a ``datasets`` folder, or ``{"path": ..., "column": ..., "allow_missing": ...}``),
    or None when ``spec`` is none of these (a plain folder or text file: the caller reads it
    as before). ``column`` names the table column (or the JSON field of tar samples) to
    read; ``allow_missing``: a brace pattern's missing shards are listed, not refused."""
    kind = container_kind(spec)
    if kind is None:
        return None
    path, col = _split_spec(spec)
    column = column or col
    allow_missing = allow_missing or bool(isinstance(spec, Mapping)
                                          and spec.get("allow_missing"))
    if kind == "tar":
        listing = read_shards(path, progress=progress, text_field=column,
                              modalities=(modality,), allow_missing=allow_missing)
    elif kind == "table":
        listing = read_table(path, modality, column, progress=progress)
    else:
        listing = read_hf(path, modality, column, progress=progress)
    listing.items = {modality: listing.column(modality)}
    if not listing.items[modality]:
        where = f" (column {column})" if column else ""
        raise UsageError(f"{path}{where}: no {modality} items found" +
                         (f" ({len(listing.problems)} problem(s): "
                          f"{_problem_line(listing.problems[0])})" if listing.problems else ""))
    return listing


def _problem_line(p: Mapping) -> str:
    return f"{p['path']}: {p['reason']}"


def read_inputs(paths: Iterable, progress: bool = False,
                columns: Mapping[str, str] | None = None,
                allow_missing: bool = False) -> tuple[list, Listing]:
    """``embed``'s inputs: the paths that are containers are read (tar members of every
    modality; tables and ``datasets`` folders for the modalities ``columns`` names, or
    whose default column exists); the rest come back untouched, in order."""
    plain: list = []
    out = Listing()
    columns = dict(columns or {})
    for p in paths:
        kind = container_kind(p)
        if kind is None:
            plain.append(p)
            continue
        path, col = _split_spec(p)
        if kind == "tar":
            got = read_shards(path, progress=progress, text_field=columns.get("text"),
                              allow_missing=allow_missing)
        else:
            got = Listing()
            named = any(columns.get(m) for m in ("audio", "image", "text")) or col
            for m in ("audio", "image", "text"):
                want = columns.get(m) or col
                if named and not want:
                    continue
                reader = read_table if kind == "table" else read_hf
                try:
                    part = reader(path, m, want, progress=progress)
                except _NoDefaultColumn:
                    continue
                except UsageError as exc:
                    if named:
                        raise
                    raise UsageError(f"nothing to embed in {exc}") from None
                got.items[m] = part.column(m)
                got.problems += part.problems
                got.nulls += part.nulls
                if m == "text":
                    got.sources.extend(part.sources)
            if not any(got.items.values()):
                raise UsageError(f"nothing to embed in {path}: no column of the usual names "
                                 f"({', '.join(_names_present(path, kind))}); name one with "
                                 "--text-column, --audio-column or --image-column")
        for m, v in got.items.items():
            out.column(m).extend(v)
        out.sources.extend(got.sources)
        out.problems += got.problems
        out.nulls += got.nulls
    return plain, out


class _NoDefaultColumn(UsageError):
    pass


def _names_present(path, kind: str) -> list[str]:
    if kind == "table":
        return table_columns(Path(path))
    return list(_load_hf(Path(path)).column_names)


# ------------------------------------------------------------------------------ tar shards

def shard_paths(spec: str, allow_missing: bool = False,
                missing: list | None = None) -> list[Path]:
    """The shard files of a path, a brace pattern or a folder of ``.tar`` files (sorted);
    a pattern none of whose files exist is an error naming the pattern, and so is one some
    of whose files are missing (naming them), unless ``allow_missing``: then the missing
    names are appended to ``missing`` and the others read."""
    if spec.lower().endswith(COMPRESSED_TAR):
        raise UsageError(f"{spec}: compressed shards cannot be read in place (a member is read "
                         "back by its offset); decompress them (gunzip, zstd -d) into .tar files")
    if is_brace_pattern(spec):
        names = expand_braces(spec)
        found = [Path(n) for n in names if Path(n).is_file()]
        if not found:
            raise UsageError(f"{spec}: the pattern matches no file ({len(names)} name(s) "
                             f"tried, e.g. {names[0]})")
        gone = [n for n in names if not Path(n).is_file()]
        if gone and not allow_missing:
            raise UsageError(f"{spec}: {len(gone)} of its {len(names)} shards missing: "
                             f"{_few(gone)}; pass --allow-missing (allow_missing=True) to "
                             "read the others")
        if missing is not None:
            missing += gone
        return found
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*.tar") if p.is_file())
        if not found:
            raise UsageError(f"{path}: no .tar shards in this folder")
        return found
    if not path.is_file():
        raise UsageError(f"{path}: no such shard")
    return [path]


def _few(names: list[str], n: int = 3) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _sample_key(name: str) -> tuple[str, str]:
    """webdataset's grouping: the key is the member path up to the first dot of its file
    name, the extension everything after it (``a/b.seg.flac`` → ``a/b``, ``seg.flac``)."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), (ext.lower() if dot else "")


def _ext_modality(ext: str) -> str | None:
    from freebind.util.vocab import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
    from freebind.util.vocab import POINT_EXTENSIONS

    last = "." + ext.rsplit(".", 1)[-1]
    if last in AUDIO_EXTENSIONS:
        return "audio"
    if last in IMAGE_EXTENSIONS:
        return "image"
    if last in VIDEO_EXTENSIONS:
        return "video"
    if last in POINT_EXTENSIONS:
        return "point"
    if last in (".txt", ".json"):
        return "text"
    return None


def read_shards(spec: str, progress: bool = False, text_field: str | None = None,
                modalities: tuple[str, ...] | None = None,
                allow_missing: bool = False) -> Listing:
    """Members of every shard of ``spec`` grouped into samples by key: one item per sample
    and modality (audio/image/video by extension; a ``.txt`` member's text, else the caption
    field of a ``.json`` member; a named ``text_field`` of the ``.json`` wins over the
    ``.txt``). Each shard is read once, in order, and never extracted. A pattern's missing
    shard is an error, or (``allow_missing``) a problem listed; members merged into one
    sample by webdataset's grouping are reported."""
    missing: list[str] = []
    shards = shard_paths(spec, allow_missing, missing)
    listing = Listing(origin=spec)
    if missing:
        listing.problems.append({"path": spec, "reason": f"{len(missing)} shard(s) missing "
                                 f"(read without them: --allow-missing): {_few(missing)}"})
    with bar(total=len(shards), unit="shard", desc="read shards",
             disable=not (progress and len(shards) > 1)) as pbar:
        for shard in shards:
            _read_shard(shard, listing, text_field, modalities)
            pbar.update(1)
    return listing


def _read_shard(shard: Path, listing: Listing, text_field, modalities) -> None:
    import tarfile

    size = shard.stat().st_size
    samples: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    label = str(shard)
    merged = _Merged(label)
    try:
        tf = tarfile.open(shard, "r:", ignore_zeros=True)
    except (tarfile.TarError, OSError) as exc:
        listing.problems.append({"path": label, "reason": f"not a readable tar shard ({exc})"})
        return
    expected = 0
    with tf, open(shard, "rb") as raw:
        while True:
            try:
                info = tf.next()
            except (tarfile.TarError, OSError, EOFError) as exc:
                listing.problems.append({"path": label, "reason": f"unreadable at byte "
                                         f"{tf.offset}: {exc}; the members before it are used"})
                break
            if info is None:
                break
            if info.offset > expected and _nonzero(raw, expected, info.offset):
                listing.problems.append({"path": label, "reason": f"unreadable bytes at "
                                         f"{expected}..{info.offset} skipped (a corrupt member)"})
            expected = info.offset_data + -(-info.size // 512) * 512
            if not info.isfile():
                continue
            if info.offset_data + info.size > size:
                listing.problems.append({"path": label, "reason": f"truncated at byte {size} "
                                         f"(member {info.name} at offset {info.offset} needs "
                                         f"{info.size} bytes); the members before it are used"})
                break
            key, ext = _sample_key(info.name)
            m = _ext_modality(ext)
            if m is None or (modalities is not None and m not in modalities):
                continue
            sample = samples.get(key)
            if sample is None:
                sample = samples[key] = {}
                order.append(key)
            if m == "text":
                kind = "txt" if ext.endswith("txt") else "json"
                if kind in sample:
                    merged.add(key, info.name)
                    continue
                if kind == "json" and "txt" in sample and not text_field:
                    continue   # a .txt caption wins unless a .json field is named
                sample[kind] = (info.name, _read_range(raw, info.offset_data, info.size))
                continue
            if m in sample:   # one item of a modality per sample (the first member)
                merged.add(key, info.name)
                continue
            digest = _hash_range(raw, info.offset_data, info.size, shard)
            sample[m] = Member(f"{label}{SEP}{info.name}", label, "tar", info.offset_data,
                               info.size, digest)
        if expected < size and _nonzero(raw, expected, size):
            listing.problems.append({"path": label, "reason": f"unreadable bytes from byte "
                                     f"{expected} to the end skipped"})
    merged.report(listing, samples)
    for key in order:
        sample = samples[key]
        for m, v in sample.items():
            if m in ("txt", "json"):
                continue
            listing.column(m).append(v)
        if "txt" in sample or "json" in sample:
            texts, name = _sample_texts(sample, text_field, label, listing)
            for i, t in enumerate(texts):
                listing.column("text").append(t)
                listing.sources.append(f"{label}{SEP}{name}" + (f"[{i}]" if i else ""))


class _Merged:
    """Members of one shard that webdataset's grouping put into a sample already holding a
    member of their modality (``a.1.jpg`` and ``a.2.jpg`` are both sample ``a``): counted,
    with the first such pair, and reported once per shard."""

    def __init__(self, label: str):
        self.label, self.count, self.keys, self.example = label, 0, set(), None

    def add(self, key: str, name: str) -> None:
        self.count += 1
        self.keys.add(key)
        if self.example is None:
            self.example = (key, name)

    def report(self, listing: "Listing", samples: Mapping) -> None:
        if not self.count:
            return
        key, name = self.example
        first = next((v[0] if isinstance(v, tuple) else str(v).rpartition(SEP)[2]
                      for v in samples.get(key, {}).values()), key)
        listing.problems.append({"path": self.label, "reason": (
            f"{self.count + len(self.keys)} members were merged into {len(self.keys)} "
            f"sample(s) and {self.count} of them not used: webdataset groups a shard's "
            "members by the name up to the first dot of the file name, so "
            f"{first} and {name} are both sample {key!r} (one member of a modality per "
            "sample is read); rename the members so their keys have no dot")})


def _sample_texts(sample, text_field, label, listing) -> tuple[list[str], str]:
    """The texts of one sample and the member they came from: a ``.txt`` member's text, else
    the caption field (``text_field``, or the first of :data:`DEFAULT_COLUMNS`) of its
    ``.json`` member (a list of captions gives each)."""
    if "txt" in sample and not (text_field and "json" in sample):
        name, data = sample["txt"]
        texts = member_texts(data, name)
    else:
        name, data = sample["json"]
        texts = member_texts(data, name, text_field)
        if text_field:   # the locator names the field, so the text can be read back
            name = f"{name}#{text_field}"
    if isinstance(texts, str):
        listing.problems.append({"path": f"{label}{SEP}{name}", "reason": texts})
        return [], name
    if not texts:
        listing.nulls += 1
    return texts, name


def member_texts(data: bytes, name: str, text_field: str | None = None) -> list[str] | str:
    """The texts of a ``.txt`` or ``.json`` caption member (a string: why there are none)."""
    if not name.lower().endswith(".json"):
        try:
            text = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            return "not UTF-8 text"
        return [text] if text else []
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON ({first_line(exc)})"
    for f in ((text_field,) if text_field else DEFAULT_COLUMNS["text"]):
        if isinstance(obj, dict) and f in obj:
            v = obj[f]
            vals = v if isinstance(v, list) else [v]
            return [str(x).strip() for x in vals if x is not None and str(x).strip()]
    return []


def _nonzero(raw, start: int, end: int) -> bool:
    raw.seek(start)
    left = end - start
    while left > 0:
        block = raw.read(min(left, _CHUNK))
        if not block:
            return False
        if block.count(0) != len(block):
            return True
        left -= len(block)
    return False


def _read_range(raw, offset: int, size: int) -> bytes:
    raw.seek(offset)
    return raw.read(size)


def _hash_range(raw, offset: int, size: int, where) -> bytes:
    h = file_hasher()
    raw.seek(offset)
    left = size
    while left > 0:
        block = raw.read(min(left, _CHUNK))
        if not block:
            raise MediaError(f"{where}: truncated at byte {offset + size - left}")
        h.update(block)
        left -= len(block)
    return h.digest()


# ------------------------------------------------------------------------------ tables

def _table_format(path: Path) -> str:
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: not a table (use .parquet, .csv, .tsv or .jsonl)")
    return fmt


def _pick_column(path, modality: str, column: str | None, present: list[str]) -> str:
    if column is not None:
        if column not in present:
            raise UsageError(f"{path}: no column {column!r}; the columns are "
                             f"{', '.join(present) or '(none)'}")
        return column
    for c in DEFAULT_COLUMNS.get(modality, ()):
        if c in present:
            return c
    raise _NoDefaultColumn(f"{path}: which column holds the {modality} items? name it with "
                           f"--{modality}-column (the columns are "
                           f"{', '.join(present) or '(none)'})")


def table_columns(path: Path) -> list[str]:
    """The column names of a table, from its schema or header (nothing else is read)."""
    fmt = _table_format(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such table")
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        if fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(path, parse_options=pcsv.ParseOptions(
                delimiter="\t" if fmt == "tsv" else ","))
            return list(reader.schema.names)
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    return list(obj) if isinstance(obj, dict) else []
        return []
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: cannot read the table ({first_line(exc)})") from None


def read_table(path, modality: str, column: str | None = None,
               progress: bool = False) -> Listing:
    """The ``modality`` items of one column of a table: texts (text), file paths (relative
    to the table's folder) or bytes (a Member per cell). Null and empty cells are skipped and
    counted; the table is read in record batches."""
    path = Path(path)
    present = table_columns(path)
    col = _pick_column(path, modality, column, present)
    return _cells_listing(path, modality, col,
                          (v for values in _column_batches(path, col) for v in values))


def _cells_listing(path, modality: str, col: str, cells) -> "Listing":
    """The listing of one column's ``cells`` (in row order): the items kept, the sources of
    texts, null and empty cells skipped and counted."""
    listing = Listing(origin=f"{path} ({col})")
    out = listing.column(modality)
    for row, v in enumerate(cells):
        item = _cell_item(path, modality, col, row, v, listing)
        if item is not None:
            out.append(item)
            if modality == "text":
                listing.sources.append(f"{path}{SEP}{col}[{row}]")
    if listing.nulls:
        listing.problems.append({"path": f"{path} ({col})",
                                 "reason": f"{listing.nulls} null or empty cell(s) skipped"})
    return listing


def _column_batches(path: Path, col: str) -> Iterator[list]:
    fmt = _table_format(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(columns=[col], batch_size=4096):
                yield batch.column(0).to_pylist()
        elif fmt in ("csv", "tsv"):
            import pyarrow as pa
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(
                path, parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",",
                                                      newlines_in_values=True),
                convert_options=pcsv.ConvertOptions(include_columns=[col],
                                                    column_types={col: pa.string()},
                                                    strings_can_be_null=True))
            for batch in reader:
                yield batch.column(0).to_pylist()
        else:
            with open(path, encoding="utf-8") as fh:
                chunk = []
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        raise UsageError(f"{path}:{n}: not a JSON line ({exc})") from None
                    chunk.append(obj.get(col) if isinstance(obj, dict) else None)
                    if len(chunk) >= 4096:
                        yield chunk
                        chunk = []
                yield chunk
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{path}: cannot read column {col!r} ({first_line(exc)})") from None


def _cell_item(path: Path, modality: str, col: str, row: int, v, listing: Listing):
    """One cell as a pool item: a text, a file path, or a Member holding its bytes."""
    if isinstance(v, dict):   # a datasets-style {"bytes", "path"} struct
        v = v.get("bytes") or v.get("path")
    if v is None or (isinstance(v, (str, bytes)) and not v.strip()):
        listing.nulls += 1
        return None
    if modality == "text":
        if isinstance(v, list):   # a list of captions: each is a text
            return None if not v else _first_texts(v, listing)
        return str(v).strip()
    if isinstance(v, (bytes, bytearray)):
        kind = "hf" if path.is_dir() else "parquet"
        return Member(f"{path}{SEP}{col}[{row}]", str(path), kind, row, len(v),
                      _content_digest(bytes(v)), column=col)
    p = Path(str(v))
    return p if p.is_absolute() else path.parent / p if not path.is_dir() else path / p


def _first_texts(v: list, listing: Listing):
    texts = [str(x).strip() for x in v if x is not None and str(x).strip()]
    if not texts:
        listing.nulls += 1
        return None
    return texts[0]


# ------------------------------------------------------------------------------ datasets

_HF_CACHE: dict[str, Any] = {}


def _load_hf(path: Path):
    key = str(path.resolve())
    ds = _HF_CACHE.get(key)
    if ds is not None:
        return ds
    from freebind.util.optional import require

    require("datasets", "reading a Hugging Face datasets folder", install="'freebind[hf]'")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise UsageError(f"{path}: not a datasets folder ({first_line(exc)})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if len(splits) != 1:
            raise UsageError(f"{path}: holds the splits {', '.join(splits)}; name one, e.g. "
                             f"{path / splits[0]}")
        ds = ds[splits[0]]
    _HF_CACHE[key] = ds
    return ds


def _hf_default_column(ds, modality: str) -> str | None:
    import datasets

    want = {"audio": datasets.Audio, "image": datasets.Image}.get(modality)
    if want is not None:
        found = [c for c, f in ds.features.items() if isinstance(f, want)]
        if len(found) == 1:
            return found[0]
    return None


def read_hf(path, modality: str, column: str | None = None, progress: bool = False) -> Listing:
    """The ``modality`` items of a ``datasets`` folder (``save_to_disk``): an Audio or Image
    feature (bytes become Members, paths stay paths) or a text column; read from the
    memory-mapped Arrow files, never decoded."""
    path = Path(path)
    ds = _load_hf(path)
    present = list(ds.column_names)
    col = column or _hf_default_column(ds, modality)
    col = _pick_column(path, modality, col, present)
    table = ds.data.table if hasattr(ds.data, "table") else ds.data

    def cells():
        for chunk in table.column(col).chunks:
            for start in range(0, len(chunk), 4096):
                for v in chunk.slice(start, 4096).to_pylist():
                    if isinstance(v, dict):   # an Audio/Image feature: bytes, else its path
                        v = v.get("bytes") or v.get("path")
                    yield v

    return _cells_listing(path, modality, col, cells())


# ------------------------------------------------------------------------------ reading back

_ROW_GROUPS: dict[tuple, Any] = {}


def read_member(item: Member) -> bytes:
    """The bytes of a member: a positioned read in a shard, one cell of a table."""
    try:
        if item.kind == "tar":
            with open(item.container, "rb") as fh:
                fh.seek(item.offset)
                data = fh.read(item.size)
            if len(data) != item.size:
                raise MediaError(f"{item}: truncated ({len(data)} of {item.size} bytes)")
            return data
        if item.kind == "parquet":
            return _parquet_cell(item)
        if item.kind == "hf":
            ds = _load_hf(Path(item.container))
            table = ds.data.table if hasattr(ds.data, "table") else ds.data
            v = table.column(item.column)[item.offset].as_py()
            if isinstance(v, dict):
                v = v.get("bytes")
            if not isinstance(v, (bytes, bytearray)):
                raise MediaError(f"{item}: the cell holds no bytes")
            return bytes(v)
    except MediaError:
        raise
    except OSError as exc:
        raise MediaError(f"{item}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:
        raise MediaError(f"{item}: cannot read ({first_line(exc)})") from None
    raise MediaError(f"{item}: unknown container kind {item.kind!r}")


def _parquet_cell(item: Member) -> bytes:
    """One cell's bytes (see :func:`_parquet_value`)."""
    v = _parquet_value(Path(item.container), item.column, item.offset, str(item))
    if isinstance(v, dict):
        v = v.get("bytes")
    if not isinstance(v, (bytes, bytearray)):
        raise MediaError(f"{item}: the cell holds no bytes")
    return bytes(v)


def _parquet_value(path: Path, column: str, row: int, where: str):
    """One cell of a parquet table, reading (and keeping, one at a time) the row group
    that holds it."""
    import pyarrow.parquet as pq

    st = os.stat(path)
    ident = (os.path.abspath(path), st.st_size, st.st_mtime_ns, column)
    got = _ROW_GROUPS.get("last")
    if got is None or got[0] != ident or not (got[1] <= row < got[2]):
        pf = pq.ParquetFile(path)
        start = 0
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if start <= row < start + n:
                col = pf.read_row_group(g, columns=[column]).column(0)
                got = (ident, start, start + n, col)
                _ROW_GROUPS["last"] = got
                break
            start += n
        else:
            raise MediaError(f"{where}: row {row} is past the table's end")
    return got[3][row - got[1]].as_py()


def as_member(item) -> Member | None:
    """``item`` as a Member: itself, or a plain locator string (one that crossed a process
    boundary as text) resolved again; None for anything else."""
    if isinstance(item, Member):
        return item
    if not isinstance(item, str) or SEP not in item:
        return None
    container, _, name = item.rpartition(SEP)
    cpath = Path(container)
    if not container or not cpath.exists():
        return None
    suffix = cpath.suffix.lower()
    if suffix in TAR_SUFFIXES:
        index = _tar_index(cpath)
        if name not in index:
            raise MediaError(f"{item}: no member {name} in {container}")
        offset, size = index[name]
        return Member(item, container, "tar", offset, size)
    m = re.fullmatch(r"(.+)\[(\d+)\]", name)
    if m is None:
        return None
    kind = "parquet" if TABLE_SUFFIXES.get(suffix) == "parquet" else \
        "hf" if cpath.is_dir() else None
    if kind is None:
        return None
    return Member(item, container, kind, int(m.group(2)), 0, column=m.group(1))


_TAR_INDEX: dict[tuple, dict[str, tuple[int, int]]] = {}


def _tar_index(path: Path) -> dict[str, tuple[int, int]]:
    import tarfile

    st = path.stat()
    ident = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    got = _TAR_INDEX.get(ident)
    if got is None:
        got = {}
        try:
            with tarfile.open(path, "r:", ignore_zeros=True) as tf:
                for info in tf:
                    if info.isfile():
                        got.setdefault(info.name, (info.offset_data, info.size))
        except (tarfile.TarError, OSError) as exc:
            raise MediaError(f"{path}: not a readable tar shard ({exc})") from None
        _TAR_INDEX.clear()
        _TAR_INDEX[ident] = got
    return got


def open_member(item) -> io.BytesIO | None:
    """A file object over a member's bytes (what the decoders read), or None when ``item``
    is an ordinary path."""
    m = as_member(item)
    return None if m is None else io.BytesIO(m.read())


def member_key(item) -> str | None:
    """The content key of a member (None for an ordinary path)."""
    m = as_member(item)
    return None if m is None else m.key


_TEXT_COLUMN: dict[str, Any] = {}   # the last CSV/JSON-lines column read, as Arrow


def text_of(source: str) -> str | None:
    """The text a text locator names (``SHARD::KEY.txt``, ``SHARD::KEY.json[i]``,
    ``SHARD::KEY.json#FIELD[i]`` (a field named by ``--text-column``),
    ``TABLE::COLUMN[ROW]``, ``DATASET::COLUMN[ROW]``), read again; None when ``source`` is
    not one. How imported rows from ``embed`` runs over shards and tables are keyed."""
    if SEP not in source:
        return None
    container, _, name = source.rpartition(SEP)
    cpath = Path(container)
    if not container or not cpath.exists():
        return None
    m = re.fullmatch(r"(.+?)(?:\[(\d+)\])?", name)
    base, index = m.group(1), int(m.group(2) or 0)
    if cpath.suffix.lower() in TAR_SUFFIXES:
        member, hashmark, field = base.rpartition("#")   # KEY.json#FIELD: a named field
        if not (hashmark and field and member.lower().endswith(".json")):
            member, field = base, None
        entry = _tar_index(cpath).get(member)
        if entry is None:
            raise MediaError(f"{source}: no member {member} in {container}")
        with open(cpath, "rb") as fh:
            data = _read_range(fh, *entry)
        texts = member_texts(data, member, field)
        if isinstance(texts, str) or index >= len(texts):
            raise MediaError(f"{source}: no text there")
        return texts[index]
    if m.group(2) is None:
        return None
    try:
        v = _cell_value(cpath, base, index, source)
    except (MediaError, UsageError):
        raise
    except Exception as exc:  # noqa: BLE001  (pyarrow raises many types)
        raise MediaError(f"{source}: cannot read the text ({first_line(exc)})") from None
    if isinstance(v, list):
        v = next((x for x in v if x is not None and str(x).strip()), None)
    if v is None:
        raise MediaError(f"{source}: no text there")
    return str(v).strip()


def _cell_value(cpath: Path, column: str, row: int, source: str):
    """One cell of a table or ``datasets`` folder, as Python: read from the memory-mapped
    Arrow table (``datasets``), the parquet row group holding it (one kept), or the column
    of a CSV/JSON-lines table kept as an Arrow array (one kept): never a column of Python
    objects."""
    if cpath.is_dir():
        ds = _load_hf(cpath)
        table = ds.data.table if hasattr(ds.data, "table") else ds.data
        col = table.column(column)
    elif _table_format(cpath) == "parquet":
        return _parquet_value(cpath, column, row, source)
    else:
        col = _arrow_column(cpath, column)
    if row >= len(col):
        raise MediaError(f"{source}: no text there")
    return col[row].as_py()


def _arrow_column(path: Path, column: str):
    """A CSV/TSV/JSON-lines column as an Arrow array (compact strings), the last kept."""
    import pyarrow as pa

    st = path.stat()
    ident = (str(path.resolve()), st.st_size, st.st_mtime_ns, column)
    got = _TEXT_COLUMN.get("last")
    if got is None or got[0] != ident:
        chunks = [pa.array(values, type=pa.string() if all(
            v is None or isinstance(v, str) for v in values) else None)
            for values in _column_batches(path, column) if values]
        arr = pa.chunked_array(chunks) if chunks else pa.chunked_array([], pa.string())
        got = _TEXT_COLUMN["last"] = (ident, arr)
    return got[1]


# ------------------------------------------------------------------------------ sample index

def _hash16(values) -> "Any":
    """16-byte digests of strings (``S16``): how sample keys and urls are looked up."""
    import numpy as np

    return np.array([hashlib.blake2b(str(v).encode("utf-8"), digest_size=16).digest()
                     for v in values], dtype="S16")


class SampleIndex:
    """The content keys of webdataset samples by sample key (``__key__``, the member name
    up to its first dot) and by the ``url`` field of the sample's ``.json``: how rows that
    clip-retrieval wrote over those shards (``key``/``url`` columns, no path) are keyed. Kept
    as sorted arrays (16-byte digests of the names, 32-byte content digests): about 50
    bytes a sample. A name met in two samples with different content is ambiguous and
    resolves to nothing (counted in ``problems``)."""

    def __init__(self, tables: dict, problems: list[dict]):
        self.tables, self.problems = tables, problems

    @classmethod
    def of(cls, spec, modalities, allow_missing: bool = False) -> "SampleIndex":
        import numpy as np

        missing: list[str] = []
        shards = shard_paths(os.fspath(spec), allow_missing, missing)
        problems = [{"path": os.fspath(spec), "reason": f"{len(missing)} shard(s) missing: "
                     f"{_few(missing)}"}] if missing else []
        parts: dict[tuple, list] = {}
        for shard in shards:
            got, merged = _shard_samples(shard, modalities)
            for (m, by), (names, digests) in got.items():
                parts.setdefault((m, by), []).append((_hash16(names),
                                                      np.array(digests, dtype="S32")))
            if merged:
                problems.append({"path": str(shard), "reason": (
                    f"{merged} member(s) merged into samples that already had one of their "
                    "modality (webdataset groups by the name up to the first dot); only "
                    "the first of each is found by key or url")})
        tables = {}
        for (m, by), got in parts.items():
            names = np.concatenate([g[0] for g in got])
            digests = np.concatenate([g[1] for g in got])
            order = np.argsort(names, kind="stable")
            names, digests = names[order], digests[order]
            dup = np.zeros(len(names), dtype=bool)
            same = names[1:] == names[:-1]
            clash = same & (digests[1:] != digests[:-1])
            dup[1:] |= clash
            dup[:-1] |= clash
            if dup.any():
                problems.append({"path": os.fspath(spec), "reason": (
                    f"{int(dup.sum())} {m} samples share a {by} with another sample of "
                    "different content; rows naming them are skipped")})
                digests[dup] = b""
            tables[(m, by)] = (names, digests)
        return cls(tables, problems)

    def lookup(self, modality: str, by: str, values) -> "Any":
        """Hex content keys (``S64``) of the samples ``values`` name (``b""``: none)."""
        import numpy as np

        out = np.zeros(len(values), dtype="S64")
        names, digests = self.tables.get((modality, by), (np.zeros(0, "S16"),
                                                          np.zeros(0, "S32")))
        if not len(names) or not len(values):
            return out
        q = _hash16(["" if v is None else v for v in values])
        pos = np.minimum(np.searchsorted(names, q), len(names) - 1)
        hit = (names[pos] == q) & np.array([v is not None for v in values])
        for i in np.flatnonzero(hit).tolist():
            d = digests[pos[i]]
            if d:
                out[i] = bytes(d).ljust(32, b"\0").hex()
        return out


def _shard_samples(shard: Path, modalities) -> tuple[dict[tuple, tuple[list, list]], int]:
    """``{(modality, "key" | "url"): (names, raw content digests)}`` of one shard's samples
    (the first member of a modality in a sample; its ``.json``'s ``url``), and how many
    members were merged into a sample holding one of their modality already."""
    import tarfile

    digests: dict[tuple[str, str], bytes] = {}
    urls: dict[str, str] = {}
    merged = 0
    try:
        with tarfile.open(shard, "r:", ignore_zeros=True) as tf, open(shard, "rb") as raw:
            for info in tf:
                if not info.isfile():
                    continue
                key, ext = _sample_key(info.name)
                m = _ext_modality(ext)
                if m in modalities and (m, key) in digests:
                    merged += 1
                elif m in modalities:
                    digests[(m, key)] = _hash_range(raw, info.offset_data, info.size, shard)
                elif ext.endswith("json") and key not in urls:
                    texts = _json_field(_read_range(raw, info.offset_data, info.size), "url")
                    if texts:
                        urls[key] = texts
    except (tarfile.TarError, OSError) as exc:
        raise UsageError(f"{shard}: not a readable tar shard ({exc})") from None
    out: dict[tuple, tuple[list, list]] = {}
    for (m, key), d in digests.items():
        names, ds = out.setdefault((m, "key"), ([], []))
        names.append(key)
        ds.append(d)
        if key in urls:
            names, ds = out.setdefault((m, "url"), ([], []))
            names.append(urls[key])
            ds.append(d)
    return out, merged


def _json_field(data: bytes, name: str) -> str | None:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    v = obj.get(name) if isinstance(obj, dict) else None
    return None if v is None else str(v)


# ------------------------------------------------------------------------------ row metadata

#: fields of an input's row that ``embed``'s metadata keeps (as clip-retrieval does), beside
#: the field or column a row's item was read from
KEPT_FIELDS = ("caption", "url", "key")


def source_fields(sources: list[str], texts: bool = False) -> dict[str, list]:
    """The kept fields (:data:`KEPT_FIELDS`, and the column or ``.json`` field a text was
    read from) of the input rows that ``sources`` (locators ``CONTAINER::NAME``) came from,
    as columns of strings (None where a row lacks one): a tar sample's key (``__key__``),
    its ``.txt`` or ``.json`` caption and its ``.json`` fields; a table's or ``datasets``
    folder's cells of that row, read once per table for all its rows (one row group at a
    time); the column a source names is kept too when they are ``texts``. Sources of plain
    files and texts files give nothing."""
    cols: dict[str, list] = {}
    by_table: dict[str, list[tuple[int, int, str]]] = {}
    for i, src in enumerate(sources):
        container, sep, name = str(src).rpartition(SEP)
        if not sep or not container:
            continue
        if Path(container).suffix.lower() in TAR_SUFFIXES:
            for f, v in _sample_fields(Path(container), name).items():
                cols.setdefault(f, [None] * len(sources))[i] = v
            continue
        m = re.fullmatch(r"(.+)\[(\d+)\]", name)
        if m is not None:
            by_table.setdefault(container, []).append((i, int(m.group(2)), m.group(1)))
    for container, rows in by_table.items():
        try:
            got = _table_fields(Path(container), rows, texts)
        except (MediaError, UsageError, OSError):
            continue
        for f, values in got.items():
            col = cols.setdefault(f, [None] * len(sources))
            for (i, _, _), v in zip(rows, values):
                col[i] = v
    return cols


def _sample_fields(shard: Path, name: str) -> dict[str, str]:
    """Key, caption, url (and a named ``.json`` field) of the sample holding member
    ``name`` (``KEY.ext``, ``KEY.json#FIELD``, with an optional ``[i]``) of ``shard``."""
    base = re.sub(r"\[\d+\]$", "", name)
    member, hashmark, field = base.rpartition("#")
    if not (hashmark and member.lower().endswith(".json")):
        member, field = base, ""
    key, _ = _sample_key(member)
    out = {"key": key}
    try:
        index = _tar_index(shard)
    except MediaError:
        return out
    with open(shard, "rb") as fh:
        txt = index.get(f"{key}.txt")
        if txt is not None:
            texts = member_texts(_read_range(fh, *txt), f"{key}.txt")
            if isinstance(texts, list) and texts:
                out["caption"] = texts[0]
        js = index.get(f"{key}.json")
        if js is not None:
            try:
                obj = json.loads(_read_range(fh, *js))
            except (ValueError, UnicodeDecodeError):
                obj = None
            if isinstance(obj, dict):
                for f in (*KEPT_FIELDS, field):
                    if f and obj.get(f) is not None and (f != "caption" or "caption" not in out):
                        out[f] = _field_text(obj[f])
                out["key"] = key
    return out


def _field_text(v) -> str:
    if isinstance(v, list):
        v = next((x for x in v if x is not None and str(x).strip()), "")
    return str(v)


def _table_fields(path: Path, rows: list[tuple[int, int, str]],
                  named: bool) -> dict[str, list]:
    """The kept columns (and, ``named``, the columns the rows name) of ``rows``
    (``(i, row, column)``) of one table or ``datasets`` folder, in the order of ``rows``."""
    import numpy as np

    present = list(_load_hf(path).column_names) if path.is_dir() else table_columns(path)
    named_cols = (c for _, _, c in rows) if named else ()
    want = [c for c in dict.fromkeys([*KEPT_FIELDS, *named_cols]) if c in present]
    if not want:
        return {}
    want_rows = np.array([r for _, r, _ in rows], dtype=np.int64)
    if path.is_dir():
        ds = _load_hf(path)
        table = ds.data.table if hasattr(ds.data, "table") else ds.data
        got = table.select(want).take(want_rows)
        return {c: [None if v is None else _field_text(v) for v in got.column(c).to_pylist()]
                for c in want}
    if _table_format(path) == "parquet":
        return _parquet_rows(path, want, want_rows)
    values = {c: [None] * len(want_rows) for c in want}
    pos = {r: [] for r in want_rows.tolist()}
    for j, r in enumerate(want_rows.tolist()):
        pos[r].append(j)
    for c in want:
        start = 0
        for batch in _column_batches(path, c):
            for r in range(start, start + len(batch)):
                for j in pos.get(r, ()):
                    v = batch[r - start]
                    values[c][j] = None if v is None else _field_text(v)
            start += len(batch)
    return values


def _parquet_rows(path: Path, columns: list[str], rows) -> dict[str, list]:
    """Cells of ``columns`` at ``rows`` of a parquet table, one row group read at a time."""
    import numpy as np
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    bounds = np.cumsum([0] + [pf.metadata.row_group(g).num_rows
                              for g in range(pf.metadata.num_row_groups)])
    group = np.searchsorted(bounds, rows, side="right") - 1
    out = {c: [None] * len(rows) for c in columns}
    for g in np.unique(group).tolist():
        if not 0 <= g < pf.metadata.num_row_groups:
            continue
        sel = np.flatnonzero(group == g)
        table = pf.read_row_group(g, columns=columns).take(rows[sel] - bounds[g])
        for c in columns:
            for j, v in zip(sel.tolist(), table.column(c).to_pylist()):
                out[c][j] = None if v is None else _field_text(v)
    return out
