"""freebind.Index: exact factor-aware ranking against re-fusing, persistence, incremental adds,
approximate search recall."""

import json

import numpy as np
import pytest
import torch

from freebind.algebra import plan
from freebind.util.errors import UsageError
from freebind.fusion.fused import FusedSpace
from freebind.fusion.graph import fuse
from freebind.search import Index, parts
from index_checks import add_all, assert_ranks_as_refusing, random_leaves, random_projectors

EXPR = "mini:bind + d(mini:vl) + c(mini:clap, mini:clap2)"


def random_fused(expr=EXPR, seed=0):
    p = plan(expr)
    return FusedSpace(p, random_projectors(p, torch.Generator().manual_seed(seed)))


@pytest.fixture(scope="module")
def world():
    fs = random_fused()
    n = 200
    leaves = random_leaves(fs, n)
    index = Index(fs)
    add_all(index, leaves, n)
    return fs, leaves, index, n


FACTORS = [[], ["a=0.8"], ["b2.a=0.3", "b1.i=0.2"], ["b2=off"], ["b1=off"], ["a=1"],
           ["a=0", "t=0.9"], ["mini:clap2=off"]]


@pytest.mark.parametrize("factors", FACTORS, ids=lambda f: ",".join(f) or "default")
@pytest.mark.parametrize("modality", ["audio", "image", "text"])
def test_scores_equal_refusing_under_other_factors(world, factors, modality):
    fs, leaves, index, n = world
    hits = assert_ranks_as_refusing(fs, leaves, index, modality, factors, k=n, queries=4,
                                    seed=1, top=25)
    for row in hits:
        assert [h.rank for h in row[:3]] == [1, 2, 3]


def test_preset_equals_its_factors(world):
    fs, leaves, index, n = world
    q = np.eye(fs.dim, dtype=np.float32)[:1]
    a = index.search(vector=q[0], k=20, preset="at-expertise", modality="audio")
    b = index.search(vector=q[0], k=20, factors=fs.presets["at-expertise"], modality="audio")
    assert [h.id for h in a] == [h.id for h in b]
    c = index.search(vector=q[0], k=20, modality="audio")  # default a=0.5 ranks otherwise
    assert [h.id for h in a] != [h.id for h in c]


def test_pivot_of_each_modality():
    fs = random_fused()
    t = fs.table
    # audio: b1 (displacement, mini:vl has no audio) projects; b2 mixes it
    assert parts.pivot(fs.graph, "audio", t) == parts.Pivot("b2", "c", True, True)
    # image: b2's experts have no image, so the last mixing bond is b1
    assert parts.pivot(fs.graph, "image", t) == parts.Pivot("b1", "d", True, True)
    # a factor of an earlier bond is part of the key, the pivot's own is not
    from freebind.fusion.factors import resolve

    t2 = resolve(fs.graph, ["b2.t=0.9"])
    t3 = resolve(fs.graph, ["b1.t=0.1"])
    assert parts.key(fs.graph, "text", t) == parts.key(fs.graph, "text", t2)
    assert parts.key(fs.graph, "text", t) != parts.key(fs.graph, "text", t3)


def test_mixed_modalities_rank_by_score(world):
    fs, leaves, index, n = world
    q = np.random.default_rng(3).normal(size=fs.dim).astype(np.float32)
    q /= np.linalg.norm(q)
    hits = index.search(vector=q, k=30)
    assert len({h.modality for h in hits}) > 1
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    per = {m: index.search(vector=q, k=30, modality=m) for m in ("audio", "image", "text")}
    best = sorted((h.score for hs in per.values() for h in hs), reverse=True)[:30]
    np.testing.assert_allclose(scores, best)


def test_save_load_roundtrip_and_incremental_add(tmp_path, world):
    fs, leaves, _, n = world
    bundle = fs.save(tmp_path / "b.safetensors")
    index = Index(str(bundle))
    add_all(index, {r: {m: v[:120] for m, v in mods.items()} for r, mods in leaves.items()},
            120)
    index.save(tmp_path / "idx")
    for f in (tmp_path / "idx").rglob("*.npy"):  # plain arrays, no pickled objects
        np.load(f, allow_pickle=False)
    again = Index.load(tmp_path / "idx")
    assert again.info()["modalities"] == {"audio": 120, "image": 120, "text": 120}
    rest = {r: {m: v[120:] for m, v in mods.items()} for r, mods in leaves.items()}
    add_all(again, rest, n - 120, offset=120)
    add_all(again, rest, n - 120, offset=120)  # the same items again: nothing added
    again.save(tmp_path / "idx")
    final = Index.load(tmp_path / "idx")
    full = Index(fs)
    add_all(full, leaves, n)
    q = np.random.default_rng(5).normal(size=fs.dim).astype(np.float32)
    for factors in ([], ["a=0.9"], ["b1.t=0.3"]):
        a = final.search(vector=q, k=40, factors=factors)
        b = full.search(vector=q, k=40, factors=factors)
        assert [(h.path, h.modality) for h in a] == [(h.path, h.modality) for h in b]
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-6)


