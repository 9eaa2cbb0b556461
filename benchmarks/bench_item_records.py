"""Bytes held per item by the per-item records of a pool and of a search index: the Python
objects they were (lists of items, dicts and a set of paths, tar members) against the
compact arrays they are (:mod:`freebind.data.items`, :mod:`freebind.data.item_column`,
:mod:`freebind.search.itemtable`), measured with
``tracemalloc`` in one run::

    .venv/bin/python benchmarks/bench_item_records.py --items 200000 [--json]

Target (issue 35): the whole paper build grows by at most 0.5 KB per item; these records
are what grew with the pools.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


class _OldItem(str):
    """What the benchmark's stand-in items were: a str carrying a content key."""


def _held(make) -> tuple[int, object]:
    gc.collect()
    tracemalloc.start()
    try:
        obj = make()
        gc.collect()
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return size, obj


def _keys(n: int):
    return [hashlib.sha256(b"%d" % i).hexdigest() for i in range(n)]


def measure(n: int) -> dict:
    from freebind.data.items import ItemList, StringArray
    from freebind.search.itemtable import ItemTable

    keys = _keys(n)
    names = [f"audio/{i:09d}" for i in range(n)]
    texts = [f"synthetic caption {i:09d}" for i in range(n)]

    def old_keyed():
        out = []
        for name, k in zip(names, keys):
            it = _OldItem(name)
            it.content_key = k
            out.append(it)
        return out

    rows = {}
    size, old = _held(old_keyed)
    rows["keyed pool items, list of objects"] = size
    del old
    size, _ = _held(lambda: ItemList.of((_Keyed(a, b) for a, b in zip(names, keys)), "keyed"))
    rows["keyed pool items, ItemList"] = size
    size, _ = _held(lambda: [_copy(t) for t in texts])
    rows["texts, list of str"] = size
    size, _ = _held(lambda: StringArray.pack(texts))
    rows["texts, StringArray"] = size

    def members():
        from freebind.data.readers import SEP, Member

        shard = "/data/laion/{:05d}.tar"
        for i in range(n):
            c = shard.format(i // 10000)
            yield Member(f"{c}{SEP}{i:09d}.jpg", c, "tar", 512 * (3 * (i % 10000) + 1),
                         40000, hashlib.sha256(keys[i].encode()).digest())

    from freebind.data.item_column import ItemColumn

    size, old = _held(lambda: list(members()))
    rows["tar members, list of Member"] = size
    del old
    def column():
        col = ItemColumn(members())
        col[0]   # read once: its last block packed too
        return col

    size, _ = _held(column)
    rows["tar members, ItemColumn"] = size

    def old_index():
        items, paths = [], set()
        for i, t in enumerate(texts):
            p = f"/data/texts.txt:{i + 1}"
            items.append({"modality": "text", "path": p, "text": _copy(t)})
            paths.add(("text", p))
        return items, paths

    def new_index():
        table = ItemTable()
        table.append("text", [f"/data/texts.txt:{i + 1}" for i in range(n)], texts)
        table.contains("text", ["/data/texts.txt:1"])   # its lookup built
        return table

    size, old = _held(old_index)
    rows["index items, dicts and a set of paths"] = size
    del old
    size, _ = _held(new_index)
    rows["index items, ItemTable"] = size
    return {"items": n, "bytes_per_item": {k: round(v / n, 1) for k, v in rows.items()}}


def _copy(s: str) -> str:
    """A new str object equal to ``s`` (as read from a file)."""
    return "".join([s[:1], s[1:]])


class _Keyed(str):
    def __new__(cls, name, key):
        self = super().__new__(cls, name)
        self.content_key = key
        return self


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=200000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = measure(args.items)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for k, v in result["bytes_per_item"].items():
        print(f"{k:45} {v:9.1f} bytes/item")
    return 0


if __name__ == "__main__":
    sys.exit(main())
