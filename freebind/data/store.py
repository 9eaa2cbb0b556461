"""The embedding store: every pool item embedded once per space, cached on disk.

Entries are content-addressed: an item's key is the SHA-256 of its file content (audio,
image, …) or of its text, so renaming or copying a file reuses its embedding, and a second
build that shares spaces and pools re-encodes nothing. Entries live under

    <root>/<space-slug>-<fingerprint hash>/<modality>/shard-<hash>.npz

Each shard holds ``keys`` (hex digests, ``S64``) and ``emb`` (float32 ``[n, dim]``) and is
written atomically (temporary file + ``os.replace``), so a killed run leaves only complete
shards. Items still missing are encoded in shards of ``shard_size`` laid out from the same
list of missing items, so a resumed run encodes exactly the batches the uninterrupted run
would have: at most the one shard in flight when the run died is recomputed, and the result
is identical.

The store keeps embeddings as float32 (the default) or float16 (``dtype="float16"``: half
the disk, and half the bytes to stream). Shards of either precision are read back the same
way; float16 entries come back as float32 within 1e-3 of the encoder's output (unit rows).
Large pools need not be loaded: :meth:`EmbeddingStore.view` (or ``embed(..., lazy=True)``)
returns a :class:`PoolView`, the pool's rows in item order read memory-mapped from the
shards on demand, so retrieval and training can stream a pool larger than memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from freebind.util.atomic import atomic_write, atomic_write_text
from freebind.util.progress import bar
from freebind.util.errors import FreebindError, MediaError

from freebind.util.vocab import TEXT_MODALITIES  # noqa: E402  (items are strings)
from freebind.util.text import reason
from freebind.util.arrays import as_float32
from freebind.data.items import as_sequence, content_keys
_HASH_CHUNK = 1 << 20
#: Storage precisions by name (``--store-dtype``).
STORE_DTYPES = {"fp32": np.float32, "float32": np.float32, "fp16": np.float16,
                "float16": np.float16}


def store_dtype(name) -> np.dtype:
    """``"fp32"``/``"float32"`` or ``"fp16"``/``"float16"`` (or a numpy dtype) → dtype."""
    if isinstance(name, str):
        try:
            return np.dtype(STORE_DTYPES[name.lower()])
        except KeyError:
            raise FreebindError(f"store dtype {name!r}: expected fp32 or fp16") from None
    dt = np.dtype(name)
    if dt not in (np.float32, np.float16):
        raise FreebindError(f"store dtype {dt}: expected float32 or float16")
    return dt


def default_root() -> Path:
    """``$FREEBIND_HOME/cache`` (``FREEBIND_HOME`` defaults to ``~/.cache/freebind``)."""
    home = os.environ.get("FREEBIND_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "freebind")
    return Path(home) / "cache"


@dataclass(frozen=True)
class EmbedFailure:
    """An item that could not be embedded: its position in the request, the item, why."""

    index: int
    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


def text_key(text: str) -> str:
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


def file_key(path: str | os.PathLike) -> str:
    from freebind.data.readers import file_hasher

    h = file_hasher()
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(_HASH_CHUNK)
                if not block:
                    break
                h.update(block)
    except OSError as exc:
        raise MediaError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return h.hexdigest()


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` atomically (temporary file in the same folder)."""
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