def test_load_refuses_a_changed_bundle(tmp_path, world):
    fs, leaves, _, n = world
    bundle = fs.save(tmp_path / "b.safetensors")
    index = Index(str(bundle))
    add_all(index, {r: {m: v[:10] for m, v in mods.items()} for r, mods in leaves.items()}, 10)
    index.save(tmp_path / "idx")
    random_fused(seed=7).save(bundle)
    with pytest.raises(Exception, match="changed since it was indexed"):
        Index.load(tmp_path / "idx")
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    meta["format"] = "something else"
    (tmp_path / "idx" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="not a version-2 freebind index"):
        Index.load(tmp_path / "idx")


def test_approximate_search_recall_and_exact_rerank(tmp_path):
    fs = random_fused()
    n = 2000
    rng = np.random.default_rng(0)
    # clustered data, as real embeddings are: items near one of 40 centres
    leaves = {}
    for ref, meta in fs.plan.spaces.items():
        centres = rng.normal(size=(40, meta["dim"]))
        lab = rng.integers(0, 40, size=n)
        leaves[ref] = {m: (centres[lab] + 0.3 * rng.normal(size=(n, meta["dim"])))
                       .astype(np.float32) for m in meta["modalities"]}
    fs.save(tmp_path / "b.safetensors")
    index = Index(fs, exact_limit=500)
    index.add_leaves("audio", [f"a{i}" for i in range(n)],
                     {r: leaves[r]["audio"] for r in leaves if "audio" in leaves[r]})
    recall = index.build_ann()
    assert recall["audio"] >= 0.9
    index.save(tmp_path / "idx")
    again = Index.load(tmp_path / "idx")
    assert again.blocks["audio"].ann is not None
    q = again.embed_query  # noqa: F841  (queries below are item vectors)
    _, pv, a, b, dot = again._components(again.blocks["audio"], again.table)
    rows = parts.fused_rows(a, b, dot, 0.5)
    agree = 0
    for i in range(0, n, 100):
        approx = again.search(vector=rows[i], k=10)
        exact = again.search(vector=rows[i], k=10, exact=True)
        agree += len({h.id for h in approx} & {h.id for h in exact})
        # what the approximate search returns is scored exactly
        by_id = {h.id: h.score for h in again.search(vector=rows[i], k=n, exact=True)}
        assert all(abs(h.score - by_id[h.id]) < 1e-5 for h in approx)
    assert agree / (10 * len(range(0, n, 100))) >= 0.9


def test_errors_name_the_problem(world):
    fs, leaves, index, n = world
    q = np.zeros(fs.dim, dtype=np.float32)
    with pytest.raises(UsageError, match="positive whole number"):
        index.search(vector=q, k=0)
    with pytest.raises(UsageError, match="no depth items"):
        index.search(vector=q, modality="depth")
    with pytest.raises(UsageError, match="unknown preset"):
        index.search(vector=q, preset="nope")
    with pytest.raises(UsageError, match="not a number"):
        index.search(vector=q, factors=["a=lots"])
    with pytest.raises(UsageError, match=r"expected \[Q, 48\]"):
        index.search(vector=np.zeros(3))
    with pytest.raises(UsageError, match="needs base embeddings of"):
        index.add_leaves("audio", ["x"], {"mini:bind": np.ones((1, 64))})


def test_plain_space_index_and_text_queries(tmp_path):
    from freebind import spaces

    sp = spaces.get("mini:clap")
    texts = ["a dog barks loudly", "a quiet bell rings", "a siren wails", "a frog croaks"]
    index = Index("mini:clap")
    index.add("text", texts, store=tmp_path / "cache")
    hits = index.search("a dog barks loudly", k=4)
    assert hits[0].text == "a dog barks loudly" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    vec = sp.encode("text", ["a siren wails"])
    vec = np.asarray(vec, dtype=np.float32)[0]
    assert [h.path for h in index.search(vector=vec, k=1)] == ["a siren wails"]
    with pytest.raises(UsageError, match="apply to bundles"):
        index.search("a dog", factors=["a=0.5"])


def _scan_block(a, b):
    from freebind.search.index import _Block

    block = _Block("audio", [])
    block.ids = np.arange(len(a if a is not None else b))
    return block


