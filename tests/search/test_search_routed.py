"""Exact search over bundles whose combination bond routes (``route=learned``): every item's own
σ and expert weights, and overrides that pin them, rank exactly as re-fusing the items does."""

import numpy as np
import pytest
import torch

from freebind.algebra import plan
from freebind.fusion.fused import FusedSpace
from freebind.fusion.graph import fuse
from freebind.fusion.router import BondRouter, router_key
from freebind.search import Index, parts
from index_checks import add_all, assert_ranks_as_refusing, random_leaves, random_projectors

PIVOT = "mini:bind + d(mini:vl) + c(mini:clap, mini:clap2, route=learned)"
EARLIER = "mini:bind + c(mini:clap, mini:clap2, route=learned) + d(mini:vl)"


def routed_fused(expr, seed=0):
    """Random projectors and a router with random (non-zero) last layers: σ and w differ
    from item to item."""
    p = plan(expr)
    g = torch.Generator().manual_seed(seed)
    proj = random_projectors(p, g)
    for bond in p.bonds():
        if bond.get("route") == "learned":
            router = BondRouter(bond, hidden=8, generator=g)
            with torch.no_grad():
                for prm in router.parameters():
                    prm.normal_(generator=g)
                    prm.mul_(2.0)
            proj[router_key(bond["id"])] = router.eval()
    return FusedSpace(p, proj)


@pytest.fixture(scope="module", params=[PIVOT, EARLIER], ids=["pivot", "earlier"])
def world(request):
    fs = routed_fused(request.param)
    n = 150
    leaves = random_leaves(fs, n)
    index = Index(fs)
    add_all(index, leaves, n)
    return fs, leaves, index, n


def routed_bond(fs):
    return next(b["id"] for b in fs.graph["bonds"] if b.get("route") == "learned")


def cases(fs):
    b = routed_bond(fs)
    d = next(x["id"] for x in fs.graph["bonds"] if x["kind"] == "d")
    return [[], [f"{b}.audio=0.3"], [f"{b}.audio=0.7", f"{b}.text=0.2"], [f"{b}=off"],
            ["route=off"], [f"{b}.route=off"], [f"{d}.image=0.2"], [f"{d}.text=0.9", "a=0.6"]]


def test_the_router_is_not_trivial(world):
    fs, leaves, index, n = world
    routed = fuse(fs.graph, fs.projectors, leaves, modalities=["audio"])["audio"]
    fixed = fuse(fs.graph, fs.projectors, leaves, factors=["route=off"],
                 modalities=["audio"])["audio"]
    assert (routed - fixed).norm(dim=1).max() > 0.05


@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("modality", ["audio", "text", "image"])
def test_scores_equal_refusing(world, case, modality):
    fs, leaves, index, n = world
    assert_ranks_as_refusing(fs, leaves, index, modality, cases(fs)[case], k=n, queries=3,
                             seed=case, top=10)


def test_text_query_through_the_router(world):
    """A query fused with the router against items fused with it: search(text) equals the
    dot products of the re-fused rows."""
    fs, leaves, index, n = world
    for preset in (None, "at-expertise"):
        table = index._table(preset=preset)
        q = index.embed_query("text", "a dog barks", preset=preset)
        ref = fuse(fs.graph, fs.projectors, leaves, table=table, modalities=["audio"])["audio"]
        expected = ref.numpy() @ q
        hits = index.search("a dog barks", modality="audio", k=10, preset=preset)
        assert [int(h.path[5:]) for h in hits] == \
            list(np.argsort(-expected, kind="stable")[:10])
        np.testing.assert_allclose([h.score for h in hits],
                                   np.sort(expected)[::-1][:10], atol=1e-5)


def test_routing_is_part_of_the_key():
    fs = routed_fused(PIVOT)
    from freebind.fusion.factors import resolve

    t = resolve(fs.graph)
    pv = parts.pivot(fs.graph, "audio", t)
    assert pv.bond == "b2" and pv.routed and parts.mix(pv, t, "audio") == 0.0
    pinned = resolve(fs.graph, ["b2.audio=0.5"])  # the same value as σ₀, but pinned
    assert not parts.pivot(fs.graph, "audio", pinned).routed
    assert parts.key(fs.graph, "audio", t) != parts.key(fs.graph, "audio", pinned)
    # image: b2's experts lack it, the router never applies
    assert not parts.pivot(fs.graph, "image", t).routed
    early = routed_fused(EARLIER)
    t = resolve(early.graph)
    assert parts.key(early.graph, "audio", t) != \
        parts.key(early.graph, "audio", resolve(early.graph, ["route=off"]))


def test_saved_routed_index_round_trips(tmp_path, world):
    fs, leaves, _, n = world
    bundle = fs.save(tmp_path / "r.safetensors")
    index = Index(str(bundle))
    index.add_leaves("audio", [f"audio{i}" for i in range(n)],
                     {r: leaves[r]["audio"] for r in leaves if "audio" in leaves[r]})
    index.save(tmp_path / "idx")
    again = Index.load(tmp_path / "idx")
    q = np.random.default_rng(9).normal(size=fs.dim).astype(np.float32)
    q /= np.linalg.norm(q)
    ref = fuse(fs.graph, fs.projectors, leaves, modalities=["audio"])["audio"].numpy() @ q
    hits = again.search(vector=q, modality="audio", k=10)
    assert [int(h.path[5:]) for h in hits] == list(np.argsort(-ref, kind="stable")[:10])
