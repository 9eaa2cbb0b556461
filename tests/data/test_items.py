"""Per-item records as compact arrays (freebind.data.items), and the store reading them: the
same rows, shards and failures as the lists they replace, with tiny packing blocks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from freebind.data import items as items_mod
from freebind.data.items import ItemList, KeyedItem, StringArray, content_keys
from freebind.data.store import EmbeddingStore, text_key

from tests.data.test_store import FakeSpace, texts


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(items_mod, "_PACK", 3)   # every block boundary is crossed


STRINGS = ["", "a", "ünïcödé ☃", "tab\tand\nnewline", "x" * 300, "\udcff lone surrogate",
           "last"]


def test_string_array_round_trips(tiny_blocks, tmp_path):
    arr = StringArray.pack(iter(STRINGS))
    assert len(arr) == len(STRINGS) and list(arr) == STRINGS and arr == STRINGS
    assert [arr[i] for i in range(len(STRINGS))] == STRINGS
    assert arr[-1] == "last" and arr[[6, 0, 2]] == ["last", "", "ünïcödé ☃"]
    part = arr[2:5]
    assert isinstance(part, StringArray) and list(part) == STRINGS[2:5]
    assert list(arr[5:2]) == [] and arr[::2] == STRINGS[::2]
    with pytest.raises(IndexError):
        arr[len(STRINGS)]
    assert arr.nbytes == sum(len(s.encode("utf-8", "surrogatepass")) for s in STRINGS) \
        + 8 * (len(STRINGS) + 1)
    # saved and read back, also memory-mapped, also a slice (offsets rebased)
    part.save(tmp_path, "p")
    assert list(StringArray.load(tmp_path, "p")) == STRINGS[2:5]
    arr.save(tmp_path, "s")
    items_mod.MMAP_BYTES, old = 0, items_mod.MMAP_BYTES
    try:
        mapped = StringArray.load(tmp_path, "s")
    finally:
        items_mod.MMAP_BYTES = old
    assert isinstance(mapped.data, np.memmap) and list(mapped) == STRINGS
    (tmp_path / "s.offsets.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="s.offsets.npy"):
        StringArray.load(tmp_path, "s")
    assert list(StringArray.pack([])) == [] and len(StringArray.pack([])) == 0


def test_item_list_gives_the_items_it_packed(tiny_blocks, tmp_path):
    keyed = [KeyedItem(f"audio/{i}", hashlib.sha256(b"%d" % i).hexdigest()) for i in range(8)]
    lst = ItemList.of(keyed)
    assert lst.kind == "keyed" and lst == keyed and len(lst) == 8
    assert all(a == b and a.content_key == b.content_key for a, b in zip(lst, keyed))
    assert lst[3].content_key == keyed[3].content_key and lst[-1] == "audio/7"
    assert lst[2:5] == keyed[2:5] and lst[2:5].keys.tolist() == lst.keys[2:5].tolist()
    paths = [tmp_path / f"f{i}.wav" for i in range(5)]
    plist = ItemList.of(paths)
    assert plist.kind == "path" and list(plist) == paths and isinstance(plist[0], Path)
    tlist = ItemList.of(iter(["a", "b"]))
    assert tlist.kind == "text" and list(tlist) == ["a", "b"]
    with pytest.raises(ValueError, match="keys"):
        ItemList(StringArray.pack(["a"]), None, "keyed")
    # keys at once for keyed items; item by item (with failures skipped) otherwise
    assert content_keys(lst, None) is lst.keys
    got = content_keys(["a", "b"], lambda t: text_key(t))
    assert got.tolist() == [text_key("a").encode(), text_key("b").encode()]


def test_store_embed_of_compact_items_equals_the_list(tiny_blocks, tmp_path):
    """The same rows, store shards (names and contents) and failures from a list and from
    its compact form, shard_size 3, duplicates and a partly cached store."""
    pool = texts(10) + texts(4) + ["caption number 12"]
    for name, items in (("list", list(pool)), ("packed", StringArray.pack(pool)),
                        ("itemlist", ItemList.of(pool, "text"))):
        store = EmbeddingStore(tmp_path / name, shard_size=3)
        space = FakeSpace()
        store.embed(space, "text", texts(13)[11:], batch_size=2, progress=False)  # cached
        rows = store.embed(space, "text", items, batch_size=2, progress=False)
        lazy = store.embed(space, "text", items, batch_size=2, progress=False, lazy=True)
        assert np.array_equal(np.asarray(lazy), rows)
        if name == "list":
            want_rows, want_shards = rows, _shards(tmp_path / name)
            # the layout: the missing distinct keys in first-appearance order, by threes
            missing = [t for t in dict.fromkeys(pool) if t not in texts(13)[11:]]
            layout = [sorted(text_key(t) for t in missing[a:a + 3])
                      for a in range(0, len(missing), 3)]
            assert sorted(sorted(k for k in ks) for ks in want_shards.values()
                          if len(ks) != 2) == sorted(layout)
            continue
        assert np.array_equal(rows, want_rows) and _shards(tmp_path / name) == want_shards


def test_store_embed_keyed_items_and_failures(tmp_path):
    """Keyed items read their keys from the array; unreadable files fail the same way
    whether the pool is a list or a list of paths packed."""
    from PIL import Image

    good = []
    for i in range(4):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(p)
        good.append(p)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    pool = [good[0], bad, good[1], tmp_path / "absent.png", good[2], good[0], good[3]]
    outs = []
    for name, items in (("list", pool), ("paths", ItemList.of(pool, "path"))):
        store = EmbeddingStore(tmp_path / name, shard_size=2)
        rows, kept, failures = store.embed(FakeSpace(), "image", items, batch_size=2,
                                           progress=False, on_error="skip")
        outs.append((rows, kept.tolist(), [(f.index, f.item, f.reason) for f in failures],
                     _shards(tmp_path / name)))
    assert np.array_equal(outs[0][0], outs[1][0]) and outs[0][1:] == outs[1][1:]
    assert outs[0][1] == [0, 2, 4, 5, 6] and [f[0] for f in outs[0][2]] == [1, 3]


def _shards(root: Path) -> dict[str, list[str]]:
    out = {}
    for p in sorted(root.rglob("shard-*.npz")):
        with np.load(p) as z:
            out[p.name] = sorted(k.decode() for k in z["keys"].tolist())
    return out


def test_builder_concat_and_pickled_views_carry_only_their_strings(tiny_blocks):
    import pickle

    from freebind.data.items import StringArrayBuilder

    b = StringArrayBuilder()
    for s in STRINGS[:4]:
        b.append(s)
    b.extend(StringArray.pack(STRINGS[4:6]))
    b.extend(iter(STRINGS[6:]))
    assert len(b) == len(STRINGS)
    built = b.build()
    assert list(built) == STRINGS and built == StringArray.pack(STRINGS)
    assert b.build() == built and list(StringArray.concat([])) == []
    assert list(StringArray.concat([built[5:], built[:2], built[3:3]])) == \
        STRINGS[5:] + STRINGS[:2]
    # a view pickles as its own strings: not its parent's whole buffer
    big = StringArray.pack(["y" * 1000] * 50 + ["tail"])
    view = big[50:]
    back = pickle.loads(pickle.dumps(view))
    assert list(back) == ["tail"] and back.data.nbytes == 4 and back.offsets[0] == 0
    assert len(pickle.dumps(view)) < 1000 < len(pickle.dumps(big))
    assert view.compact() == ["tail"] and big.compact() is big


@pytest.mark.parametrize("block", [1, 2, 3, 7, 1 << 20])
def test_iter_texts_streams_the_lines_read_texts_gave(tmp_path, block):
    """Every line break ``str.splitlines`` knows, CRLF split across blocks, blank lines and
    surrounding spaces: the streamed texts equal the whole file's, whatever the block."""
    from freebind.data.media import iter_texts, read_texts
    from freebind.util.errors import MediaError

    raw = ("  first \r\nsecond\r\r\n\nthird\vfourth\x0cfifth\x1csixth\x1d\x1eseventh"
           "\x85eighth\u2028ninth\u2029ünï ☃\n   \n\tlast  ")
    f = tmp_path / "t.txt"
    f.write_bytes(raw.encode("utf-8"))
    whole = [t.strip() for t in raw.splitlines() if t.strip()]
    assert list(iter_texts(f, block_chars=block)) == whole == read_texts(f)
    assert whole[0] == "first" and whole[-1] == "last" and len(whole) == 11
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n" * 5 + b"\xff\xfe broken\n")
    with pytest.raises(MediaError, match="bad.txt: cannot read texts"):
        list(iter_texts(bad, block_chars=block))