def _near_ties(rng, n, d):
    """Unit rows in groups of 50 that differ by ~1e-6 (scores closer than float16 can tell),
    some exact duplicates."""
    base = rng.normal(size=(n // 50, d))
    x = np.repeat(base, 50, axis=0) + 1e-6 * rng.normal(size=(n // 50 * 50, d))
    x[::7] = x[1::7][: len(x[::7])] if len(x[1::7]) >= len(x[::7]) else x[::7]
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("f", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("k", [1, 10, 120])
def test_float16_scan_is_exact(f, k):
    """The float16 scan returns the float32 scan's rows, order and scores, bit for bit, on
    near ties float16 cannot separate and on exact duplicates."""
    from freebind.search.index import _scan_topk, _topk

    rng = np.random.default_rng(int(10 * f) + k)
    n, d = 5000, 96
    a, b = _near_ties(rng, n, d), _near_ties(rng, n, d)
    dot = np.einsum("ij,ij->i", a, b).astype(np.float32)
    block = _scan_block(a, b)
    for qi in range(4):
        q = (a[rng.integers(n)] + 0.05 * rng.normal(size=d)).astype(np.float32) * (qi + 0.5)
        rows, scores = _scan_topk(block, "key", q, a, b, dot, f, k)
        full = parts.scores(q, a, b, dot, f)
        expect = _topk(full, k)
        assert rows.tolist() == expect.tolist()
        assert scores.tobytes() == full[expect].tobytes()
    # one component only
    rows, scores = _scan_topk(_scan_block(a, None), "key", q, a, None, None, 0.0, k)
    assert rows.tolist() == _topk(parts.scores(q, a, None, None, 0.0), k).tolist()


def test_float16_scan_bound_is_needed():
    """Without its error bound the float16 scan misses rows of the exact top k (so the test
    above can fail)."""
    import freebind.search.index as ix

    rng = np.random.default_rng(5)
    n, d, k = 5000, 96, 10
    a, b = _near_ties(rng, n, d), _near_ties(rng, n, d)
    dot = np.einsum("ij,ij->i", a, b).astype(np.float32)
    bound = ix._Scan.bound
    misses = 0
    try:
        ix._Scan.bound = lambda self, side, dim: np.zeros(len(self.norm[side]))
        for _ in range(20):
            q = (a[rng.integers(n)] + 0.05 * rng.normal(size=d)).astype(np.float32)
            rows, _ = ix._scan_topk(_scan_block(a, b), "key", q, a, b, dot, 0.5, k)
            misses += rows.tolist() != ix._topk(parts.scores(q, a, b, dot, 0.5), k).tolist()
    finally:
        ix._Scan.bound = bound
    assert misses > 0


def test_large_modality_search_scans_float16_with_the_same_hits(monkeypatch):
    import freebind.search.index as ix

    fs = random_fused()
    n = 3000
    monkeypatch.setattr(ix, "SCAN_MIN_ROWS", 1000)
    leaves = random_leaves(fs, n, seed=3)
    index = Index(fs)
    index.add_leaves("audio", [f"a{i}" for i in range(n)],
                     {r: leaves[r]["audio"] for r in leaves if "audio" in leaves[r]})
    rng = np.random.default_rng(2)
    for factors in ([], ["a=0.3"], ["b2=off"]):
        q = rng.normal(size=fs.dim).astype(np.float32)
        fast = index.search(vector=q, k=20, factors=factors)
        assert index.blocks["audio"].scans
        monkeypatch.setattr(ix, "SCAN_MIN_ROWS", 10 ** 9)
        slow = index.search(vector=q, k=20, factors=factors)
        monkeypatch.setattr(ix, "SCAN_MIN_ROWS", 1000)
        assert [(h.id, h.score) for h in fast] == [(h.id, h.score) for h in slow]
    # a float16 product that does not sum in float32: the float32 scan, same hits
    monkeypatch.setattr(ix, "_HALF_MV_OK", [False])
    index.blocks["audio"].scans.clear()
    assert [(h.id, h.score) for h in index.search(vector=q, k=20, factors=factors)] == \
        [(h.id, h.score) for h in slow]


def test_topk_ties_take_the_lower_rows():
    from freebind.search.index import _topk

    rng = np.random.default_rng(0)
    s = np.round(rng.random(1000), 1).astype(np.float32)   # ~100 rows tie at each value
    best = np.nonzero(s == s.max())[0]
    assert _topk(s, 5).tolist() == best[:5].tolist()
    top = _topk(s, len(best) + 3)
    assert top[:len(best)].tolist() == best.tolist()
    assert top[len(best):].tolist() == np.nonzero(s == np.sort(np.unique(s))[-2])[0][:3].tolist()


def test_factor_change_reuses_the_query_projections(world):
    """A query fused under other factors: the same numbers as fusing it afresh, and no
    projector run again for it."""
    fs, leaves, index, n = world
    rng = np.random.default_rng(4)
    q = {ref: {"text": rng.normal(size=(1, meta["dim"])).astype(np.float32)}
         for ref, meta in fs.plan.spaces.items() if "text" in meta["modalities"]}
    calls = []
    for g in fs.projectors.values():
        if hasattr(g, "mixture"):
            orig = g.mixture
            g.mixture = lambda x, orig=orig: (calls.append(1), orig(x))[1]
    try:
        index._memo = None
        for factors in (["a=0.2"], ["a=0.7", "t=0.4"], ["b2.t=0.9"], ["a=0.2"]):
            table = index._table(factors)
            got = index._fuse_query_leaves("text", q, table)
            want = fuse(fs.graph, fs.projectors, q, table=table, modalities=["text"])["text"]
            assert got.tobytes() == want.numpy().tobytes()
            if factors == ["a=0.2"] and len(calls):
                first = len(calls)
        calls.clear()
        index._fuse_query_leaves("text", q, index._table(["a=0.55", "t=0.1"]))
        assert not calls and first > 0
    finally:
        for g in fs.projectors.values():
            g.__dict__.pop("mixture", None)
        index._memo = None
