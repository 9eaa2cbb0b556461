"""freebind.import_embeddings / ``freebind import``: precomputed rows into the store, keyed by
content, under the space's identity; refusals name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pool_forms import write_forms  # noqa: E402

import freebind  # noqa: E402
from freebind import spaces  # noqa: E402
from freebind.util.errors import UsageError  # noqa: E402
from freebind.run.importer import (  # noqa: E402
    declared_fingerprint, imported_identities, imported_space,
)
from freebind.data.store import EmbeddingStore, file_key, text_key  # noqa: E402

N = 16


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    from freebind.mini import write_pools

    root = tmp_path_factory.mktemp("imp")
    write_pools(root / "pools", n_audio=N, n_image=N, n_text=N, seed=3)
    forms = write_forms(root / "pools", root / "forms")
    return root / "pools", forms


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clip_retrieval(folder: Path, images, captions, dim, rng):
    """clip-retrieval's layout: img_emb/, text_emb/, metadata/ (paired rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "img_emb").mkdir(parents=True)
    (folder / "text_emb").mkdir()
    (folder / "metadata").mkdir()
    img, txt = _unit(rng, len(images), dim), _unit(rng, len(captions), dim)
    np.save(folder / "img_emb" / "img_emb_0.npy", img)
    np.save(folder / "text_emb" / "text_emb_0.npy", txt)
    pq.write_table(pa.table({"image_path": [str(p) for p in images], "caption": captions}),
                   folder / "metadata" / "metadata_0.parquet")
    return img, txt


def test_clip_retrieval_layout_under_a_declared_identity(pools, tmp_path):
    root, forms = pools
    rng = np.random.default_rng(0)
    img, txt = _clip_retrieval(tmp_path / "cr", forms["image"], forms["texts"], 48, rng)
    cache = tmp_path / "cache"
    rep = freebind.import_embeddings("mini:vl", tmp_path / "cr", cache_dir=cache,
                                     weights_digest="abc123", progress=False)
    assert rep.rows == {"image": N, "text": N} and rep.written == rep.rows
    assert rep.fingerprint == declared_fingerprint("mini:vl", "abc123") == \
        "imported:mini:vl@abc123"
    assert not rep.native and rep.skipped == []
    store = EmbeddingStore(cache)
    keys = {"image": [file_key(p) for p in forms["image"]],
            "text": [text_key(t) for t in forms["texts"]]}
    ident = imported_space(store, "mini:vl", keys)
    assert ident is not None and ident.weights_digest == "abc123"
    np.testing.assert_array_equal(store.view(ident, "image", keys["image"])[:], img)
    np.testing.assert_array_equal(store.view(ident, "text", keys["text"])[:], txt)
    # a key the store lacks: the encoder is needed
    assert imported_space(store, "mini:vl", {"text": [text_key("never imported")]}) is None
    # the same rows imported again write nothing; another digest is another identity
    again = freebind.import_embeddings("mini:vl", tmp_path / "cr", cache_dir=cache,
                                       weights_digest="abc123", progress=False)
    assert again.written == {"image": 0, "text": 0}
    freebind.import_embeddings("mini:vl", tmp_path / "cr", cache_dir=cache, progress=False)
    assert [i.fingerprint for i in imported_identities(store, "mini:vl")] == \
        ["imported:mini:vl", "imported:mini:vl@abc123"]


def test_npy_with_ids_or_texts(pools, tmp_path):
    root, forms = pools
    rng = np.random.default_rng(1)
    rows = _unit(rng, N, 32)
    np.save(tmp_path / "a.npy", rows)
    # ids may be tar members too (their locators): the same content keys
    (tmp_path / "ids.txt").write_text("".join(f"{p}\n" for p in forms["audio"]))
    rep = freebind.import_embeddings("mini:clap", tmp_path / "a.npy", ids=tmp_path / "ids.txt",
                                     cache_dir=tmp_path / "c", progress=False)
    assert rep.rows == {"audio": N}
    store = EmbeddingStore(tmp_path / "c")
    ident = imported_space(store, "mini:clap", {"audio": [file_key(p) for p in forms["audio"]]})
    np.testing.assert_array_equal(
        store.view(ident, "audio", [file_key(p) for p in forms["audio"]])[:], rows)
    np.save(tmp_path / "t.npy", rows[:3])
    rep = freebind.import_embeddings("mini:clap", tmp_path / "t.npy",
                                     texts=["a dog", "a cat", "a dog"], progress=False,
                                     cache_dir=tmp_path / "c")
    assert rep.rows == {"text": 2}      # a repeated text is one entry (its first row)
    got = store.view(ident, "text", [text_key("a dog"), text_key("a cat")])[:]
    np.testing.assert_array_equal(got, rows[:2])


