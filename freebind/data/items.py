"""Per-item records as compact arrays: millions of items without a Python object each.

* :class:`StringArray` — strings (texts, paths, item names) packed in one UTF-8 buffer with
  int64 offsets: the bytes of the strings plus 8 bytes an item, where a list of ``str``
  costs about 60 bytes of object header and pointer on top. Saved as two ``.npy`` files and
  read back memory-mapped when large.
* :class:`ItemList` — the items of a pool: their names as a :class:`StringArray` and,
  when the items carry their own content keys (archive members, rows computed elsewhere,
  stand-ins), those keys as one fixed-width ``S64`` array. ``items[i]`` makes the item
  object on demand (a :class:`KeyedItem`, a :class:`~pathlib.Path` or a ``str``); the
  store reads the keys of the whole list at once (:func:`content_keys`).

Both are read-only sequences: ``len``, ``x[i]``, ``x[a:b]`` (a view, nothing copied),
iteration (decoded block by block) and ``==`` with any sequence of the same items.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

#: strings are encoded like this (lone surrogates of undecodable file names survive)
_ENC = ("utf-8", "surrogatepass")
#: strings packed per step while building (bounds the temporary list of bytes objects)
_PACK = 65536
#: arrays larger than this are memory-mapped when loaded from disk
MMAP_BYTES = 16 << 20


class PackedSequence(Sequence):
    """Indexing of a packed sequence: ``x[i]`` (negative from the end), ``x[a:b]`` (a view,
    :meth:`_view`), ``x[a:b:step]`` and ``x[[i, j, …]]`` (lists); subclasses give
    :meth:`_one` and :meth:`_view`."""

    __slots__ = ()

    def _one(self, j: int):
        raise NotImplementedError

    def _view(self, a: int, b: int):
        raise NotImplementedError

    def __getitem__(self, i):
        n = len(self)
        if isinstance(i, slice):
            a, b, step = i.indices(n)
            if step != 1:
                return [self[j] for j in range(a, b, step)]
            return self._view(a, max(a, b))
        if isinstance(i, (int, np.integer)):
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(f"item {i} of {n}")
            return self._one(j)
        return [self[int(j)] for j in np.asarray(i).reshape(-1)]


class StringArray(PackedSequence):
    """Strings packed in one ``uint8`` buffer; string ``i`` is ``data[offsets[i]:
    offsets[i + 1]]`` decoded as UTF-8 (see the module)."""

    __slots__ = ("data", "offsets")

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data = data
        self.offsets = offsets

    @classmethod
    def pack(cls, strings: Iterable[str]) -> "StringArray":
        """Pack ``strings`` (any iterable of ``str``; other objects are taken as
        ``os.fspath``/``str``), a block at a time."""
        if isinstance(strings, StringArray):
            return strings
        chunks: list[bytes] = []
        lengths: list[np.ndarray] = []
        block: list[bytes] = []

        def flush():
            if block:
                lengths.append(np.fromiter(map(len, block), dtype=np.int64, count=len(block)))
                chunks.append(b"".join(block))
                block.clear()

        for s in strings:
            block.append(_as_text(s).encode(*_ENC))
            if len(block) >= _PACK:
                flush()
        flush()
        data = np.frombuffer(b"".join(chunks), dtype=np.uint8) if chunks else \
            np.zeros(0, np.uint8)
        chunks.clear()
        offsets = np.zeros(1 + sum(len(x) for x in lengths), dtype=np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=offsets[1:])
        return cls(data, offsets)

    def __len__(self) -> int:
        return int(self.offsets.shape[0]) - 1

    def _view(self, a: int, b: int) -> "StringArray":
        return StringArray(self.data, self.offsets[a:b + 1])

    def _one(self, j: int) -> str:
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        return bytes(self.data[lo:hi]).decode(*_ENC)

    def __iter__(self) -> Iterator[str]:
        for a in range(0, len(self), _PACK):
            b = min(len(self), a + _PACK)
            lo = int(self.offsets[a])
            raw = bytes(self.data[lo:int(self.offsets[b])])
            cuts = (self.offsets[a:b + 1] - lo).tolist()
            for j in range(b - a):
                yield raw[cuts[j]:cuts[j + 1]].decode(*_ENC)

    def __eq__(self, other) -> bool:
        if isinstance(other, StringArray):
            return len(self) == len(other) and bool(
                np.array_equal(np.diff(self.offsets), np.diff(other.offsets))) and \
                bytes(self._bytes()) == bytes(other._bytes())
        if isinstance(other, (list, tuple, Sequence)) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        return f"StringArray({len(self)} strings: [{head}{', …' if len(self) > 3 else ''}])"

    def _bytes(self) -> np.ndarray:
        return self.data[int(self.offsets[0]):int(self.offsets[-1])]

    def compact(self) -> "StringArray":
        """This view on its own buffer (a slice otherwise keeps its parent's whole buffer);
        the array itself when it already is."""
        if int(self.offsets[0]) == 0 and int(self.offsets[-1]) == len(self.data) and \
                isinstance(self.data, np.ndarray) and not isinstance(self.data, np.memmap):
            return self
        return StringArray(np.array(self._bytes()), np.array(self.offsets - self.offsets[0]))

    def __reduce__(self):
        # a pickled view carries its own strings, not its parent's buffer (a plan's
        # partitions sent to workers are slices of one array of every input)
        c = self.compact()
        return (StringArray, (np.asarray(c.data), np.asarray(c.offsets)))

    @classmethod
    def concat(cls, parts: Iterable["StringArray"]) -> "StringArray":
        """The strings of ``parts``, in order, in one buffer."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls(np.zeros(0, np.uint8), np.zeros(1, np.int64))
        if len(parts) == 1:
            return parts[0]
        data = np.concatenate([p._bytes() for p in parts])
        offsets = np.empty(1 + sum(len(p) for p in parts), dtype=np.int64)
        offsets[0], at, base = 0, 1, 0
        for p in parts:
            n = len(p)
            offsets[at:at + n] = p.offsets[1:] - p.offsets[0] + base
            base += int(p.offsets[-1] - p.offsets[0])
            at += n
        return cls(data, offsets)

    @property
    def nbytes(self) -> int:
        """Bytes held (the strings' bytes of this view and its offsets)."""
        return int(self._bytes().nbytes + self.offsets.nbytes)

    # --- files ----------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, stem: str) -> tuple[Path, Path]:
        """``STEM.bytes.npy`` and ``STEM.offsets.npy`` in ``folder`` (atomic writes)."""
        from freebind.util.atomic import atomic_write

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = (folder / f"{stem}.bytes.npy", folder / f"{stem}.offsets.npy")
        offsets = self.offsets - self.offsets[0]
        for path, arr in zip(files, (self._bytes(), offsets)):
            atomic_write(path, lambda tmp, a=arr: _save(tmp, a))
        return files

    @classmethod
    def load(cls, folder: str | os.PathLike, stem: str) -> "StringArray":
        """Read what :meth:`save` wrote (memory-mapped when large); a missing or malformed
        file raises ``ValueError`` naming it."""
        folder = Path(folder)
        data = _load(folder / f"{stem}.bytes.npy", np.uint8)
        offsets = _load(folder / f"{stem}.offsets.npy", np.int64)
        if offsets.ndim != 1 or not len(offsets) or offsets[0] != 0 or \
                int(offsets[-1]) != len(data):
            raise ValueError(f"{folder / stem}.offsets.npy: offsets do not fit the "
                             f"{len(data)} bytes of {stem}.bytes.npy")
        return cls(data, offsets)


class StringArrayBuilder:
    """A :class:`StringArray` made one string at a time: strings are packed a block at a
    time, so millions of appends hold no Python object each."""

    __slots__ = ("_parts", "_block", "_n")

    def __init__(self):
        self._parts: list[StringArray] = []
        self._block: list[str] = []
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, s) -> None:
        self._block.append(_as_text(s))
        self._n += 1
        if len(self._block) >= _PACK:
            self._flush()

    def extend(self, strings: Iterable) -> None:
        if isinstance(strings, StringArray):
            self._flush()
            self._parts.append(strings)
            self._n += len(strings)
            return
        for s in strings:
            self.append(s)

    def _flush(self) -> None:
        if self._block:
            self._parts.append(StringArray.pack(self._block))
            self._block = []

    def build(self) -> StringArray:
        """The strings appended so far, in one buffer."""
        self._flush()
        out = StringArray.concat(self._parts)
        self._parts = [out]
        return out


