"""``index --to URI`` and ``Index.open(URI)``: the mini world indexed into LanceDB (embedded),
Qdrant (local mode) and Milvus Lite, the real engines, searched under other factors than the
index's: the same hits and scores as the exact local index (every item a candidate), exact
scores whatever the candidates, recall@10 measured and printed, idempotent re-runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search_world import make_bundle

import freebind
from freebind.search import Index
from freebind.search.databases import DatabaseIndex, index_to, measure_recall, recall_settings
from freebind.util.errors import UsageError

N = 12
ENGINES = {"lancedb": "lancedb:{root}/lance#idx", "qdrant": "qdrant:{root}/qdrant#idx",
           "milvus": "milvus:{root}/milvus.db#idx"}
SETTINGS = [dict(), dict(preset="at-expertise"), dict(factors=["a=0.9"]),
            dict(factors=["b1=off"]), dict(factors=["b1.t=0.2", "b2.a=0.3"])]
QUERIES = ["a dog barking", "the purple bongo sounds", "a red square"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from freebind.mini.writers import write_pools

    root = tmp_path_factory.mktemp("db-world")
    write_pools(root / "pools", n_audio=N, n_image=N, n_text=N, seed=5)
    bundle = make_bundle(root / "bundle.safetensors")
    freebind.embed(str(bundle), [root / "pools" / "audio", root / "pools" / "image"],
                   root / "pools" / "texts.txt", root / "emb", cache_dir=root / "cache",
                   progress=False)
    local = Index(str(bundle), store=root / "cache")
    local.add_embeddings(root / "emb", store=root / "cache")
    return root, bundle, local


@pytest.fixture(scope="module", params=list(ENGINES))
def indexed(world, request, tmp_path_factory):
    root, bundle, local = world
    uri = ENGINES[request.param].format(root=tmp_path_factory.mktemp(request.param))
    report = index_to([root / "emb"], uri, store=root / "cache", progress=False,
                      recall_queries=4)
    return uri, report


def test_index_to_writes_every_item_and_measures_recall(world, indexed):
    root, bundle, local = world
    uri, report = indexed
    assert (report["items"], report["written"], report["rows"]) == (3 * N, 3 * N, 3 * N)
    assert report["modalities"] == {"audio": N, "image": N, "text": N}
    labels = [s[0] for s in recall_settings(local)]
    assert labels == ["index factors", "preset at-expertise", "preset versatile", "b1=off"]
    # N rows a modality, fewer than the candidates a column gives: the exact top 10
    assert report["recall@10"] == {label: 1.0 for label in labels}
    again = index_to([root / "emb"], uri, store=root / "cache", progress=False,
                     recall_queries=1)
    assert (again["written"], again["present"], again["rows"]) == (0, 3 * N, 3 * N)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: json.dumps(s))
def test_search_equals_the_exact_local_index_under_any_factors(world, indexed, setting):
    root, bundle, local = world
    uri, _ = indexed
    db = Index.open(uri, store=root / "cache")
    try:
        assert isinstance(db, DatabaseIndex)
        got = db.search_many(QUERIES, k=10, **setting)
        want = local.search_many(QUERIES, k=10, exact=True, **setting)
        for g, w in zip(got, want):
            assert [(h.id, h.modality, h.path, h.text) for h in g] == \
                [(h.id, h.modality, h.path, h.text) for h in w]
            np.testing.assert_allclose([h.score for h in g], [h.score for h in w],
                                       atol=2e-5)
        # one modality, a vector query
        q = local.embed_query("text", QUERIES[0], **setting)
        g = db.search(vector=q, modality="audio", k=5, **setting)
        w = local.search(vector=q, modality="audio", k=5, exact=True, **setting)
        assert [h.path for h in g] == [h.path for h in w]
    finally:
        db.close()


def test_few_candidates_still_give_exact_scores(world, indexed):
    """With 3 candidates a column the hits may differ from exact search, but each hit's score
    is the exact score of that item (freebind rescores), under stored and recomputed
    components alike."""
    root, bundle, local = world
    uri, _ = indexed
    db = Index.open(uri, store=root / "cache")
    try:
        for setting in (dict(factors=["a=0.7"]), dict(factors=["b1=off"])):
            q = local.embed_query("text", QUERIES[1], **setting)
            exact = {(h.modality, h.path): h.score for h in
                     local.search(vector=q, k=3 * N, exact=True, **setting)}
            hits = db.search(vector=q, k=5, candidates=3, **setting)
            assert len(hits) == 5
            for h in hits:
                assert h.score == pytest.approx(exact[(h.modality, h.path)], abs=2e-5)
        recall = measure_recall(local, db, n=3, settings=[("a=0.7", ["a=0.7"], None)])
        assert 0.0 < recall["a=0.7"] <= 1.0
    finally:
        db.close()


def test_an_embed_collection_is_not_an_index(world, tmp_path):
    root, bundle, local = world
    uri = f"lancedb:{tmp_path}/l#items"
    freebind.embed(str(bundle), [root / "pools" / "image"], to=uri, cache_dir=root / "cache",
                   progress=False)
    with pytest.raises(UsageError, match="embed --to"):
        Index.open(uri)
    with pytest.raises(UsageError, match="not a freebind index"):
        Index.open(f"lancedb:{tmp_path}/l#other")


def test_cli_index_to_prints_recall_and_search_reads_the_uri(world, tmp_path):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    root, bundle, local = world
    uri = f"qdrant:{tmp_path}/q#idx"
    res = CliRunner().invoke(app, ["index", str(root / "emb"), "--to", uri, "--cache-dir",
                                   str(root / "cache"), "-q"])
    assert res.exit_code == 0, res.output
    assert "recall@10" in res.output and "b1=off" in res.output
    res = CliRunner().invoke(app, ["search", uri, "--text", QUERIES[0], "-k", "4",
                                   "--factor", "b1=off", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout[res.stdout.index("{"):])
    want = local.search(QUERIES[0], k=4, factors=["b1=off"], exact=True)
    assert [h["path"] for h in got["hits"]] == [h.path for h in want]
    res = CliRunner().invoke(app, ["index", str(root / "emb")])
    assert res.exit_code != 0 and "--to URI" in res.output


def test_a_killed_index_to_resumes(world, tmp_path):
    import os
    import sys
    import textwrap

    from killed_run import run_and_kill

    root, bundle, local = world
    uri = f"milvus:{tmp_path}/m.db#idx"
    marker = tmp_path / "upserts.log"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import time
        from freebind.run import sinks
        from freebind.search import Index, databases
        databases.CHUNK = 2
        def upsert(self, rows, _orig=sinks.MilvusSink.upsert):
            _orig(self, rows)
            with open({str(marker)!r}, "a") as fh:
                fh.write(f"{{len(rows)}}\\n")
            time.sleep(0.5)
        sinks.MilvusSink.upsert = upsert
        index = Index({str(bundle)!r}, store={str(root / "cache")!r})
        index.add_embeddings({str(root / "emb")!r}, store={str(root / "cache")!r})
        databases.write_index(index, {uri!r})
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run_and_kill(script, lambda: marker.is_file() and len(marker.read_text().split()) >= 2,
                 timeout=120, poll=0.05, settle=0.0, env=env)
    done = sum(int(x) for x in marker.read_text().split())
    assert 0 < done < 3 * N
    report = index_to([root / "emb"], uri, store=root / "cache", progress=False,
                      recall_queries=2)
    assert report["present"] >= done and report["written"] == 3 * N - report["present"]
    assert report["rows"] == 3 * N
    db = Index.open(uri, store=root / "cache")
    try:
        got = db.search(QUERIES[0], k=3 * N, factors=["b1=off"])
        want = local.search(QUERIES[0], k=3 * N, factors=["b1=off"], exact=True)
        assert [h.path for h in got] == [h.path for h in want]
    finally:
        db.close()