@pytest.mark.parametrize("case", ["dim", "nan", "inf"])
def test_bad_rows_are_refused_naming_the_file(pools, tmp_path, case):
    root, forms = pools
    rng = np.random.default_rng(2)
    good = _unit(rng, N, 32)
    bad = _unit(rng, N, 31) if case == "dim" else good.copy()
    if case == "nan":
        bad[5, 3] = np.nan
    elif case == "inf":
        bad[7, 0] = np.inf
    (tmp_path / "ids.txt").write_text("".join(f"{p}\n" for p in forms["audio"]))
    np.save(tmp_path / "bad.npy", bad)
    want = {"dim": r"bad\.npy: rows of dimension 31, but mini:clap has 32; refused",
            "nan": r"bad\.npy: row 5 is not finite \(NaN or infinite\); refused",
            "inf": r"bad\.npy: row 7 is not finite"}[case]
    with pytest.raises(UsageError, match=want):
        freebind.import_embeddings("mini:clap", tmp_path / "bad.npy", ids=tmp_path / "ids.txt",
                                   cache_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()    # nothing written


def test_cli_import_reports_and_refuses_in_one_line(pools, tmp_path):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    root, forms = pools
    rng = np.random.default_rng(3)
    _clip_retrieval(tmp_path / "cr", forms["image"], forms["texts"], 48, rng)
    r = CliRunner().invoke(app, ["import", "mini:vl", str(tmp_path / "cr"), "--cache-dir",
                                 str(tmp_path / "c"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["rows"] == {"image": N, "text": N} and data["space"] == "mini:vl"
    r = CliRunner().invoke(app, ["import", "mini:clap", str(tmp_path / "cr"), "--cache-dir",
                                 str(tmp_path / "c")])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "has 32" in r.output   # 48-d rows refused
    assert "Traceback" not in r.output


def test_embed_output_imports_under_the_runs_own_identity(pools, tmp_path):
    """``freebind embed``'s output (over tar shards and a caption table, too) imported into an
    empty cache gives the rows that encoding the files gives, under the space's own
    fingerprint."""
    root, forms = pools
    out = tmp_path / "emb"
    freebind.embed("mini:clap", [forms["audio_tars"]], forms["tables"]["csv"], out,
                   cache_dir=tmp_path / "c1", progress=False, columns={"text": "caption"})
    rep = freebind.import_embeddings("mini:clap", out, cache_dir=tmp_path / "c2",
                                     progress=False)
    assert rep.native and rep.rows == {"audio": N, "text": N} and rep.skipped == []
    space = spaces.get("mini:clap")
    assert rep.fingerprint == str(space.fingerprint)
    enc = EmbeddingStore(tmp_path / "c3")
    want_a = enc.embed(space, "audio", forms["audio"], progress=False)
    want_t = enc.embed(space, "text", forms["texts"], progress=False)
    got = EmbeddingStore(tmp_path / "c2")
    np.testing.assert_array_equal(got.view(space, "audio",
                                           [file_key(p) for p in forms["audio"]])[:], want_a)
    np.testing.assert_array_equal(got.view(space, "text",
                                           [text_key(t) for t in forms["texts"]])[:], want_t)
    with pytest.raises(UsageError, match="embeddings of 'mini:clap', not of mini:vl"):
        freebind.import_embeddings("mini:vl", out, cache_dir=tmp_path / "c2", progress=False)


def test_a_space_is_opened_only_for_what_the_store_lacks(pools, tmp_path):
    from freebind.run.importer import resolve_leaf

    root, forms = pools
    texts = forms["texts"]
    half = N // 2
    rows = _unit(np.random.default_rng(4), half, 32)
    np.save(tmp_path / "t.npy", rows)
    freebind.import_embeddings("mini:clap", tmp_path / "t.npy", texts=texts[:half],
                               cache_dir=tmp_path / "c", progress=False)
    store = EmbeddingStore(tmp_path / "c")
    opened = []

    def open_space(ref):
        opened.append(ref)
        return spaces.get(ref)

    leaf = resolve_leaf(store, "mini:clap", {"text": texts[:half], "image": forms["image"]},
                        open_space)
    assert opened == [] and leaf.rows == "imported"          # mini:clap has no images
    assert leaf.meta() == {"rows": "imported"}
    leaf = resolve_leaf(store, "mini:clap", {"text": texts}, open_space)
    assert opened == ["mini:clap"] and leaf.rows == "partly imported"
    assert leaf.fallback.fingerprint == "imported:mini:clap"
    # the store encodes only the missing half and reads the imported rows for the rest
    arr = store.embed(leaf.space, "text", texts, fallback=leaf.fallback, progress=False)
    assert store.encoded == N - half
    np.testing.assert_array_equal(arr[:half], rows)
    want = EmbeddingStore(tmp_path / "fresh").embed(spaces.get("mini:clap"), "text",
                                                     texts[half:], progress=False)
    np.testing.assert_array_equal(arr[half:], want)
    # no imported identity for a space: it is opened
    assert resolve_leaf(store, "mini:vl", {"text": texts}, open_space).rows == "encoded"
    assert opened[-1] == "mini:vl"
