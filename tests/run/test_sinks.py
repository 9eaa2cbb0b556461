"""``embed --to URI``: the mini world into LanceDB (embedded), Qdrant (local mode) and Milvus
Lite, the real engines: rows, metadata, preset vectors, a re-run that adds nothing, a run
killed for real (SIGKILL) that resumes, the URI grammar and a missing extra."""

from __future__ import annotations

import json
import re
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from killed_run import run_and_kill
from search_world import make_bundle

import freebind
from freebind.data.store import file_key, text_key
from freebind.run import sinks
from freebind.util.errors import UsageError

HERE = Path(__file__).resolve().parents[1] / "support"
N = 8
ENGINES = {"lancedb": "lancedb:{root}/lance#items", "qdrant": "qdrant:{root}/qdrant#items",
           "milvus": "milvus:{root}/milvus.db#items"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from freebind.mini.writers import write_pools

    root = tmp_path_factory.mktemp("sink-world")
    write_pools(root / "pools", n_audio=N, n_image=N, n_text=N, seed=3)
    for wav in sorted((root / "pools" / "audio").glob("*.wav"))[:2]:
        wav.with_suffix(".txt").write_text(f"caption of {wav.stem}\n")
    bundle = make_bundle(root / "bundle.safetensors")
    # the clips one by one (a folder's .txt files are texts to embed, not sidecars)
    inputs = dict(paths=[*sorted((root / "pools" / "audio").glob("*.wav")),
                         root / "pools" / "image"], texts=root / "pools" / "texts.txt")
    return root, bundle, inputs


def embed_to(target, paths, texts, uri, **options):
    """``freebind.embed(..., to=uri)``: the library call ``embed --to`` makes."""
    return freebind.embed(target, paths, texts, to=uri, **options)


def _uri(engine, root, name="items"):
    return ENGINES[engine].format(root=root).replace("#items", f"#{name}")


def _expected(bundle, inputs, preset=None):
    """{(modality, path): fused row} from freebind itself (no database)."""
    tgt = freebind.open(str(bundle), preset=preset)
    out = {}
    for m, folder in (("audio", inputs["paths"][0].parent), ("image", inputs["paths"][-1])):
        files = sorted(str(p) for p in folder.iterdir() if p.suffix in (".wav", ".png"))
        for f, row in zip(files, tgt.encode(m, files).numpy()):
            out[(m, f)] = row
    texts = [t for t in Path(inputs["texts"]).read_text().splitlines() if t.strip()]
    for i, row in enumerate(tgt.encode("text", texts).numpy()):
        out[("text", f"{inputs['texts']}:{i + 1}")] = (row, texts[i])
    return out


def _all_rows(sink, columns):
    keys = sink.search("vector", np.ones(sink_dim(sink), np.float32), 1000)
    return sink.fetch(keys, columns)


def sink_dim(sink):
    return int(sink.read_meta()["dim"])


@pytest.mark.parametrize("engine", list(ENGINES))
def test_round_trip_of_the_mini_world(world, engine, tmp_path):
    root, bundle, inputs = world
    uri = _uri(engine, tmp_path)
    report = embed_to(str(bundle), inputs["paths"], inputs["texts"], uri,
                            cache_dir=root / "cache", progress=False)
    assert (report.written, report.present, report.rows) == (3 * N, 0, 3 * N)
    presets = sorted(freebind.load(str(bundle)).presets)
    assert report.vectors == {"vector": None, **{sinks.column_name(p): p for p in presets}}
    want = _expected(bundle, inputs)
    by_preset = {p: _expected(bundle, inputs, p) for p in presets}
    sink = sinks.connect(uri)
    try:
        rows = _all_rows(sink, ["modality", "path", "caption", *report.vectors])
        assert len(rows) == 3 * N
        for key, r in rows.items():
            ident = (r["modality"], r["path"])
            exp = want[ident]
            if r["modality"] == "text":
                exp, text = exp
                assert r["caption"] == text
                assert key == text_key(text)
            else:
                assert key == file_key(r["path"])
                stem = Path(r["path"]).stem
                has = Path(r["path"]).with_suffix(".txt").is_file()
                assert r["caption"] == (f"caption of {stem}" if has else "")
            np.testing.assert_allclose(np.asarray(r["vector"]), exp, atol=1e-5)
            for p in presets:
                e = by_preset[p][ident]
                e = e[0] if r["modality"] == "text" else e
                np.testing.assert_allclose(np.asarray(r[sinks.column_name(p)]), e, atol=1e-5)
        # the database's own search under a preset column ranks as the preset's vectors do
        q = by_preset[presets[-1]][("text", f"{inputs['texts']}:1")][0]
        got = sink.search(sinks.column_name(presets[-1]), q, 3, modality="audio")
        ref = sorted(((float(v @ q), k) for k, v in
                      ((k, by_preset[presets[-1]][(r["modality"], r["path"])])
                       for k, r in rows.items() if r["modality"] == "audio")), reverse=True)
        assert got == [k for _, k in ref[:3]]
    finally:
        sink.close()
    again = embed_to(str(bundle), inputs["paths"], inputs["texts"], uri,
                           cache_dir=root / "cache", progress=False)
    assert (again.written, again.present, again.rows) == (0, 3 * N, 3 * N)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_killed_run_resumes_and_adds_only_what_is_missing(world, engine, tmp_path):
    root, bundle, inputs = world
    uri = _uri(engine, tmp_path)
    marker = tmp_path / "upserts.log"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from freebind.run import sinks
        sinks.CHUNK_ROWS = 2
        for cls in sinks.SINKS.values():
            def upsert(self, rows, _orig=cls.upsert):
                _orig(self, rows)
                with open({str(marker)!r}, "a") as fh:
                    fh.write(f"{{len(rows)}}\\n")
                time.sleep(0.5)   # slow enough to be killed part way
            cls.upsert = upsert
        import freebind
        freebind.embed({str(bundle)!r}, [Path(p) for p in {[str(p) for p in inputs["paths"]]!r}],
                       {str(inputs["texts"])!r}, to={uri!r}, cache_dir={str(root / "cache")!r},
                       progress=False)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run_and_kill(script, lambda: marker.is_file() and len(marker.read_text().split()) >= 2,
                 timeout=120, poll=0.05, settle=0.0, env=env)
    done = sum(int(x) for x in marker.read_text().split())
    assert 0 < done < 3 * N
    report = embed_to(str(bundle), inputs["paths"], inputs["texts"], uri,
                            cache_dir=root / "cache", progress=False)
    assert report.present >= done and report.written == 3 * N - report.present
    assert report.rows == 3 * N
    want = _expected(bundle, inputs)
    sink = sinks.connect(uri)
    try:
        rows = _all_rows(sink, ["modality", "path", "vector"])
        assert len(rows) == 3 * N
        for r in rows.values():
            exp = want[(r["modality"], r["path"])]
            exp = exp[0] if r["modality"] == "text" else exp
            np.testing.assert_allclose(np.asarray(r["vector"]), exp, atol=1e-5)
    finally:
        sink.close()


def test_another_run_into_the_same_collection_is_refused(world, tmp_path):
    root, bundle, inputs = world
    uri = _uri("lancedb", tmp_path)
    embed_to(str(bundle), [inputs["paths"][-1]], None, uri, cache_dir=root / "cache",
                   progress=False)
    with pytest.raises(UsageError, match="holds another run"):
        embed_to(str(bundle), [inputs["paths"][-1]], None, uri, factors=["a=0.9"],
                       cache_dir=root / "cache", progress=False)


def test_uri_grammar():
    p = sinks.parse("lancedb:/data/db")
    assert (p.engine, p.location, p.collection, p.remote) == ("lancedb", "/data/db",
                                                               "freebind", False)
    p = sinks.parse("qdrant+http://localhost:6333#clips")
    assert (p.engine, p.location, p.collection, p.remote) == ("qdrant",
                                                              "http://localhost:6333",
                                                              "clips", True)
    p = sinks.parse("milvus:/x/m.db#c_1")
    assert (p.location, p.collection) == ("/x/m.db", "c_1")
    assert sinks.parse("milvus+https://h:19530#c").location == "https://h:19530"
    for bad, why in (("qdrant:/x", "name the collection"), ("milvus:/x/m#c", "*.db"),
                     ("lancedb+http://h#t", "embedded"), ("qdrant:/x#a-b", "letters"),
                     ("pinecone:x#y", "not a vector database")):
        with pytest.raises(UsageError, match=why.replace("*", r"\*")):
            sinks.parse(bad)
    assert sinks.column_name("at-expertise") == "vector_at_expertise"
    assert sinks.point_id("ab" * 32) == "abababab-abab-abab-abab-abababababab"


@pytest.mark.parametrize("engine,extra", [("lancedb", "freebind[lancedb]"),
                                          ("qdrant", "freebind[qdrant]"),
                                          ("milvus", "freebind[milvus]")])
def test_a_missing_extra_is_named_before_any_work(world, engine, extra, tmp_path,
                                                  monkeypatch):
    root, bundle, inputs = world
    module = sinks.EXTRAS[engine][0]
    monkeypatch.setitem(sys.modules, module, None)   # as if not installed: import fails
    cache = tmp_path / "cache"
    with pytest.raises(UsageError, match=re.escape(extra)):
        embed_to(str(bundle), inputs["paths"], None, _uri(engine, tmp_path),
                       cache_dir=cache, progress=False)
    assert not cache.exists() and not any(tmp_path.iterdir())


def test_cli_embed_to_writes_and_reports(world, tmp_path):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    root, bundle, inputs = world
    uri = _uri("lancedb", tmp_path)
    args = ["embed", str(bundle), str(inputs["paths"][-1]), "--to", uri, "--cache-dir",
            str(root / "cache"), "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert (out["written"], out["rows"]) == (N, N)
    res = CliRunner().invoke(app, ["embed", str(bundle), str(inputs["paths"][-1])])
    assert res.exit_code != 0 and "--to URI" in res.output


def test_the_library_call_takes_to(world, tmp_path):
    root, bundle, inputs = world
    uri = _uri("qdrant", tmp_path)
    report = freebind.embed(str(bundle), [inputs["paths"][-1]], to=uri,
                            cache_dir=root / "cache", progress=False, presets=False)
    assert isinstance(report, sinks.SinkReport)
    assert (report.written, report.rows, list(report.vectors)) == (N, N, ["vector"])
    with pytest.raises(UsageError, match="leave out output"):
        freebind.embed(str(bundle), [inputs["paths"][-1]], output=tmp_path / "out", to=uri)


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_tables_other_columns_become_metadata(world, engine, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, bundle, _ = world
    texts = ["a dog barking", "rain on a roof", "a red square"]
    table = tmp_path / "captions.parquet"
    pq.write_table(pa.table({"text": texts, "clip id": [7, 8, 9],
                             "license": ["cc-by", None, "mit"],
                             "raw": pa.array([b"x", b"y", b"z"], pa.binary())}), table)
    uri = _uri(engine, tmp_path)
    report = embed_to(str(bundle), [], table, uri, cache_dir=root / "cache",
                            progress=False, presets=False)
    assert report.rows == 3
    sink = sinks.connect(uri)
    try:
        assert sink.read_meta()["columns"] == ["clip_id", "license"]
        rows = _all_rows(sink, ["path", "caption", "clip_id", "license"])
    finally:
        sink.close()
    got = sorted((r["caption"], r["clip_id"], r["license"], r["path"]) for r in rows.values())
    assert got == [("a dog barking", "7", "cc-by", f"{table}::text[0]"),
                   ("a red square", "9", "mit", f"{table}::text[2]"),
                   ("rain on a roof", "8", "", f"{table}::text[1]")]
