"""What a reader lists, packed: one modality's items of tar shards, tables and ``datasets``
folders without a Python object per item.

A listing of a LAION-sized collection meets tens of millions of items: archive members
(:class:`~freebind.data.readers.Member`: a locator string with six fields, about 360 bytes
each as objects), file paths and texts. :class:`ItemColumn` takes them one at a time and
packs them a block at a time: the names in a :class:`~freebind.data.items.StringArray`
(a member's name without its container, which is stored once), and per item a kind code,
a container number, the byte offset, size and SHA-256 of a member (about 50 bytes). It is a
read-only sequence once read (``len``, ``x[i]``, ``x[a:b]``, iteration), giving back equal
objects: ``str`` texts, :class:`~pathlib.Path` paths, Members with every field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from freebind.data import items as _items
from freebind.data.items import PackedSequence, StringArray, StringArrayBuilder

#: item kinds: a text (``str``), a path, an archive member
TEXT, PATH, MEMBER = 0, 1, 2
#: between a member's container and its name in its locator (``CONTAINER::NAME``)
SEP = "::"


class ItemColumn(PackedSequence):
    """One modality's items, appended one at a time and packed a block at a time (see the
    module); reading them consolidates the blocks once."""

    def __init__(self, items: Iterable[Any] = ()):
        self._names = StringArrayBuilder()
        self._blocks: list[dict[str, np.ndarray]] = []
        #: (container, kind, column, the member's class) of each container number
        self._containers: list[tuple[str, str, str | None, type]] = []
        self._where: dict[tuple[str, str, str | None, type], int] = {}
        self._pending: list[Any] = []
        self._n = 0
        self._packed: tuple[StringArray, dict[str, np.ndarray]] | None = None
        self.extend(items)

    # --- building -------------------------------------------------------------------------
    def append(self, item: Any) -> None:
        self._pending.append(item)
        self._n += 1
        self._packed = None
        if len(self._pending) >= _items._PACK:
            self._flush()

    def extend(self, items: Iterable[Any]) -> None:
        if isinstance(items, ItemColumn):
            items._flush()
            self._flush()
            remap = np.asarray([self._container(c) for c in items._containers] or [0],
                               dtype=np.int32)
            names, cols = items._arrays()
            if len(names):
                self._names.extend(names)
                self._blocks.append({**cols, "container": remap[cols["container"]]})
                self._n += len(names)
                self._packed = None
            return
        for it in items:
            self.append(it)

    def _container(self, ident: tuple[str, str, str | None, type]) -> int:
        c = self._where.get(ident)
        if c is None:
            c = self._where[ident] = len(self._containers)
            self._containers.append(ident)
        return c

    def _flush(self) -> None:
        block, self._pending = self._pending, []
        if not block:
            return
        n = len(block)
        kind = np.zeros(n, np.int8)
        container = np.zeros(n, np.int32)
        offset = np.zeros(n, np.int64)
        size = np.zeros(n, np.int64)
        digest = np.zeros((n, 32), np.uint8)
        hashed = np.zeros(n, bool)
        for j, it in enumerate(block):
            if _is_member(it):
                kind[j] = MEMBER
                c = it.container
                container[j] = self._container((c, it.kind, it.column, type(it)))
                label = str.__str__(it)
                prefix = c + SEP
                # the name alone when the locator is CONTAINER::NAME (it always is)
                self._names.append(label[len(prefix):] if label.startswith(prefix)
                                   else SEP + label)
                offset[j], size[j] = it.offset, it.size
                if it.digest is not None:
                    digest[j] = np.frombuffer(it.digest, np.uint8)
                    hashed[j] = True
            elif isinstance(it, os.PathLike):
                kind[j] = PATH
                self._names.append(os.fspath(it))
            else:
                self._names.append(it)
        self._blocks.append({"kind": kind, "container": container, "offset": offset,
                             "size": size, "digest": digest, "hashed": hashed})

    def _arrays(self) -> tuple[StringArray, dict[str, np.ndarray]]:
        if self._packed is None:
            self._flush()
            names = self._names.build()
            if len(self._blocks) != 1:
                cols = {k: np.concatenate([b[k] for b in self._blocks]) if self._blocks
                        else np.zeros((0, 32) if k == "digest" else 0,
                                      np.uint8 if k == "digest" else np.int64)
                        for k in ("kind", "container", "offset", "size", "digest", "hashed")}
                self._blocks = [cols] if self._blocks else []
            cols = self._blocks[0] if self._blocks else {
                "kind": np.zeros(0, np.int8), "container": np.zeros(0, np.int32),
                "offset": np.zeros(0, np.int64), "size": np.zeros(0, np.int64),
                "digest": np.zeros((0, 32), np.uint8), "hashed": np.zeros(0, bool)}
            self._packed = (names, cols)
        return self._packed

    # --- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    def _make(self, name: str, cols: dict, j: int):
        k = int(cols["kind"][j])
        if k == TEXT:
            return name
        if k == PATH:
            return Path(name)
        container, ckind, column, member = self._containers[int(cols["container"][j])]
        label = name[len(SEP):] if name.startswith(SEP) else container + SEP + name
        digest = bytes(cols["digest"][j]) if cols["hashed"][j] else None
        return member(label, container, ckind, int(cols["offset"][j]), int(cols["size"][j]),
                      digest, column=column)

    def _one(self, j: int):
        names, cols = self._arrays()
        return self._make(names[j], cols, j)

    def _view(self, a: int, b: int) -> list:
        return [self._one(j) for j in range(a, b)]

    def __iter__(self) -> Iterator[Any]:
        names, cols = self._arrays()
        for j, name in enumerate(names):
            yield self._make(name, cols, j)

    def __eq__(self, other) -> bool:
        if isinstance(other, (list, tuple, Sequence)) and not isinstance(other, str):
            return len(self) == len(other) and all(
                a == b and type(a) is type(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"ItemColumn({len(self)} items)"

    def known_keys(self) -> np.ndarray | None:
        """The ``S64`` content keys of the items when every item is a member whose bytes
        were hashed while listing (what :func:`freebind.data.items.content_keys` reads at
        once), else None."""
        _, cols = self._arrays()
        if not len(self) or not (cols["kind"] == MEMBER).all() or not cols["hashed"].all():
            return None
        out = np.empty(len(self), dtype="S64")
        for a in range(0, len(self), _items._PACK):
            out[a:a + _items._PACK] = [bytes(d).hex()
                                       for d in cols["digest"][a:a + _items._PACK]]
        return out


def _is_member(item) -> bool:
    """A :class:`~freebind.data.readers.Member` (told by its fields: this module is below
    the readers)."""
    return isinstance(item, str) and hasattr(item, "container") and hasattr(item, "offset")


def as_column(items: Sequence[Any]) -> ItemColumn:
    """``items`` packed (an :class:`ItemColumn` as it is)."""
    return items if isinstance(items, ItemColumn) else ItemColumn(items)
