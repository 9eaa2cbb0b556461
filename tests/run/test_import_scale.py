"""Imports in linear time and bounded memory: the store's index is read once however many
blocks are written, blocks give the store one large write gives, metadata is read in
blocks; and clip-retrieval outputs made over webdataset shards (``key``/``url`` columns,
no path) import through the shards they were made from."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

import freebind
from freebind.data.store import EmbeddingStore, file_key, text_key
from freebind.run import importer
from freebind.util.errors import FreebindError, UsageError


class _Space:
    name, fingerprint, dim, modalities = "toy", "toy-fp", 4, ("text",)


def _rows(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


def _store_content(root) -> dict:
    store = EmbeddingStore(root)
    index = store.index(_Space, "text")
    keys = list(index)
    return dict(zip(keys, np.asarray(store.view(_Space, "text", keys))))


def test_writer_blocks_read_the_index_once_and_match_one_write(tmp_path, monkeypatch):
    keys = [text_key(f"t{i}") for i in range(50)]
    rows = _rows(50)
    EmbeddingStore(tmp_path / "one", shard_size=8).write(_Space, "text", keys, rows)
    store = EmbeddingStore(tmp_path / "blocks", shard_size=8)
    store.write(_Space, "text", keys[:5], rows[:5])        # already there before
    calls = []
    real = store._index
    monkeypatch.setattr(store, "_index", lambda mdir: calls.append(mdir) or real(mdir))
    with store.writer(_Space, "text") as w:
        new = [w.add(keys[s:s + 7], rows[s:s + 7]) for s in range(0, 50, 7)]
        assert w.add(keys[:3] + keys[:3], rows[:6]) == 0       # met before: nothing new
    assert calls == [store.modality_dir(_Space, "text")]      # one read for 8 blocks
    assert sum(new) == 45 and w.written == 45 and w.met == 50
    assert _store_content(tmp_path / "blocks").keys() == _store_content(tmp_path / "one").keys()
    for k, v in _store_content(tmp_path / "blocks").items():
        np.testing.assert_array_equal(v, _store_content(tmp_path / "one")[k])
    shards = sorted(store.modality_dir(_Space, "text").glob("shard-*.npz"))
    sizes = sorted(len(np.load(p)["keys"]) for p in shards)
    assert sizes == [5] + [5] + [8] * 5       # full shards; the first call's and the rest


def test_a_repeated_key_in_one_block_keeps_its_first_row(tmp_path):
    store = EmbeddingStore(tmp_path)
    rows = _rows(3)
    k = [text_key("a"), text_key("b"), text_key("a")]
    assert store.write(_Space, "text", k, rows) == 2
    np.testing.assert_array_equal(store.view(_Space, "text", [k[0]])[0], rows[0])
    with pytest.raises(FreebindError, match="is not 64 lowercase hex digits"):
        store.write(_Space, "text", ["A" * 64], rows[:1])
    with pytest.raises(FreebindError, match="is not 64 lowercase hex digits"):
        store.write(_Space, "text", [k[0] + "0"], rows[:1])


def test_import_reads_metadata_in_blocks(tmp_path, monkeypatch):
    """Blocks of 5 rows over 3 partitions (parquet and JSON lines) give the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(importer, "_ROWS", 5)
    src = tmp_path / "cr"
    (src / "text_emb").mkdir(parents=True)
    (src / "metadata").mkdir()
    caps = [f"caption {i % 17}" for i in range(36)]          # repeats across partitions
    rows = np.random.default_rng(1).standard_normal((36, 32)).astype(np.float32)
    for k in range(3):
        part = slice(12 * k, 12 * k + 12)
        np.save(src / "text_emb" / f"text_emb_{k}.npy", rows[part].astype(np.float16))
        meta = {"caption": caps[part], "url": [f"u{i}" for i in range(12)]}
        if k == 1:
            (src / "metadata" / f"metadata_{k}.jsonl").write_text(
                "".join(json.dumps({c: meta[c][i] for c in meta}) + "\n" for i in range(12)))
        else:
            pq.write_table(pa.table(meta), src / "metadata" / f"metadata_{k}.parquet")
    rep = freebind.import_embeddings("mini:clap", src, cache_dir=tmp_path / "c",
                                     progress=False)
    assert rep.rows == {"text": 17} and rep.written == {"text": 17} and rep.files == 3
    store = EmbeddingStore(tmp_path / "c")
    ident = importer.imported_identities(store, "mini:clap")[0]
    firsts = [caps.index(f"caption {j}") for j in range(17)]
    view = store.view(ident, "text", [text_key(f"caption {j}") for j in range(17)])
    np.testing.assert_array_equal(view[:], rows[firsts].astype(np.float16).astype(np.float32))
    assert view.stored_dtype == np.float16      # float16 rows stay float16: exact, half