class EmbeddingStore:
    """A content-addressed, sharded, resumable cache of embeddings.

    ``embed(space, modality, items)`` returns float32 ``[len(items), space.dim]`` in item
    order, encoding only what the cache lacks. ``on_error="skip"`` turns undecodable items
    into :class:`EmbedFailure` records: the call then returns ``(array, kept, failures)``
    with the rows of the items kept (``kept`` are their indices in ``items``)."""

    def __init__(self, root: str | os.PathLike | None = None, shard_size: int = 2048,
                 dtype="float32"):
        self.root = Path(root) if root is not None else default_root()
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        self.shard_size = int(shard_size)
        #: precision new shards are written in (existing shards are read as they are)
        self.dtype = store_dtype(dtype)
        self._file_keys: dict[tuple, str] = {}
        #: items encoded (not read from the cache) by this store object, for reports
        self.encoded = 0

    # --- layout ---------------------------------------------------------------------------
    def space_dir(self, space) -> Path:
        fp = str(space.fingerprint)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(getattr(space, "name", "space")))[:40]
        digest = hashlib.sha256(fp.encode("utf-8")).hexdigest()[:20]
        return self.root / f"{slug}-{digest}"

    def modality_dir(self, space, modality: str) -> Path:
        return self.space_dir(space) / modality

    def _write_space_meta(self, space) -> None:
        meta = self.space_dir(space) / "space.json"
        if meta.exists():
            return
        data = {"name": str(getattr(space, "name", "")), "fingerprint": str(space.fingerprint),
                "dim": int(space.dim)}
        atomic_write_text(meta, json.dumps(data, indent=1))

    # --- keys -----------------------------------------------------------------------------
    def key(self, modality: str, item: Any) -> str:
        """The content key of one item (raises MediaError when a file cannot be read). An
        item that carries its own ``content_key`` (64 hex digits: a member of an archive,
        a row of a table, an item whose embedding was computed elsewhere) keeps it."""
        own = getattr(item, "content_key", None)
        if own is not None:
            return str(own)
        if modality in TEXT_MODALITIES:
            if not isinstance(item, str):
                raise MediaError(f"{item!r}: a text item must be a string")
            return text_key(item)
        if isinstance(item, str) and "::" in item:  # a medium inside a tar shard or table
            from freebind.data.readers import member_key

            key = member_key(item)
            if key is not None:
                return key
        path = os.fspath(item)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise MediaError(f"{path}: cannot read file ({exc.strerror or exc})") from None
        memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        key = self._file_keys.get(memo)
        if key is None:
            key = self._file_keys[memo] = file_key(path)
        return key

    # --- index ----------------------------------------------------------------------------
    def _shards(self, mdir: Path) -> list[Path]:
        if not mdir.is_dir():
            return []
        return sorted(p for p in mdir.glob("shard-*.npz"))

    def _index(self, mdir: Path) -> "ShardIndex":
        """key -> (shard file, row) over every complete shard, as sorted arrays."""
        shards = self._shards(mdir)
        keys, shard_of, row_of = [], [], []
        for i, path in enumerate(shards):
            with np.load(path) as z:
                k = z["keys"]
            keys.append(k.astype("S64", copy=False))
            shard_of.append(np.full(len(k), i, dtype=np.int32))
            row_of.append(np.arange(len(k), dtype=np.int32))
        if not keys:
            return ShardIndex([], np.zeros(0, "S64"), np.zeros(0, np.int32),
                              np.zeros(0, np.int32))
        return ShardIndex(shards, np.concatenate(keys), np.concatenate(shard_of),
                          np.concatenate(row_of))

    def cached(self, space, modality: str) -> int:
        """How many distinct items of ``modality`` the cache holds for ``space``."""
        return len(self._index(self.modality_dir(space, modality)))

    def _index_with(self, mdir: Path, fallback, modality: str) -> "ShardIndex":
        """``mdir``'s index, with ``fallback``'s entries for the keys it lacks."""
        own = self._index(mdir)
        if fallback is None:
            return own
        return ShardIndex.union(own, self._index(self.modality_dir(fallback, modality)))

    def index(self, space, modality: str) -> "ShardIndex":
        """The cached keys of ``modality`` for ``space`` and where they live (compact,
        searchable: :meth:`ShardIndex.find`)."""
        return self._index(self.modality_dir(space, modality))

    def cached_keys(self, space, modality: str) -> set[str]:
        """The content keys of ``modality`` the cache holds for ``space``."""
        return set(self._index(self.modality_dir(space, modality)))

    def put(self, space, modality: str, keys: Sequence[str], emb: np.ndarray) -> Path:
        """Write one shard of embeddings computed elsewhere (``keys[i]`` → ``emb[i]``): the
        same file, named by its keys, that encoding those items here writes, so a retried
        or repeated write is harmless."""
        emb = np.asarray(emb, dtype=np.float32)
        if len(keys) != len(emb) or not len(keys):
            raise ValueError("put needs as many embeddings as keys, at least one")
        self._write_space_meta(space)
        return self._write_shard(self.modality_dir(space, modality), keys, emb)

    # --- the work -------------------------------------------------------------------------
    def embed(self, space, modality: str, items: Sequence[Any], batch_size: int = 64,
              progress: bool = True, on_error: str = "raise", lazy: bool = False,
              fallback=None):
        """Embeddings of ``items`` (see the class). ``lazy=True`` returns a
        :class:`PoolView` of the rows instead of loading them. ``fallback`` (a space-like
        identity, such as rows imported for this space: :mod:`freebind.run.importer`) is read
        for the keys ``space``'s own entries lack, so only what neither holds is encoded."""
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        if modality not in tuple(space.modalities):
            raise FreebindError(f"space {getattr(space, 'name', space)!r} has no "
                                f"{modality!r} encoder (it has {', '.join(space.modalities)})")
        items = as_sequence(items)
        failures: dict[int, EmbedFailure] = {}

        def skip(i, item, exc):
            if on_error == "raise":
                raise exc
            failures[i] = EmbedFailure(i, _item_text(item), reason(exc, item))

        # b"": the item could not be keyed
        keys = content_keys(items, lambda item: self.key(modality, item), skip)
        mdir = self.modality_dir(space, modality)
        index = self._index_with(mdir, fallback, modality)
        # distinct keys still missing, in first-appearance order (the shard layout)
        absent = np.flatnonzero((index.find(keys) < 0) & (keys != b""))
        if absent.size:
            _, first = np.unique(keys[absent], return_index=True)
            firsts = absent[np.sort(first)]
            del absent, first
            self._write_space_meta(space)
            bad_keys = self._encode_missing(space, modality, items, keys, firsts, mdir,
                                            batch_size, progress, on_error)
            for k, exc in bad_keys.items():
                for i in np.flatnonzero(keys == k.encode("ascii")):
                    i = int(i)
                    if i not in failures:
                        failures[i] = EmbedFailure(i, _item_text(items[i]),
                                                   reason(exc, items[i]))
            index = self._index_with(mdir, fallback, modality)

        kept = np.ones(len(items), dtype=bool)
        kept[list(failures)] = False
        kept = np.flatnonzero(kept)
        if lazy:
            out = self._view(mdir, index, keys[kept], int(space.dim))
            if on_error == "skip":
                return (out, kept.astype(np.int64), [failures[i] for i in sorted(failures)])
            return out
        view = self._view(mdir, index, keys[kept], int(space.dim))
        out = np.asarray(view) if len(kept) else np.empty((0, int(space.dim)), np.float32)
        if on_error == "skip":
            return out, np.asarray(kept, dtype=np.int64), [failures[i] for i in sorted(failures)]
        return out

    def _encode_missing(self, space, modality, items, keys: np.ndarray, firsts: np.ndarray,
                        mdir: Path, batch_size: int, progress: bool,
                        on_error: str) -> dict[str, Exception]:
        """Encode items ``firsts`` (positions in ``items``, one per missing key, in layout
        order) in shards of ``shard_size``; returns the keys that failed and why."""
        bad: dict[str, Exception] = {}
        desc = f"embed {getattr(space, 'name', '')} {modality}"
        with bar(total=len(firsts), unit="item", desc=desc, disable=not progress) as pbar:
            for start in range(0, len(firsts), self.shard_size):
                chunk = firsts[start:start + self.shard_size].tolist()
                shard_keys, shard_rows = [], []
                for b in range(0, len(chunk), batch_size):
                    batch = chunk[b:b + batch_size]
                    got = self._encode_batch(space, modality, [items[i] for i in batch],
                                             on_error)
                    for i, emb in zip(batch, got):
                        k = keys[i].decode("ascii")
                        if isinstance(emb, Exception):
                            bad[k] = emb
                        else:
                            shard_keys.append(k)
                            shard_rows.append(emb)
                    pbar.update(len(batch))
                if shard_keys:
                    self._write_shard(mdir, shard_keys, np.stack(shard_rows))
                    self.encoded += len(shard_keys)
        return bad

    def _write_shard(self, mdir: Path, keys: Sequence[str], emb: np.ndarray,
                     dtype=None) -> Path:
        """One shard file, named by its keys, in ``dtype`` (default: the store's; atomic)."""
        emb = np.asarray(emb, dtype=np.float32).astype(dtype or self.dtype, copy=False)
        karr = np.asarray(keys, dtype="S64")
        name = hashlib.sha256(b"".join(karr.tolist())).hexdigest()[:24]
        path = mdir / f"shard-{name}.npz"
        atomic_save_npz(path, keys=karr, emb=emb)
        return path

    # --- precomputed embeddings and views -------------------------------------------------
    def write(self, space, modality: str, keys: Sequence[str], emb) -> int:
        """Add precomputed embeddings ``emb [len(keys), space.dim]`` under content ``keys``
        (:func:`text_key`/:func:`file_key` digests, or any 64-hex-digit key) in shards of
        ``shard_size``; keys already cached (or repeated) are skipped. Returns how many were
        written. Many blocks in a row: :meth:`writer` (the index is read once)."""
        with self.writer(space, modality) as w:
            return w.add(keys, emb)

    def writer(self, space, modality: str, shard_rows: int | None = None) -> "StoreWriter":
        """A :class:`StoreWriter` adding precomputed rows of ``modality`` for ``space``
        block by block: the store's index is read once, whatever the number of blocks.
        ``shard_rows``: rows a shard (default ``shard_size``)."""
        return StoreWriter(self, space, modality, shard_rows)

    def view(self, space, modality: str, keys: Sequence[str]) -> "PoolView":
        """The cached rows of ``keys`` (in that order) as a memory-mapped :class:`PoolView`;
        a key the cache lacks is an error."""
        mdir = self.modality_dir(space, modality)
        return self._view(mdir, self._index(mdir), keys, int(space.dim))

    def _view(self, mdir: Path, index: "ShardIndex", keys, dim: int) -> "PoolView":
        keys = np.asarray(keys, dtype="S64")
        pos = index.find(keys)
        if (pos < 0).any():
            k = keys[int(np.flatnonzero(pos < 0)[0])].decode("ascii")
            raise FreebindError(f"{mdir}: no cached embedding for key {k}")
        used, shard_of = np.unique(index.shard_of[pos], return_inverse=True)
        return PoolView([index.shards[int(i)] for i in used], shard_of.astype(np.int32),
                        index.row_of[pos], dim)

    def _encode_batch(self, space, modality, batch, on_error):
        """Rows of one batch; under ``skip`` a failing batch is retried item by item and the
        undecodable items come back as their exception."""
        try:
            return list(as_float32(space.encode(modality, batch, batch_size=len(batch))))
        except MediaError:
            if on_error == "raise" and len(batch) == 1:
                raise
            if on_error == "raise":
                for item in batch:  # find the culprit and report it
                    space.encode(modality, [item], batch_size=1)
                raise
        rows: list[Any] = []
        for item in batch:
            try:
                rows.append(as_float32(space.encode(modality, [item], batch_size=1))[0])
            except MediaError as exc:
                rows.append(exc)
        return rows


