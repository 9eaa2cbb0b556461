"""Pseudo tuples: routes, chunked top-k retrieval, softmax aggregation, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freebind.build import pseudo_tuples as pseudo
from freebind.algebra import data_modes
from freebind.build.pseudo_tuples import PseudoTupleError, choose_route, topk_retrieve


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def rand_unit(rng, n, d):
    return unit(rng.normal(size=(n, d)))


def test_routes_prefer_expert_then_base_then_chain():
    cov = {"E": ("audio", "text"), "B": ("audio", "image", "text")}
    mods = ("audio", "image", "text")
    assert choose_route("audio", "text", cov, ("E", "B"), mods).hops == (("E", "audio", "text"),)
    assert choose_route("text", "audio", cov, ("E", "B"), mods).hops == (("E", "text", "audio"),)
    assert choose_route("image", "text", cov, ("E", "B"), mods).hops == (("B", "image", "text"),)
    assert choose_route("audio", "image", cov, ("E", "B"), mods).hops == (("B", "audio", "image"),)
    # base mini:vl-like (image, text) + expert clap-like (audio, text): audio-image chains
    cov2 = {"E": ("audio", "text"), "B": ("image", "text")}
    r = choose_route("audio", "image", cov2, ("E", "B"), mods)
    assert r.hops == (("E", "audio", "text"), ("B", "text", "image"))
    assert "via E" in r.describe() and "via B" in r.describe()
    with pytest.raises(PseudoTupleError, match="no space aligns audio with image"):
        choose_route("audio", "image", {"E": ("audio",), "B": ("image",)}, ("E", "B"),
                     ("audio", "image"))


def test_topk_matches_brute_force_and_chunking_is_invisible():
    rng = np.random.default_rng(0)
    q, p = rand_unit(rng, 37, 12), rand_unit(rng, 101, 12)
    idx, w = topk_retrieve(q, p, k=5, tau=0.1, chunk=7)
    sims = q @ p.T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, want)
    top = np.take_along_axis(sims, want, axis=1) / 0.1
    soft = np.exp(top - top.max(1, keepdims=True))
    np.testing.assert_allclose(w, soft / soft.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    idx2, w2 = topk_retrieve(q, p, k=5, tau=0.1, chunk=1000)
    np.testing.assert_array_equal(idx, idx2)
    np.testing.assert_allclose(w, w2, rtol=1e-5, atol=1e-6)  # BLAS blocking may differ
    idx3, w3 = topk_retrieve(q, p, k=5, tau=0.1, chunk=7)
    assert idx.tobytes() == idx3.tobytes() and w.tobytes() == w3.tobytes()
    # k larger than the pool is clipped
    assert topk_retrieve(q, p[:3], k=8, tau=1.0)[0].shape == (37, 3)


def test_chunk_rows_bounds_the_block():
    assert pseudo.chunk_rows(200_000, 128 << 20) * 200_000 * 4 <= 128 << 20
    assert pseudo.chunk_rows(10) == 8192


def planted_world(rng, n=60, d=16):
    """Expert (audio, text) where audio i's best text is perm[i]; base (audio, image, text)."""
    perm = rng.permutation(n)
    ea = rand_unit(rng, n, d)
    et = np.ones((n, d), dtype=np.float32)
    et[perm] = unit(ea + 0.05 * rng.normal(size=ea.shape))
    base = {m: rand_unit(rng, n, d + 4) for m in ("audio", "image", "text")}
    return {"E": {"audio": ea, "text": et}, "B": base}, perm


def test_build_uses_the_expert_inside_its_modalities():
    rng = np.random.default_rng(1)
    pools, perm = planted_world(rng)
    t = pseudo.build(pools, expert="E", base="B", topk=4, tau=0.05)
    assert t.modalities == ("audio", "image", "text")
    assert len(t) == 180 and set(t.fills) == {(q, m) for q in t.modalities for m in t.modalities
                                             if q != m}
    np.testing.assert_array_equal(t.fills[("audio", "text")].index[:, 0], perm)
    inv = np.argsort(perm)
    np.testing.assert_array_equal(t.fills[("text", "audio")].index[:, 0], inv)
    assert t.fills[("image", "text")].route.hops == (("B", "image", "text"),)
    np.testing.assert_allclose(t.fills[("audio", "text")].weight.sum(1), 1.0, atol=1e-6)
    assert t.routes()["audio->text"].startswith("audio → text (via E)")


def test_gather_aggregates_neighbours_with_softmax_weights():
    rng = np.random.default_rng(2)
    pools, _ = planted_world(rng, n=30)
    t = pseudo.build(pools, expert="E", base="B", topk=3, tau=0.2)
    rows = np.array([4, 0, 9])
    got = t.gather(pools["B"], "audio", rows)
    assert set(got) == {"audio", "image", "text"}
    np.testing.assert_array_equal(got["audio"].numpy(), pools["B"]["audio"][rows])
    f = t.fills[("audio", "image")]
    want = np.einsum("bk,bkd->bd", f.weight[rows], pools["B"]["image"][f.index[rows]])
    np.testing.assert_allclose(got["image"].numpy(), unit(want), rtol=1e-5, atol=1e-6)
    # the expert has no image pool: only its modalities come back
    assert set(t.gather(pools["E"], "image", rows)) == {"audio", "text"}
    # all rows
    assert t.gather(pools["E"], "text")["audio"].shape == (30, 16)


