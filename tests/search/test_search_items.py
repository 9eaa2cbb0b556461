"""The index's items as columns (freebind.search.itemtable): the same items, ids and hits as
the list of dicts they replace, with tiny packing blocks; a version-1 index (one
``items.json``) still loads and searches the same; a broken column is one clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freebind.data import items as items_mod
from freebind.search import Index
from freebind.search.itemtable import ItemTable
from index_checks import add_all, random_leaves
from tests.search.test_search_index import random_fused


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(items_mod, "_PACK", 3)


def test_item_table_equals_the_dicts(tiny_blocks, tmp_path):
    dicts = [{"modality": "audio", "path": "/a/x.wav"},
             {"modality": "text", "path": "t.txt:1", "text": "ünï ☃"},
             {"modality": "text", "path": "t.txt:2", "text": ""},
             {"modality": "image", "path": "/a/x.wav"}]
    table = ItemTable()
    table.append("audio", ["/a/x.wav"])
    table.append("text", ["t.txt:1", "t.txt:2"], ["ünï ☃", ""])
    assert table.contains("text", ["t.txt:2", "t.txt:3", "/a/x.wav"]).tolist() == \
        [True, False, False]        # the lookup is built, then kept up to date
    table.append("image", ["/a/x.wav"])
    assert table == dicts and list(table) == dicts and table[-1] == dicts[-1]
    assert table.contains("image", ["/a/x.wav"]).tolist() == [True]
    assert table.ids_of(("audio", "image")).tolist() == [0, 3]
    assert ItemTable.from_dicts(dicts) == dicts
    table.save(tmp_path)
    assert ItemTable.load(tmp_path) == dicts
    (tmp_path / "items" / "has_text.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="has_text.npy"):
        ItemTable.load(tmp_path)


def _legacy(folder):
    """Turn a saved index into what version 1 wrote: the items in one items.json."""
    items = [dict(it) for it in ItemTable.load(folder)]
    (folder / "items.json").write_text(json.dumps(items))
    for p in sorted((folder / "items").iterdir()):
        p.unlink()
    (folder / "items").rmdir()
    meta = json.loads((folder / "index.json").read_text())
    meta["version"] = 1
    (folder / "index.json").write_text(json.dumps(meta))
    return items


def test_index_items_as_columns_and_a_version_1_index(tiny_blocks, tmp_path):
    fs = random_fused()
    bundle = fs.save(tmp_path / "b.safetensors")
    n = 30
    leaves = random_leaves(fs, n)
    index = Index(str(bundle))
    add_all(index, {r: {m: v[:20] for m, v in mods.items()} for r, mods in leaves.items()}, 20)
    # a second add, overlapping the first: only the new paths are added, ids follow on
    added = index.add_leaves("text", [f"text{i}" for i in range(15, n)],
                             {r: leaves[r]["text"][15:] for r in leaves if "text" in leaves[r]},
                             texts=[f"words {i}" for i in range(15, n)])
    assert added == n - 20
    want = [{"modality": m, "path": f"{m}{i}"} for m in ("audio", "image", "text")
            for i in range(20)] + [{"modality": "text", "path": f"text{i}",
                                    "text": f"words {i}"} for i in range(20, n)]
    assert list(index.items) == want and index.item(65) == want[65]
    q = np.random.default_rng(0).normal(size=fs.dim).astype(np.float32)
    hits = [(h.id, h.path, h.text, h.score) for h in index.search(vector=q, k=40)]
    index.save(tmp_path / "idx")
    assert not (tmp_path / "idx" / "items.json").exists()
    again = Index.load(tmp_path / "idx")
    assert list(again.items) == want
    assert [(h.id, h.path, h.text, h.score) for h in again.search(vector=q, k=40)] == hits
    # the same folder as version 1 wrote it reads back the same, and extends
    assert _legacy(tmp_path / "idx") == want
    old = Index.load(tmp_path / "idx")
    assert list(old.items) == want
    assert [(h.id, h.path, h.text, h.score) for h in old.search(vector=q, k=40)] == hits
    assert old.add_leaves("text", ["text3", "text99"],
                          {r: leaves[r]["text"][:2] for r in leaves if "text" in leaves[r]}) == 1
    old.save(tmp_path / "idx")
    assert not (tmp_path / "idx" / "items.json").exists()
    assert list(Index.load(tmp_path / "idx").items) == want + [{"modality": "text",
                                                                "path": "text99"}]
    # a column that does not fit is one line that says to rebuild
    np.save(tmp_path / "idx" / "items" / "modality.npy", np.zeros(3, np.uint8))
    with pytest.raises(Exception, match="rebuild the index") as err:
        Index.load(tmp_path / "idx")
    assert "\n" not in str(err.value)
