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

from freebind.util.errors import MediaError


@dataclass(frozen=True)
class StoreCall:
    """Items of one modality that space ``ref`` embeds through the store."""

    ref: str
    modality: str
    items: Sequence[Any]


@dataclass(frozen=True)
class Chunk:
    """Chunk ``index`` (global over the job) of space ``ref``, ``modality``: ``size`` distinct
    items, of which ``todo`` (content keys and items, in order) are not cached yet."""

    index: int
    ref: str
    modality: str
    size: int
    todo: tuple[tuple[str, str], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.todo)

    @property
    def items(self) -> tuple[str, ...]:
        return tuple(it for _, it in self.todo)


def plan_chunks(store, spaces: Mapping[str, Any], calls: Iterable[StoreCall]):
    """(chunks, key failures): every chunk of ``calls`` in order, and the items whose file
    could not even be read for its key (reported like the store reports them)."""
    from freebind.util.text import reason

    chunks: list[Chunk] = []
    failures: list[dict] = []
    seen: dict[tuple[str, str], set[str]] = {}
    cached: dict[tuple[str, str], set[str]] = {}
    for call in calls:
        space = spaces[call.ref]
        # the store dir is the space's identity: two references to one space share it
        ident = (str(store.modality_dir(space, call.modality)), call.modality)
        if ident not in cached:
            cached[ident] = store.index(space, call.modality)   # compact, searched
            seen[ident] = set()
        distinct: list[tuple[str, str]] = []
        for item in call.items:
            text = item if isinstance(item, str) else os.fspath(item)
            try:
                key = store.key(call.modality, item)
            except MediaError as exc:
                entry = {"path": text, "reason": reason(exc, item), "modality": call.modality}
                if entry not in failures:
                    failures.append(entry)
                continue
            if key in seen[ident]:
                continue
            seen[ident].add(key)
            distinct.append((key, text))
        size = store.shard_size
        for start in range(0, len(distinct), size):
            part = distinct[start:start + size]
            absent = cached[ident].find([k for k, _ in part]) < 0
            todo = tuple(p for p, new in zip(part, absent) if new)
            chunks.append(Chunk(len(chunks), call.ref, call.modality, len(part), todo))
    return chunks, failures


def batches(chunk: Chunk, batch_size: int) -> list[tuple[str, ...]]:
    """The encoder batches of a chunk's items, as the store forms them."""
    items = chunk.items
    return [items[b:b + batch_size] for b in range(0, len(items), batch_size)]