def test_chain_through_a_shared_modality():
    rng = np.random.default_rng(3)
    n, d = 40, 8
    pa = rand_unit(rng, n, d)
    perm_at = rng.permutation(n)
    pt_e = np.ones((n, d), dtype=np.float32)
    pt_e[perm_at] = pa  # expert: audio i <-> text perm_at[i]
    pt_b = rand_unit(rng, n, d)
    perm_ti = rng.permutation(n)
    pi = np.ones((n, d), dtype=np.float32)
    pi[perm_ti] = pt_b  # base: text j <-> image perm_ti[j]
    pools = {"E": {"audio": pa, "text": pt_e}, "B": {"image": pi, "text": pt_b}}
    t = pseudo.build(pools, expert="E", base="B", topk=2, tau=0.01)
    fill = t.fills[("audio", "image")]
    assert len(fill.route.hops) == 2
    np.testing.assert_array_equal(fill.index[:, 0], perm_ti[perm_at])


def test_deterministic_for_a_seed_and_query_subsets():
    rng = np.random.default_rng(4)
    pools, _ = planted_world(rng, n=50)
    a = pseudo.build(pools, "E", "B", seed=7, max_queries=20)
    b = pseudo.build(pools, "E", "B", seed=7, max_queries=20)
    c = pseudo.build(pools, "E", "B", seed=8, max_queries=20)
    assert all(np.array_equal(a.queries[q], b.queries[q]) for q in a.modalities)
    assert all(a.fills[k].index.tobytes() == b.fills[k].index.tobytes()
               and a.fills[k].weight.tobytes() == b.fills[k].weight.tobytes() for k in a.fills)
    assert not all(np.array_equal(a.queries[q], c.queries[q]) for q in a.modalities)
    assert a.size("audio") == 20


def test_bad_inputs():
    rng = np.random.default_rng(5)
    pools, _ = planted_world(rng, n=10)
    with pytest.raises(PseudoTupleError, match="topk"):
        pseudo.build(pools, "E", "B", topk=0)
    with pytest.raises(PseudoTupleError, match="tau"):
        pseudo.build(pools, "E", "B", tau=0)
    bad = {"E": {"audio": pools["E"]["audio"][:5], "text": pools["E"]["text"]}, "B": pools["B"]}
    with pytest.raises(PseudoTupleError, match="differ in size"):
        pseudo.build(bad, "E", "B")


def test_data_modes_follow_the_paper():
    assert data_modes(("audio", "image", "text")) == ["mix", "A", "T", "V", "AT", "AV", "TV"]
    assert data_modes(("audio", "text")) == ["mix", "A", "T"]
    assert data_modes(("image",)) == ["V"]
    assert pseudo.mode_modalities("AV", ("audio", "image", "text")) == ("audio", "image")
    assert pseudo.mode_modalities("mix", ("audio", "text")) == ("audio", "text")


def test_torch_inputs_are_accepted():
    rng = np.random.default_rng(6)
    pools, perm = planted_world(rng, n=20)
    tp = {k: {m: torch.from_numpy(v) for m, v in d.items()} for k, d in pools.items()}
    t = pseudo.build(tp, "E", "B", topk=2)
    np.testing.assert_array_equal(t.fills[("audio", "text")].index[:, 0], perm)


def test_a_direct_build_and_a_planned_build_share_one_default_topk_and_tau():
    """``pseudo.build`` without ``topk``/``tau`` makes the tuples a compiled build would:
    both read one default (freebind.algebra.keywords)."""
    from freebind.algebra import keywords as config
    from freebind.algebra import plan

    rng = np.random.default_rng(1)
    pools, _ = planted_world(rng)
    hyper = plan("mini:bind + c(mini:clap)").jobs[0].hyper
    assert (hyper["topk"], hyper["tau"]) == (config.DEFAULT_TOPK, config.DEFAULT_TAU) == (5, 0.05)
    direct = pseudo.build(pools, expert="E", base="B")
    planned = pseudo.build(pools, expert="E", base="B", topk=hyper["topk"], tau=hyper["tau"])
    assert direct.fills[("audio", "text")].index.shape == (60, 5)
    for key, fill in planned.fills.items():
        np.testing.assert_array_equal(direct.fills[key].index, fill.index)
        np.testing.assert_array_equal(direct.fills[key].weight, fill.weight)


def test_max_queries_is_a_checked_training_option():
    """``max_queries`` (pseudo-tuple queries per modality) passes the build's hyper check as an
    integer, and a value below 1 is refused before any work."""
    from freebind.build.jobs import check_hyper
    from freebind.util.errors import UsageError

    assert check_hyper({"max_queries": "2000"}) == {"max_queries": 2000}
    with pytest.raises(UsageError, match="max_queries"):
        check_hyper({"max_queries": "0"})