def _item_text(item: Any) -> str:
    return item if isinstance(item, str) else os.fspath(item)


# ------------------------------------------------------------------------------ writer

class StoreWriter:
    """Precomputed rows added to one ``(space, modality)`` of a store, block after block
    (``with store.writer(space, m) as w: w.add(keys, rows)``), in linear time and memory
    bounded by the keys: the shards already there are indexed once, the keys given since
    are kept as a few sorted runs of raw digests (``S32``, 32 bytes a key), rows wait in
    one buffer of at most ``shard_rows`` and go out as full shards (the last one on
    :meth:`close`). Float16 rows are written as float16 shards (read back exactly, half
    the disk), others in the store's dtype. A key already in the store or given before is
    skipped."""

    def __init__(self, store: "EmbeddingStore", space, modality: str,
                 shard_rows: int | None = None):
        self.store, self.space, self.modality = store, space, modality
        self.shard_rows = max(1, int(shard_rows or store.shard_size))
        self.dim = int(space.dim)
        self.mdir = store.modality_dir(space, modality)
        self._have = store._index(self.mdir)
        self._runs: list[np.ndarray] = []     # sorted raw digests of the keys met
        self._keys: list[np.ndarray] = []     # the buffer: keys and rows not yet written
        self._rows: list[np.ndarray] = []
        self._buffered = 0
        self.written = 0
        self.met = 0

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def _met(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` (raw ``S32`` digests) this writer met before."""
        got = np.zeros(len(keys), dtype=bool)
        for run in self._runs:
            pos = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            got |= run[pos] == keys
        return got

    def add(self, keys, emb) -> int:
        """Add ``emb[i]`` under ``keys[i]`` (64 lowercase hex digits each); returns how many
        rows are new to the store (the first of a repeated key is kept). ``met`` counts the
        distinct keys given so far."""
        karr = _hex_keys(keys)
        if len(karr) != len(emb) or (len(karr) and np.shape(emb)[1] != self.dim):
            raise FreebindError(f"write: {len(karr)} keys but embeddings of shape "
                                f"{tuple(np.shape(emb))} (space dim {self.dim})")
        if not len(karr):
            return 0
        uniq, first = np.unique(karr, return_index=True)
        raw = _raw_digests(uniq)
        new = ~self._met(raw)
        uniq, first = uniq[new], first[new]
        if not len(uniq):
            return 0
        self._remember(raw[new])
        self.met += len(uniq)
        rows = np.sort(first[self._have.find(uniq) < 0])
        if not len(rows):
            return 0
        block = np.asarray(emb[rows])
        self._keys.append(karr[rows])
        self._rows.append(block if block.dtype == np.float16 else
                          block.astype(np.float32, copy=False))
        self._buffered += len(rows)
        if self._buffered >= self.shard_rows:
            self._drain(final=False)
        return int(len(rows))

    def _remember(self, sorted_keys: np.ndarray) -> None:
        self._runs.append(sorted_keys)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            b, a = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([a, b])
            del a, b
            merged.sort(kind="stable")   # two sorted runs: a linear merge
            self._runs.append(merged)

    def _drain(self, final: bool) -> None:
        """Write the buffer's full shards (and, ``final``, the rest)."""
        keys, rows = np.concatenate(self._keys), np.concatenate(self._rows)
        size = self.shard_rows
        stop = len(keys) if final else len(keys) - len(keys) % size
        if stop and self.written == 0:
            self.store._write_space_meta(self.space)
        # float16 rows stay float16 (exact, half the bytes); others in the store's dtype
        dtype = np.float16 if rows.dtype == np.float16 else None
        for start in range(0, stop, size):
            end = min(stop, start + size)
            self.store._write_shard(self.mdir, keys[start:end], rows[start:end], dtype)
            self.written += end - start
        self._keys, self._rows = [keys[stop:]], [rows[stop:]]
        self._buffered = len(keys) - stop

    def close(self) -> int:
        """Write what is buffered; returns how many rows this writer wrote."""
        if self._buffered:
            self._drain(final=True)
        return self.written


def _raw_digests(hex_keys: np.ndarray) -> np.ndarray:
    """``S64`` lowercase hex keys as their 32 raw bytes (``S32``; the same order)."""
    u = hex_keys.view(np.uint8).reshape(len(hex_keys), 64)
    v = np.where(u >= 97, u - 87, u - 48).astype(np.uint8)
    return np.ascontiguousarray((v[:, 0::2] << 4) | v[:, 1::2]).view("S32").reshape(-1)


def _hex_keys(keys) -> np.ndarray:
    """``keys`` as ``S64``, each checked to be 64 lowercase hex digits."""
    arr = np.asarray(keys if len(keys) else np.zeros(0, "S64"))
    if arr.dtype.kind == "O":
        arr = arr.astype(str)
    if arr.dtype.kind not in "US":
        raise FreebindError(f"write: keys of type {arr.dtype}; expected hex strings")
    lengths = np.char.str_len(arr)
    raw = arr.astype("S64")
    u = raw.view(np.uint8).reshape(len(raw), 64) if len(raw) else np.zeros((0, 64), np.uint8)
    ok = (lengths == 64) & (((u >= 48) & (u <= 57)) | ((u >= 97) & (u <= 102))).all(axis=1)
    if not ok.all():
        k = str(np.asarray(keys)[int(np.flatnonzero(~ok)[0])])
        raise FreebindError(f"write: key {k[:80]!r} is not 64 lowercase hex digits")
    return raw


# ------------------------------------------------------------------------------ index

class ShardIndex:
    """Where each cached key lives: sorted fixed-width keys (``S64``) with their shard and
    row, searched with :func:`numpy.searchsorted`: about 72 bytes per entry, where a Python
    dict of hex strings costs several hundred. A key stored twice resolves to its first
    shard (in file-name order)."""

    def __init__(self, shards: Sequence[Path], keys: np.ndarray, shard_of: np.ndarray,
                 row_of: np.ndarray):
        order = np.argsort(keys, kind="stable")
        k = keys[order]
        first = np.ones(len(k), dtype=bool)
        first[1:] = k[1:] != k[:-1]
        sel = order[first]
        self.shards = list(shards)
        self.keys = keys[sel]
        self.shard_of = shard_of[sel]
        self.row_of = row_of[sel]

    @staticmethod
    def union(first: "ShardIndex", second: "ShardIndex") -> "ShardIndex":
        """Both indexes' keys; a key in both resolves to ``first``'s entry."""
        return ShardIndex(first.shards + second.shards,
                          np.concatenate([first.keys, second.keys]),
                          np.concatenate([first.shard_of,
                                          second.shard_of + len(first.shards)]).astype(np.int32),
                          np.concatenate([first.row_of, second.row_of]))

    def find(self, keys) -> np.ndarray:
        """Positions of ``keys`` (an ``S64`` array or strings) in the index, -1 if absent."""
        q = np.asarray(keys, dtype="S64")
        if not len(self.keys):
            return np.full(q.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
        return np.where(self.keys[pos] == q, pos, -1)

    def __contains__(self, key) -> bool:
        return bool(self.find([key])[0] >= 0)

    def __getitem__(self, key) -> tuple[Path, int]:
        p = int(self.find([key])[0])
        if p < 0:
            raise KeyError(key)
        return self.shards[int(self.shard_of[p])], int(self.row_of[p])

    def __len__(self) -> int:
        return int(len(self.keys))

    def __iter__(self):
        return (k.decode("ascii") for k in self.keys.tolist())


# ------------------------------------------------------------------------------ views

def npz_member(path: Path, name: str = "emb") -> tuple[int, tuple, np.dtype]:
    """(byte offset, shape, dtype) of the raw array ``name`` inside an uncompressed ``.npz``,
    so it can be memory-mapped (``np.load`` does not map members of an archive)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise FreebindError(f"{path}: {name} is compressed; cannot map it")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
        if head[:4] != b"PK\x03\x04":
            raise FreebindError(f"{path}: not a zip member header at {info.header_offset}")
        n_name, n_extra = struct.unpack("<HH", head[26:30])
        fh.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        if fortran:
            raise FreebindError(f"{path}: {name} is Fortran-ordered")
        return fh.tell(), tuple(shape), np.dtype(dtype)


class PoolView:
    """A pool's embeddings in item order, read from store shards on demand.

    Runs of consecutive rows (blocks) are read with positioned reads, scattered rows
    (gathers) through short-lived memory maps (opened for one read, closed after), so what
    a reader holds is only what it asked for: peak memory follows the blocks read, not the
    pool. Reads come back as float32 (float16 shards are upcast). Supports
    ``len``, ``.shape``, ``view[a:b]`` (a block), ``view[int array]`` (a gather),
    :meth:`subset` (a view of some rows) and ``np.asarray(view)`` (everything, float32)."""

    ndim = 2

    def __init__(self, shards: Sequence[Path], shard_of: np.ndarray, row_of: np.ndarray,
                 dim: int, _layout: dict | None = None):
        self.shards = list(shards)
        self.shard_of = np.asarray(shard_of, dtype=np.int32)
        # a row within one shard (shard_size rows at most): 4 bytes, not 8, per pool row
        self.row_of = np.asarray(row_of, dtype=np.int32)
        self.dim = int(dim)
        self._layout = _layout if _layout is not None else {}

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.row_of.shape[0]), self.dim)

    def __len__(self) -> int:
        return int(self.row_of.shape[0])

    @property
    def stored_dtype(self) -> np.dtype:
        """The precision of the first shard (float32 or float16)."""
        return self._member(0)[2] if self.shards else np.dtype(np.float32)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def _member(self, s: int):
        got = self._layout.get(s)
        if got is None:
            got = self._layout[s] = npz_member(self.shards[s])
            if len(got[1]) != 2 or got[1][1] != self.dim:
                raise FreebindError(f"{self.shards[s]}: cached embeddings have shape "
                                    f"{got[1]}, space has dim {self.dim}; delete the folder "
                                    "to rebuild")
        return got

    @staticmethod
    def concat(views: Sequence["PoolView"]) -> "PoolView":
        """One view of several views' rows, one after the other (nothing is read)."""
        shards: list[Path] = []
        slot: dict[Path, int] = {}
        shard_of, row_of = [], []
        dims = {v.dim for v in views}
        if len(dims) != 1:
            raise FreebindError(f"cannot join views of dims {sorted(dims)}")
        for v in views:
            remap = np.empty(len(v.shards), dtype=np.int32)
            for i, s in enumerate(v.shards):
                if s not in slot:
                    slot[s] = len(shards)
                    shards.append(s)
                remap[i] = slot[s]
            shard_of.append(remap[v.shard_of] if len(v.shards) else v.shard_of)
            row_of.append(v.row_of)
        return PoolView(shards, np.concatenate(shard_of), np.concatenate(row_of), dims.pop())

    def subset(self, rows) -> "PoolView":
        rows = np.asarray(rows, dtype=np.int64)
        return PoolView(self.shards, self.shard_of[rows], self.row_of[rows], self.dim,
                        self._layout)

    def rows(self, rows, out: np.ndarray | None = None) -> np.ndarray:
        """float32 ``[len(rows), dim]`` of the given rows (any order, repeats allowed),
        into ``out`` when given (a float32 buffer of at least that many rows)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if out is None:
            out = np.empty((rows.shape[0], self.dim), dtype=np.float32)
        else:
            out = out[:rows.shape[0]]
        if rows.shape[0] == 0:
            return out
        shard = self.shard_of[rows]
        order = np.argsort(shard, kind="stable")
        bounds = np.flatnonzero(np.diff(shard[order])) + 1
        for part in np.split(order, bounds):
            s = int(shard[part[0]])
            offset, shape, dtype = self._member(s)
            r = self.row_of[rows[part]]
            lo, hi = int(r[0]), int(r[-1]) + 1
            run = hi - lo == part.shape[0] and bool(np.all(np.diff(r) == 1))
            if run and bool(np.all(np.diff(part) == 1)):
                # a run of rows into a run of the output: one positioned read
                self._read_run(s, offset, dtype, lo, hi, out[int(part[0]):int(part[-1]) + 1])
                continue
            mm = np.memmap(self.shards[s], dtype=dtype, mode="r", offset=offset, shape=shape)
            try:
                out[part] = mm[lo:hi] if run else mm[r]
            finally:
                del mm
        return out

    def _read_run(self, s: int, offset: int, dtype: np.dtype, lo: int, hi: int,
                  dest: np.ndarray) -> None:
        """Rows [lo, hi) of shard s into ``dest`` (float32) with a positioned read: no page
        mapping, so nothing of the shard stays resident after the call."""
        n = (hi - lo) * self.dim
        with open(self.shards[s], "rb", buffering=0) as fh:
            fh.seek(offset + lo * self.dim * dtype.itemsize)
            if dtype == np.float32:
                view = dest.reshape(-1).view(np.uint8)
                if fh.readinto(view) != view.nbytes:
                    raise FreebindError(f"{self.shards[s]}: truncated shard")
                return
            raw = np.empty(n, dtype=dtype)
            if fh.readinto(raw.view(np.uint8)) != raw.nbytes:
                raise FreebindError(f"{self.shards[s]}: truncated shard")
            dest.reshape(-1)[:] = raw

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return self.rows(np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)):
            return self.rows([int(key)])[0]
        if hasattr(key, "numpy"):
            key = key.numpy()
        return self.rows(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        out = self.rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype, copy=False)

    def blocks(self, block_rows: int):
        """``(start, float32 block)`` over the whole view, ``block_rows`` rows at a time."""
        for start in range(0, len(self), max(1, int(block_rows))):
            yield start, self.rows(np.arange(start, min(len(self), start + block_rows)))
