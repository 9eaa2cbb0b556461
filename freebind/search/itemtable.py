"""The items of an index as columns: a modality code, a path and (text items) a text per
item, packed in arrays (:class:`freebind.data.items.StringArray`) rather than one Python
dict each, and saved as ``.npy`` files that are read back memory-mapped when large::

    INDEX/items/modality.npy                uint8 code per item (names in items/columns.json)
    INDEX/items/path.bytes.npy, .offsets.npy     the items' paths (names), packed
    INDEX/items/text.bytes.npy, .offsets.npy     their texts ("" for items without one)
    INDEX/items/has_text.npy                bool per item
    INDEX/items/columns.json                {"format", "modalities", "items"}

``table[i]`` is the item's dict (``{"modality", "path"}`` and ``"text"`` when it has one),
as the index's ``items.json`` of earlier versions held (still read: :func:`read_items`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from freebind.data.items import StringArray
from freebind.util.atomic import atomic_write, atomic_write_text

FORMAT = "freebind-index-items"
FOLDER = "items"
LEGACY = "items.json"


def _hash(strings: Sequence[str]) -> np.ndarray:
    """A 64-bit hash per string (for lookups; a match is confirmed on the string itself)."""
    out = np.empty(len(strings), dtype=np.uint64)
    for i, s in enumerate(strings):
        out[i] = int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"),
                                                digest_size=8).digest(), "little")
    return out


class ItemTable(Sequence):
    """The index's items (see the module): append-only, looked up by (modality, path)."""

    def __init__(self):
        self.modalities: list[str] = []         # code -> name
        self.codes = np.zeros(0, dtype=np.uint8)
        self.paths = StringArray.pack([])
        self.texts = StringArray.pack([])
        self.has_text = np.zeros(0, dtype=bool)
        # per modality: sorted path hashes and the ids they belong to
        self._lookup: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    # --- reading ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = int(i) + len(self) if i < 0 else int(i)
        if not 0 <= j < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        out = {"modality": self.modalities[int(self.codes[j])], "path": self.paths[j]}
        if self.has_text[j]:
            out["text"] = self.texts[j]
        return out

    def __iter__(self) -> Iterator[dict]:
        texts = iter(self.texts)
        for j, path in enumerate(self.paths):
            text = next(texts)
            out = {"modality": self.modalities[int(self.codes[j])], "path": path}
            if self.has_text[j]:
                out["text"] = text
            yield out

    def __eq__(self, other) -> bool:
        if isinstance(other, (ItemTable, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"ItemTable({len(self)} items)"

    def ids_of(self, modalities: Sequence[str]) -> np.ndarray:
        """The ids of the items of these modalities, in order."""
        codes = [c for c, m in enumerate(self.modalities) if m in modalities]
        return np.flatnonzero(np.isin(self.codes, codes))

    def _index(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._lookup is None:
            self._lookup = {}
            for code, m in enumerate(self.modalities):
                ids = np.flatnonzero(self.codes == code)
                h = np.empty(len(ids), dtype=np.uint64)
                for a in range(0, len(ids), 65536):
                    h[a:a + 65536] = _hash(self.paths[ids[a:a + 65536]])
                order = np.argsort(h, kind="stable")
                self._lookup[m] = (h[order], ids[order])
        return self._lookup

    def contains(self, modality: str, paths: Sequence[str]) -> np.ndarray:
        """Per path: whether an item of ``modality`` with that path is held."""
        out = np.zeros(len(paths), dtype=bool)
        got = self._index().get(modality)
        if got is None or not len(got[0]):
            return out
        hashes, ids = got
        h = _hash(paths)
        lo, hi = np.searchsorted(hashes, h, "left"), np.searchsorted(hashes, h, "right")
        for i in np.flatnonzero(hi > lo):
            out[i] = any(self.paths[int(ids[j])] == paths[i] for j in range(lo[i], hi[i]))
        return out

    # --- adding -------------------------------------------------------------------------
    def append(self, modality: str, paths: Sequence[str],
               texts: Sequence[str] | None = None) -> None:
        """Add items of one modality (their paths; texts, when they have them)."""
        if modality not in self.modalities:
            self.modalities.append(modality)
        code = self.modalities.index(modality)
        n = len(paths)
        self.codes = np.concatenate([self.codes, np.full(n, code, dtype=np.uint8)])
        self.paths = _concat(self.paths, StringArray.pack(paths))
        self.texts = _concat(self.texts, StringArray.pack(texts if texts is not None
                                                          else ("" for _ in range(n))))
        self.has_text = np.concatenate([self.has_text, np.full(n, texts is not None)])
        if self._lookup is not None:
            ids = np.arange(len(self) - n, len(self), dtype=np.int64)
            old_h, old_ids = self._lookup.get(modality, (np.zeros(0, np.uint64),
                                                         np.zeros(0, np.int64)))
            h = np.concatenate([old_h, _hash(paths)])
            ids = np.concatenate([old_ids, ids])
            order = np.argsort(h, kind="stable")
            self._lookup[modality] = (h[order], ids[order])

    @classmethod
    def from_dicts(cls, items: Sequence[dict]) -> "ItemTable":
        """A table of ``[{"modality", "path"[, "text"]}, …]`` (an ``items.json``)."""
        table = cls()
        table.modalities = sorted({str(it["modality"]) for it in items})
        table.codes = np.asarray([table.modalities.index(str(it["modality"])) for it in items],
                                 dtype=np.uint8)
        table.paths = StringArray.pack(str(it["path"]) for it in items)
        table.texts = StringArray.pack(str(it.get("text", "")) for it in items)
        table.has_text = np.asarray(["text" in it for it in items], dtype=bool)
        return table

    # --- files --------------------------------------------------------------------------
    def save(self, index_dir: str | os.PathLike) -> Path:
        folder = Path(index_dir) / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        for name, arr in (("modality", self.codes), ("has_text", self.has_text)):
            atomic_write(folder / f"{name}.npy", lambda tmp, a=arr: _save(tmp, a))
        self.paths.save(folder, "path")
        self.texts.save(folder, "text")
        atomic_write_text(folder / "columns.json", json.dumps(
            {"format": FORMAT, "modalities": self.modalities, "items": len(self)}))
        return folder

    @classmethod
    def load(cls, index_dir: str | os.PathLike) -> "ItemTable":
        """The items of an index folder: its ``items/`` columns, or an earlier version's
        ``items.json``. Raises ``ValueError`` naming what is unreadable."""
        index_dir = Path(index_dir)
        folder = index_dir / FOLDER
        if not (folder / "columns.json").is_file():
            legacy = index_dir / LEGACY
            try:
                items = json.loads(legacy.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ValueError(f"{folder}: no item columns, and {legacy}: {exc}") from None
            return cls.from_dicts(items)
        try:
            meta = json.loads((folder / "columns.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{folder / 'columns.json'}: {exc}") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{folder / 'columns.json'}: not {FORMAT}")
        table = cls()
        table.modalities = [str(m) for m in meta.get("modalities", [])]
        table.codes = _load(folder / "modality.npy", np.uint8)
        table.has_text = _load(folder / "has_text.npy", np.bool_)
        table.paths = StringArray.load(folder, "path")
        table.texts = StringArray.load(folder, "text")
        n = int(meta.get("items", -1))
        if not (len(table.codes) == len(table.has_text) == len(table.paths)
                == len(table.texts) == n):
            raise ValueError(f"{folder}: its columns disagree on the number of items "
                             f"(columns.json says {n})")
        if len(table.codes) and int(table.codes.max()) >= len(table.modalities):
            raise ValueError(f"{folder / 'modality.npy'}: a code with no modality name")
        return table


def read_items(index_dir: str | os.PathLike) -> ItemTable:
    """:meth:`ItemTable.load`."""
    return ItemTable.load(index_dir)


def _concat(a: StringArray, b: StringArray) -> StringArray:
    if not len(a):
        return b
    if not len(b):
        return a
    base = int(a.offsets[-1]) - int(b.offsets[0])
    data = np.concatenate([a.data[int(a.offsets[0]):int(a.offsets[-1])],
                           b.data[int(b.offsets[0]):int(b.offsets[-1])]])
    offsets = np.concatenate([a.offsets - a.offsets[0], b.offsets[1:] + base - a.offsets[0]])
    return StringArray(data, offsets)


def _save(tmp, arr: np.ndarray) -> None:
    with open(tmp, "wb") as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)


def _load(path: Path, dtype) -> np.ndarray:
    from freebind.data.items import _load as load

    return load(path, dtype)