class KeyedItem(str):
    """A pool item named by a string that carries its content key (no file is read for
    it): what :class:`ItemList` gives for items whose keys it holds."""

    __slots__ = ("content_key",)

    def __new__(cls, name: str, content_key: str):
        self = super().__new__(cls, name)
        self.content_key = content_key
        return self

    def __reduce__(self):
        return (KeyedItem, (str(self), self.content_key))


class ItemList(PackedSequence):
    """The items of a pool as arrays (see the module): ``names`` (a :class:`StringArray`),
    ``keys`` (``S64`` content keys, or None when the items are keyed by their content),
    ``kind``: ``"text"`` (items are the strings), ``"path"`` (items are
    :class:`~pathlib.Path`) or ``"keyed"`` (items are :class:`KeyedItem`)."""

    __slots__ = ("names", "keys", "kind")

    def __init__(self, names: StringArray, keys: np.ndarray | None = None, kind: str = "text"):
        if kind not in ("text", "path", "keyed"):
            raise ValueError(f"ItemList kind {kind!r}")
        if (kind == "keyed") != (keys is not None):
            raise ValueError("an ItemList holds keys exactly when its kind is 'keyed'")
        if keys is not None and len(keys) != len(names):
            raise ValueError(f"{len(keys)} keys for {len(names)} names")
        self.names, self.kind = names, kind
        self.keys = None if keys is None else np.asarray(keys, dtype="S64")

    @classmethod
    def of(cls, items: Iterable[Any], kind: str | None = None) -> "ItemList":
        """Items of one kind (texts, paths or items with a ``content_key``) packed; the kind
        is read from the first item unless given."""
        if isinstance(items, ItemList):
            return items
        if isinstance(items, StringArray):
            return cls(items, None, kind or "text")
        if not isinstance(items, Sequence):
            items = list(items)
        if kind is None:
            first = items[0] if len(items) else ""
            kind = "keyed" if hasattr(first, "content_key") else \
                "path" if isinstance(first, os.PathLike) else "text"
        keys = None
        if kind == "keyed":
            keys = np.empty(len(items), dtype="S64")
            for a in range(0, len(items), _PACK):
                keys[a:a + _PACK] = [str(it.content_key) for it in items[a:a + _PACK]]
        return cls(StringArray.pack(items), keys, kind)

    def __len__(self) -> int:
        return len(self.names)

    def _make(self, name: str, j: int):
        if self.kind == "keyed":
            return KeyedItem(name, self.keys[j].decode("ascii"))
        return Path(name) if self.kind == "path" else name

    def _view(self, a: int, b: int) -> "ItemList":
        return ItemList(self.names[a:b], None if self.keys is None else self.keys[a:b],
                        self.kind)

    def _one(self, j: int):
        return self._make(self.names[j], j)

    def __iter__(self) -> Iterator:
        for j, name in enumerate(self.names):
            yield self._make(name, j)

    def __eq__(self, other) -> bool:
        if isinstance(other, (list, tuple, Sequence)) and not isinstance(other, str):
            return len(self) == len(other) and all(
                a == b and getattr(a, "content_key", None) == getattr(b, "content_key", None)
                for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"ItemList({len(self)} {self.kind} items)"


def content_keys(items: Sequence[Any], key_of, skip=None) -> np.ndarray:
    """The ``S64`` content keys of ``items``: an :class:`ItemList`'s own keys at once, else
    ``key_of(item)`` item by item. ``skip(index, item, exc)`` handles an item whose key
    cannot be read (its slot stays ``b""``); without it the error propagates."""
    if isinstance(items, ItemList) and items.keys is not None:
        return items.keys
    known = getattr(items, "known_keys", None)   # a reader's packed column of members
    if known is not None:
        got = known()
        if got is not None:
            return got
    from freebind.util.errors import MediaError

    out = np.zeros(len(items), dtype="S64")
    it = iter(items) if isinstance(items, (ItemList, StringArray)) or \
        known is not None else None
    for i in range(len(items)):
        item = next(it) if it is not None else items[i]
        try:
            out[i] = key_of(item)
        except MediaError as exc:
            if skip is None:
                raise
            skip(i, item, exc)
    return out


def as_sequence(items) -> Sequence[Any]:
    """``items`` as an indexable sequence: compact arrays, lists and tuples as they are,
    anything else listed."""
    return items if isinstance(items, (list, tuple, Sequence)) and \
        not isinstance(items, (str, bytes)) else list(items)


def _as_text(s) -> str:
    if isinstance(s, str):
        return str.__str__(s)
    if isinstance(s, os.PathLike):
        return os.fspath(s)
    return str(s)


def _save(tmp, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


def _load(path: Path, dtype) -> np.ndarray:
    try:
        big = path.stat().st_size > MMAP_BYTES
        arr = np.load(path, allow_pickle=False, mmap_mode="r" if big else None)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
    if arr.dtype != np.dtype(dtype) or arr.ndim != 1:
        raise ValueError(f"{path}: expected a 1-d {np.dtype(dtype)} array, got "
                         f"{arr.dtype} {list(arr.shape)}")
    return arr
