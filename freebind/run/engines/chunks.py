"""Chunks: the store shards a job's encoder work will produce, laid out from the items alone.

A *store call* is what the local code path asks of the store: ``store.embed(space, modality,
items)``. Its distinct items (by content key, in first-appearance order, not counting items
an earlier call of the same job already asked for) are cut into chunks of the store's
``shard_size``. On an empty store this is exactly the layout the store itself uses, so a
chunk encoded anywhere becomes the very store shard the local run writes. The layout never
depends on what the cache holds, so a resumed run, another engine and every slice of a job
(``shard=(i, n)``: chunk g belongs to slice ``g % n``) see the same chunks; a chunk whose
items are all cached is done.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from freebind.data.items import StringArray, as_sequence, content_keys


@dataclass(frozen=True)
class StoreCall:
    """Items of one modality that space ``ref`` embeds through the store."""

    ref: str
    modality: str
    items: Sequence[Any]


@dataclass(frozen=True, eq=False)
class Chunk:
    """Chunk ``index`` (global over the job) of space ``ref``, ``modality``: ``size`` distinct
    items, of which ``todo`` (content keys and items, in order) are not cached yet; they are
    held as arrays (``todo_keys``, ``S64``, and ``todo_items``, a
    :class:`~freebind.data.items.StringArray`), so a plan over millions of items holds no
    Python object per item."""

    index: int
    ref: str
    modality: str
    size: int
    todo_keys: np.ndarray
    todo_items: StringArray

    @property
    def todo(self) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.keys, self.items))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k.decode("ascii") for k in self.todo_keys.tolist())

    @property
    def items(self) -> tuple[str, ...]:
        return tuple(self.todo_items)


def plan_chunks(store, spaces: Mapping[str, Any], calls: Iterable[StoreCall]):
    """(chunks, key failures): every chunk of ``calls`` in order, and the items whose file
    could not even be read for its key (reported like the store reports them)."""
    chunks: list[Chunk] = []
    failures: list[dict] = []
    seen: dict[tuple[str, str], np.ndarray] = {}   # sorted distinct keys asked for so far
    cached: dict[tuple[str, str], Any] = {}
    for call in calls:
        space = spaces[call.ref]
        # the store dir is the space's identity: two references to one space share it
        ident = (str(store.modality_dir(space, call.modality)), call.modality)
        if ident not in cached:
            cached[ident] = store.index(space, call.modality)   # compact, searched
            seen[ident] = np.zeros(0, dtype="S64")
        items = as_sequence(call.items)
        keys = content_keys(items, lambda it, m=call.modality: store.key(m, it),
                            lambda i, it, exc, m=call.modality: _failed(failures, it, exc, m))
        distinct = _new_distinct(keys, seen[ident])
        seen[ident] = np.union1d(seen[ident], keys[distinct])
        size = store.shard_size
        for start in range(0, len(distinct), size):
            part = distinct[start:start + size]
            todo = part[cached[ident].find(keys[part]) < 0]
            texts = StringArray.pack(_item_text(items[int(i)]) for i in todo)
            chunks.append(Chunk(len(chunks), call.ref, call.modality, len(part),
                                keys[todo], texts))
    return chunks, failures


def _failed(failures: list[dict], item, exc, modality: str) -> None:
    from freebind.util.text import reason

    text = _item_text(item)
    entry = {"path": text, "reason": reason(exc, item), "modality": modality}
    if entry not in failures:
        failures.append(entry)


def _new_distinct(keys: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Positions of the first appearance of each keyed item (``keys[i] != b""``) whose key
    is not in ``seen`` (sorted), in order."""
    pos = np.flatnonzero(keys != b"")
    _, first = np.unique(keys[pos], return_index=True)
    pos = pos[np.sort(first)]
    if len(seen) and len(pos):
        at = np.minimum(np.searchsorted(seen, keys[pos]), len(seen) - 1)
        pos = pos[seen[at] != keys[pos]]
    return pos


def _item_text(item) -> str:
    return item if isinstance(item, str) else os.fspath(item)


def batches(chunk: Chunk, batch_size: int) -> list[tuple[str, ...]]:
    """The encoder batches of a chunk's items, as the store forms them."""
    items = chunk.items
    return [items[b:b + batch_size] for b in range(0, len(items), batch_size)]