def _fields(m):
    return (str(m), type(m).__name__, getattr(m, "container", None), getattr(m, "kind", None),
            getattr(m, "offset", None), getattr(m, "size", None), getattr(m, "digest", None),
            getattr(m, "column", None))


def test_item_column_packs_members_paths_and_texts(tiny_blocks):
    """A reader's column (tiny blocks): every member field, path and text comes back equal,
    columns merge with their containers renumbered, and the members' content keys are read
    at once, equal to each member's own."""
    from freebind.data.item_column import ItemColumn
    from freebind.data.readers import SEP, Member

    d = [bytes([i]) * 32 for i in range(5)]
    d[3] = bytes(31) + b"\x00"   # trailing zero bytes survive
    given = [Member(f"/s/a.tar{SEP}k0.flac", "/s/a.tar", "tar", 512, 10, d[0]),
             Path("/x/y.wav"),
             Member(f"/t/b.parquet{SEP}audio[3]", "/t/b.parquet", "parquet", 3, 7, d[1],
                    column="audio"),
             Member(f"/s/a.tar{SEP}k1.flac", "/s/a.tar", "tar", 2048, 11, None),
             Member("odd-label", "/s/c.tar", "tar", 0, 1, d[3]),
             "a text"]
    col = ItemColumn(given)
    assert len(col) == 6 and [_fields(x) for x in col] == [_fields(x) for x in given]
    assert _fields(col[-1]) == _fields("a text") and col[1:3] == given[1:3]
    assert col.known_keys() is None   # a path and an unhashed member among them
    other = ItemColumn([Member(f"/u/z.tar{SEP}q.flac", "/u/z.tar", "tar", 0, 4, d[4]),
                        given[0]])
    merged = ItemColumn(given[:2])
    merged.extend(other)
    merged.append("tail")
    assert [_fields(x) for x in merged] == [_fields(x) for x in given[:2] + list(other)
                                            + ["tail"]]
    members = ItemColumn([given[0], given[2], other[0]])
    assert list(members.known_keys()) == [m.key.encode() for m in (given[0], given[2],
                                                                   other[0])]
    assert list(content_keys(members, lambda m: pytest.fail("read one by one"))) == \
        list(members.known_keys())
    assert len(ItemColumn()) == 0 and not ItemColumn() and list(ItemColumn()) == []
