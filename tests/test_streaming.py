"""Paper scale in bounded memory: every pool-sized stage runs in chunks, and a chunk of a few
rows gives the whole-array result (bit-identical on the CPU where the arithmetic is the same,
else within 1e-6)."""

import numpy as np
import pytest
import torch

from freebind.algebra import plan
from freebind.graph import fuse, fuse_blocks, fuse_into, fusion_chunk_rows
from freebind.projector import ProjectorGroup
from freebind.router import BondRouter, router_key
from freebind.store import EmbeddingStore


def register_spaces():
    from freebind import spaces
    from freebind.spaces.base import SpaceInfo

    for name, mods, dim in (("stream:base", ("audio", "image", "text"), 6),
                            ("stream:vl", ("image", "text"), 5),
                            ("stream:at", ("audio", "text"), 4),
                            ("stream:at2", ("audio", "text"), 3)):
        spaces.register(SpaceInfo(name, "toy", mods, dim), replace=True)


register_spaces()
EXPR = "stream:base + d(stream:vl) + c(stream:at, stream:at2, route=learned)"
DIMS = {"stream:base": 6, "stream:vl": 5, "stream:at": 4, "stream:at2": 3}
MODS = {"stream:base": ("audio", "image", "text"), "stream:vl": ("image", "text"),
        "stream:at": ("audio", "text"), "stream:at2": ("audio", "text")}


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_bundle(seed=0, n=37):
    """The plan, trained-looking projectors (random weights, non-trivial BatchNorm
    statistics), a router with a non-zero last layer, and n items per modality."""
    p = plan(EXPR)
    gen = torch.Generator().manual_seed(seed)
    projectors = {}
    for job in p.jobs:
        g = ProjectorGroup(len(job.data_modes), job.source_dim, job.target_dim, hidden=16,
                           generator=gen)
        with torch.no_grad():
            for bn in (g.bn1, g.bn2):
                bn.running_mean.uniform_(-0.2, 0.2, generator=gen)
                bn.running_var.uniform_(0.5, 2.0, generator=gen)
        projectors[job.id] = g.eval()
    for bond in p.bonds():
        if bond.get("route") == "learned":
            router = BondRouter(bond, hidden=8, generator=gen)
            with torch.no_grad():
                for net in router.nets.values():
                    net.w2.uniform_(-1.0, 1.0, generator=gen)
                    net.b2.uniform_(-0.5, 0.5, generator=gen)
            projectors[router_key(bond["id"])] = router.eval()
    rng = np.random.default_rng(seed)
    emb = {ref: {m: unit(rng, n, DIMS[ref]) for m in MODS[ref]} for ref in DIMS}
    return p, projectors, emb


@pytest.mark.parametrize("chunk", [1, 3, 10])
def test_chunked_fusion_equals_whole_array(chunk):
    p, projectors, emb = random_bundle()
    whole = fuse(p.graph, projectors, emb, chunk_rows=10**9)
    assert set(whole) == {"audio", "image", "text"}
    parts = fuse(p.graph, projectors, emb, chunk_rows=chunk)
    for m in whole:
        assert parts[m].shape == whole[m].shape and whole[m].shape[0] == 37
        torch.testing.assert_close(parts[m], whole[m], rtol=0, atol=1e-6)
    # factors and switches stream the same way
    for factors in (["a=0.3"], ["b2=off"], ["b1.t=0"], ["a=1"]):
        w = fuse(p.graph, projectors, emb, factors=factors, chunk_rows=10**9)
        c = fuse(p.graph, projectors, emb, factors=factors, chunk_rows=chunk)
        for m in w:
            torch.testing.assert_close(c[m], w[m], rtol=0, atol=1e-6)


def test_fuse_blocks_hold_one_chunk_and_fuse_into_writes_every_row(tmp_path):
    p, projectors, emb = random_bundle(n=23)
    whole = fuse(p.graph, projectors, emb, chunk_rows=10**9)
    seen = {}
    for m, start, block in fuse_blocks(p.graph, projectors, emb, chunk_rows=4):
        assert block.shape[0] <= 4
        seen.setdefault(m, []).append(start)
    assert all(starts == list(range(0, 23, 4)) for starts in seen.values())
    out = {m: np.lib.format.open_memmap(tmp_path / f"{m}.npy", mode="w+", dtype=np.float32,
                                        shape=tuple(whole[m].shape)) for m in whole}

    def write(m, a, rows):
        out[m][a:a + len(rows)] = rows

    counts = fuse_into(p.graph, projectors, emb, write, chunk_rows=5)
    assert counts == {m: 23 for m in whole}
    for m in whole:
        np.testing.assert_allclose(np.load(tmp_path / f"{m}.npy"), whole[m].numpy(), rtol=0,
                                   atol=1e-6)


def test_fusion_reads_memory_mapped_store_views(tmp_path):
    """Store views (memory-mapped shards) are read chunk by chunk, never loaded whole."""
    from types import SimpleNamespace

    p, projectors, emb = random_bundle(n=29)
    store = EmbeddingStore(tmp_path, shard_size=7)
    views = {}
    keys = [f"{i:064x}" for i in range(29)]
    for ref, mods in emb.items():
        space = SimpleNamespace(name=ref, fingerprint=ref, dim=DIMS[ref], modalities=MODS[ref])
        for m, x in mods.items():
            store.write(space, m, keys, x)
            views.setdefault(ref, {})[m] = store.view(space, m, keys)
    whole = fuse(p.graph, projectors, emb, chunk_rows=10**9)
    streamed = fuse(p.graph, projectors, views, chunk_rows=6)
    for m in whole:
        torch.testing.assert_close(streamed[m], whole[m], rtol=0, atol=1e-6)


def test_default_chunk_follows_the_memory_budget():
    g = ProjectorGroup(7, 1024, 768, hidden=2048)
    rows = fusion_chunk_rows({"j1": g}, budget_bytes=256 << 20)
    per_row = 4 * 7 * (3 * 2048 + 2 * 768)
    assert rows == (256 << 20) // per_row
    assert 1000 < rows < 1500          # the paper's groups: ~1,400 rows per 256 MiB
    assert fusion_chunk_rows({"j1": g}, budget_bytes=1) == 1


def test_fused_space_encode_and_fuse_take_chunk_rows():
    from freebind.fused import FusedSpace

    p, projectors, emb = random_bundle(n=11)
    fused = FusedSpace(p, projectors)
    whole = fused.fuse(emb)
    for m, x in fused.fuse(emb, chunk_rows=2).items():
        torch.testing.assert_close(x, whole[m], rtol=0, atol=1e-6)
