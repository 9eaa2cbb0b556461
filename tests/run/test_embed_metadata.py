"""``freebind embed`` keeps its inputs' metadata as clip-retrieval does: the caption, url and
key of a webdataset sample or a table row (and the column a text was read from) beside each
row's path in ``metadata_<k>.parquet``; its output still imports under the run's identity."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

import freebind

N = 6


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from freebind.mini import write_pools

    root = tmp_path_factory.mktemp("meta")
    write_pools(root / "pools", n_audio=N, n_image=2, n_text=N, seed=4)
    audio = sorted((root / "pools" / "audio").iterdir())
    texts = [t for t in (root / "pools" / "texts.txt").read_text().splitlines() if t]
    with tarfile.open(root / "s-0.tar", "w") as tf:
        for i, a in enumerate(audio):
            for name, data in ((f"{i:09d}{a.suffix}", a.read_bytes()),
                               (f"{i:09d}.json", json.dumps({
                                   "caption": texts[i], "url": f"https://a.example/{i}",
                                   "status": "success"}).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    table = pa.table({"caption": texts, "alt": [f"alt {t}" for t in texts],
                      "url": [f"https://t.example/{i}" for i in range(N)],
                      "key": [f"k{i}" for i in range(N)], "other": list(range(N))})
    pq.write_table(table, root / "caps.parquet", row_group_size=4)
    return root, audio, texts


def _meta(out, k):
    import pyarrow.parquet as pq

    return pq.read_table(out / "metadata" / f"metadata_{k}.parquet").to_pydict()


def test_webdataset_samples_keep_key_caption_and_url(inputs, tmp_path):
    root, audio, texts = inputs
    out = tmp_path / "emb"
    freebind.embed("mini:clap", [root / "s-0.tar"], output=out, cache_dir=tmp_path / "c",
                   progress=False)
    a, t = _meta(out, 0), _meta(out, 1)
    assert a["modality"] == ["audio"] * N and t["modality"] == ["text"] * N
    for m in (a, t):
        assert m["key"] == [f"{i:09d}" for i in range(N)]
        assert m["caption"] == texts
        assert m["url"] == [f"https://a.example/{i}" for i in range(N)]
        assert "status" not in m           # only caption, url and key (and a named field)
    assert a["path"][2] == f"{root / 's-0.tar'}::000000002{audio[2].suffix}"
    rep = freebind.import_embeddings("mini:clap", out, cache_dir=tmp_path / "c2",
                                     progress=False)
    assert rep.native and rep.rows == {"audio": N, "text": N} and rep.skipped == []


def test_table_rows_keep_their_columns_and_the_named_one(inputs, tmp_path):
    root, audio, texts = inputs
    out = tmp_path / "emb"
    freebind.embed("mini:clap", [], root / "caps.parquet", output=out,
                   cache_dir=tmp_path / "c", progress=False, columns={"text": "alt"})
    m = _meta(out, 0)
    assert m["caption"] == texts and m["alt"] == [f"alt {t}" for t in texts]
    assert m["url"] == [f"https://t.example/{i}" for i in range(N)]
    assert m["key"] == [f"k{i}" for i in range(N)] and "other" not in m
    # the rows are the named column's texts: an import keys them by that text, not the
    # caption column
    from freebind.data.store import EmbeddingStore, text_key
    from freebind import spaces

    rep = freebind.import_embeddings("mini:clap", out, cache_dir=tmp_path / "c2",
                                     progress=False)
    assert rep.rows == {"text": N}
    space = spaces.get("mini:clap")
    got = EmbeddingStore(tmp_path / "c2").view(space, "text",
                                               [text_key(f"alt {t}") for t in texts])[:]
    want = EmbeddingStore(tmp_path / "c3").embed(space, "text", [f"alt {t}" for t in texts],
                                                 progress=False)
    np.testing.assert_array_equal(got, want)


def test_plain_files_keep_only_path_modality_row(inputs, tmp_path):
    root, audio, texts = inputs
    out = tmp_path / "emb"
    freebind.embed("mini:clap", audio[:2], output=out, cache_dir=tmp_path / "c",
                   progress=False)
    assert sorted(_meta(out, 0)) == ["modality", "path", "row"]