def _webdataset(folder: Path, images: list[Path], captions: list[str], per_shard: int) -> str:
    folder.mkdir(parents=True)
    n = len(images)
    for s in range(0, n, per_shard):
        with tarfile.open(folder / f"{s // per_shard:05d}.tar", "w") as tf:
            for i in range(s, min(n, s + per_shard)):
                for name, data in ((f"{i:09d}.png", images[i].read_bytes()),
                                   (f"{i:09d}.json", json.dumps(
                                       {"url": f"https://img.example/{i}.png",
                                        "caption": captions[i]}).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{(n - 1) // per_shard:05d}}}.tar")


def test_clip_retrieval_over_webdataset_imports_by_key_and_url(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from freebind.mini import write_pools

    write_pools(tmp_path / "pools", n_audio=2, n_image=10, n_text=10, seed=2)
    images = sorted((tmp_path / "pools" / "image").iterdir())
    captions = [t for t in (tmp_path / "pools" / "texts.txt").read_text().splitlines() if t]
    pattern = _webdataset(tmp_path / "shards", images, captions, 4)
    out = tmp_path / "cr"
    for d in ("img_emb", "text_emb", "metadata"):
        (out / d).mkdir(parents=True)
    img, txt = _rows(10, 2), _rows(10, 3)
    img = np.pad(img, ((0, 0), (0, 44)))                       # mini:vl is 48-d
    txt = np.pad(txt, ((0, 0), (0, 44)))
    np.save(out / "img_emb" / "img_emb_0.npy", img)
    np.save(out / "text_emb" / "text_emb_0.npy", txt)
    order = [3, 0, 9, 5, 1, 2, 8, 4, 6, 7]                   # clip-retrieval's own order
    meta = {"key": [f"{i:09d}" for i in order], "caption": [captions[i] for i in order],
            "url": [f"https://img.example/{i}.png" for i in order]}
    pq.write_table(pa.table(meta), out / "metadata" / "metadata_0.parquet")
    with pytest.raises(UsageError, match=r"named by their webdataset sample \(key and url "
                                         r"columns, no path\): give the shards"):
        freebind.import_embeddings("mini:vl", out, cache_dir=tmp_path / "c0", progress=False)
    rep = freebind.import_embeddings("mini:vl", out, shards=pattern,
                                     cache_dir=tmp_path / "c", progress=False)
    assert rep.rows == {"image": 10, "text": 10} and rep.skipped == []
    store = EmbeddingStore(tmp_path / "c")
    ident = importer.imported_identities(store, "mini:vl")[0]
    got = store.view(ident, "image", [file_key(images[i]) for i in order])[:]
    np.testing.assert_array_equal(got, img)
    # by url when the key column is gone; a url no shard holds is skipped and named
    pq.write_table(pa.table({"url": meta["url"][:9] + ["https://elsewhere/x.png"],
                             "caption": meta["caption"]}),
                   out / "metadata" / "metadata_0.parquet")
    rep = freebind.import_embeddings("mini:vl", out, shards=pattern,
                                     cache_dir=tmp_path / "c2", progress=False)
    assert rep.rows["image"] == 9
    assert [s["reason"] for s in rep.skipped] == ["no image sample of that url in the "
                                                  "shards given"]
    assert "https://elsewhere/x.png" in rep.skipped[0]["path"]
    got = EmbeddingStore(tmp_path / "c2").view(ident, "image",
                                               [file_key(images[i]) for i in order[:9]])[:]
    np.testing.assert_array_equal(got, img[:9])


def test_cli_import_takes_the_shards(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from freebind.mini import write_pools
    from freebind_cli.main import app

    write_pools(tmp_path / "pools", n_audio=2, n_image=4, n_text=4, seed=3)
    images = sorted((tmp_path / "pools" / "image").iterdir())
    pattern = _webdataset(tmp_path / "shards", images, ["a", "b", "c", "d"], 2)
    out = tmp_path / "cr"
    for d in ("img_emb", "metadata"):
        (out / d).mkdir(parents=True)
    np.save(out / "img_emb" / "img_emb_0.npy", np.pad(_rows(4), ((0, 0), (0, 44))))
    pq.write_table(pa.table({"key": [f"{i:09d}" for i in range(4)]}),
                   out / "metadata" / "metadata_0.parquet")
    (tmp_path / "shards" / "00001.tar").unlink()
    base = ["import", "mini:vl", str(out), "--shards", pattern, "--cache-dir",
            str(tmp_path / "c"), "--json"]
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 2 and "00001.tar" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, base + ["--allow-missing"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["rows"] == {"image": 2} and len(rep["skipped"]) == 3   # the shard, 2 rows


def test_embed_metadata_rows_without_a_metadata_row_are_reported(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "e"
    (src / "text_emb").mkdir(parents=True)
    (src / "metadata").mkdir()
    rows = np.random.default_rng(5).standard_normal((4, 32)).astype(np.float32)
    np.save(src / "text_emb" / "text_emb_0.npy", rows)
    (tmp_path / "t.txt").write_text("one\ntwo\nthree\nfour\n")
    pq.write_table(pa.table({"path": [f"{tmp_path / 't.txt'}:{i + 1}" for i in (0, 1, 3)],
                             "modality": ["text"] * 3, "row": [0, 1, 3],
                             "caption": ["not", "the", "key"]}),
                   src / "metadata" / "metadata_0.parquet")
    rep = freebind.import_embeddings("mini:clap", src, cache_dir=tmp_path / "c",
                                     progress=False)
    assert rep.rows == {"text": 3}
    assert rep.skipped == [{"path": str(src / "metadata" / "metadata_0.parquet"),
                            "reason": "1 of its 4 text embedding rows have no metadata row"}]
    store = EmbeddingStore(tmp_path / "c")
    ident = importer.imported_identities(store, "mini:clap")[0]
    got = store.view(ident, "text", [text_key(t) for t in ("one", "two", "four")])[:]
    np.testing.assert_array_equal(got, rows[[0, 1, 3]])


def test_a_texts_file_is_streamed_with_the_lines_read_texts_gives(tmp_path):
    from freebind.data.media import read_texts

    rng = np.random.default_rng(7)
    breaks = ["\n", "\r\n", "\r", "\u2028", "\x0b", "\x85", "\n\n  \n"]
    parts = []
    for i in range(60_000):                   # > 1 MB: lines and breaks cross chunk edges
        parts.append(f" line {i} é{'x' * int(rng.integers(0, 9))} ")
        parts.append(breaks[int(rng.integers(0, len(breaks)))])
    (tmp_path / "t.txt").write_bytes("".join(parts).encode("utf-8"))
    assert (tmp_path / "t.txt").stat().st_size > 1 << 20
    want = read_texts(tmp_path / "t.txt")
    assert list(importer._Lines(tmp_path / "t.txt")) == want and len(want) == 60_000
    (tmp_path / "u.txt").write_text("a\nb\n\nc")        # no final break
    assert list(importer._Lines(tmp_path / "u.txt")) == ["a", "b", "c"]
