"""Paper scale in bounded memory: every pool-sized stage runs in chunks, and a chunk of a few
rows gives the whole-array result (bit-identical on the CPU where the arithmetic is the same,
else within 1e-6)."""

import hashlib

import numpy as np
import pytest
import torch

from freebind.algebra import plan
from freebind.fusion.graph import fuse, fuse_blocks, fuse_into, fusion_chunk_rows
from freebind.fusion.projector import ProjectorGroup
from freebind.fusion.router import BondRouter, router_key
from freebind.data.store import EmbeddingStore


def register_spaces():
    from freebind import spaces
    from freebind.spaces.protocol import SpaceInfo

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
    # the group's activations while it runs, then its input, mixture, projection and sum
    per_row = 4 * (7 * (3 * 2048 + 2 * 768) + 1024 + 3 * 768)
    assert rows == (256 << 20) // per_row == 1175   # the paper's groups: ~1,200 rows
    assert fusion_chunk_rows({"j1": g}, budget_bytes=1) == 1


def test_chunk_counts_every_group_and_router_of_a_fusion():
    """Four experts' groups and their bond's router run for the same chunk: each group's
    input and outputs stay held, the router's input is the base and four projections; the
    largest group's activations are counted once (they are freed between groups)."""
    from freebind.fusion.router import BondRouter

    groups = {f"j{i}": ProjectorGroup(7, d, 1536, hidden=256, init=False)
              for i, d in enumerate((512, 1024, 1024, 1152))}
    bond = {"id": "b1", "dim_in": 1536, "shared": ["text"],
            "experts": [{"modalities": ["text"]}] * 4, "weights": [1.0] * 4,
            "factors": {"text": 0.5}}
    router = BondRouter(bond, hidden=64, init=False)
    largest = 7 * (3 * 256 + 2 * 1536)
    held = sum(d + 3 * 1536 for d in (512, 1024, 1024, 1152))
    assert fusion_chunk_rows(groups, budget_bytes=256 << 20) == \
        (256 << 20) // (4 * (largest + held)) == 1368
    # the router: the base and 4 projections concatenated, and its hidden layer
    with_router = (256 << 20) // (4 * (largest + held + 1536 * 5 + 2 * 64))
    assert fusion_chunk_rows({**groups, "b1.router": router},
                                 budget_bytes=256 << 20) == with_router == 1180


def test_fused_space_encode_and_fuse_take_chunk_rows():
    from freebind.fusion.fused import FusedSpace

    p, projectors, emb = random_bundle(n=11)
    fused = FusedSpace(p, projectors)
    whole = fused.fuse(emb)
    for m, x in fused.fuse(emb, chunk_rows=2).items():
        torch.testing.assert_close(x, whole[m], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------ the build

FAST = {"hidden": 32, "batch": 64, "epochs": 2, "patience": 2, "threads": 1}
SEQ = "mini:bind + d(mini:vl) + c(mini:clap, mini:clap2, route=learned)"


def _build(tmp_path, name, **kw):
    from freebind.build.orchestrator import build

    opts = dict(mini_pool_size=120, progress=False, hyper=FAST,
                cache_dir=tmp_path / kw.pop("cache", "cache"))
    opts.update(kw)
    return build(SEQ, output=tmp_path / f"{name}.safetensors", **opts)


def test_streamed_pools_build_the_same_bundle_bytes(tmp_path, monkeypatch):
    """Every pool memory-mapped (nothing resident): the bundle of pools in memory, to the
    byte (routers included: a bundle holds no times)."""
    from freebind.build import leaf_embeddings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _build(tmp_path, "resident", cache="c1")
    monkeypatch.setattr(leaf_embeddings, "RESIDENT_POOL_BYTES", 0)
    _build(tmp_path, "mapped", cache="c2")
    assert (tmp_path / "resident.safetensors").read_bytes() == \
        (tmp_path / "mapped.safetensors").read_bytes()


def test_resident_rows_share_one_budget_and_build_the_same_bytes(tmp_path, monkeypatch):
    """The rows a build reads into memory (every leaf pool and the space built so far) come
    out of one budget for the whole build, not one per (space, modality): with a budget of
    a few views, the first views that fit are arrays, together within it, the rest stay
    memory-mapped, and the bundle equals the all-in-memory one to the byte."""
    from freebind.build import leaf_embeddings
    from freebind.data.store import PoolView

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _build(tmp_path, "resident", cache="c1")
    budget = 40_000
    monkeypatch.setattr(leaf_embeddings, "RESIDENT_POOL_BYTES", budget)
    got, orig = [], leaf_embeddings.ResidentBudget.__call__

    def spy(self, view):
        out = orig(self, view)
        assert isinstance(out, (np.ndarray, PoolView))
        got.append((id(self), isinstance(out, np.ndarray), len(view) * view.dim * 4))
        return out

    monkeypatch.setattr(leaf_embeddings.ResidentBudget, "__call__", spy)
    _build(tmp_path, "budget", cache="c2")
    assert len({b for b, _, _ in got}) == 1          # one budget for the whole build
    held = [size for _, array, size in got if array]
    assert held and len(held) < len(got) and sum(held) <= budget
    assert (tmp_path / "resident.safetensors").read_bytes() == \
        (tmp_path / "budget.safetensors").read_bytes()


def test_space_so_far_in_tiny_chunks_equals_whole_array(tmp_path, monkeypatch):
    """The space built so far fused 7 rows at a time: its stored rows equal whole-array
    fusion within 1e-6 (matmuls of other shapes round differently in the last bits), and
    the jobs trained on either reach the same held-out losses."""
    from freebind.fusion import graph
    from freebind.fusion.fused import load

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    whole = _build(tmp_path, "whole", cache="c1", chunk_rows=10**9)
    calls = []
    orig = graph.fuse_blocks

    def spy(*a, **k):
        for m, start, block in orig(*a, **k):
            calls.append(block.shape[0])
            yield m, start, block

    monkeypatch.setattr(graph, "fuse_blocks", spy)
    _build(tmp_path, "tiny", cache="c2", chunk_rows=7)
    monkeypatch.setattr(graph, "fuse_blocks", orig)
    assert calls and max(calls) <= 7 and sum(calls) >= 3 * 120
    for folder in ("c1", "c2"):
        subs = [p for p in (tmp_path / folder).iterdir() if p.name.startswith("mini_bind_d")]
        assert len(subs) == 1
    rows = {}
    for folder in ("c1", "c2"):
        sub = next(p for p in (tmp_path / folder).iterdir() if p.name.startswith("mini_bind_d"))
        rows[folder] = {m.name: np.concatenate([np.load(s)["emb"] for s in
                                                sorted(m.glob("shard-*.npz"))])
                        for m in sub.iterdir() if m.is_dir()}
    assert set(rows["c1"]) == set(rows["c2"]) == {"audio", "image", "text"}
    for m in rows["c1"]:
        assert rows["c1"][m].shape == rows["c2"][m].shape
        np.testing.assert_allclose(np.sort(rows["c2"][m], axis=0),
                                   np.sort(rows["c1"][m], axis=0), rtol=0, atol=1e-6)
    # training on rows that differ in the last bits lands on the same losses
    tiny = load(tmp_path / "tiny.safetensors")
    for job, summary in whole.metadata["training"].items():
        other = tiny.metadata["training"][job]
        assert other["final_val_loss"] == pytest.approx(summary["final_val_loss"], rel=1e-2)


def test_space_so_far_lives_in_the_store_and_a_rebuild_reuses_it(tmp_path, monkeypatch):
    from freebind.build import leaf_embeddings, orchestrator
    from freebind.data.store import PoolView

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(leaf_embeddings, "RESIDENT_POOL_BYTES", 0)
    seen = []
    orig = orchestrator.train_job

    def spy(job, source, target, *a, **k):
        seen.append((job.id, {m: type(v) for m, v in {**source, **target}.items()}))
        return orig(job, source, target, *a, **k)

    monkeypatch.setattr(orchestrator, "train_job", spy)
    first = _build(tmp_path, "a", chunk_rows=16)
    # the parallel bond's two jobs train on the space built so far, read memory-mapped
    assert [j for j, _ in seen] == ["j1", "j2", "j3"]
    assert all(t is PoolView for _, types in seen for t in types.values())
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir()
                     if (p / "space.json").is_file())
    sub = [f for f in folders if f.startswith("mini_bind_d_mini_vl")]
    assert len(sub) == 1, folders            # one entry for "mini:bind + d(mini:vl)"
    shards = list((tmp_path / "cache" / sub[0]).glob("*/shard-*.npz"))
    assert shards
    stamp = {p: p.stat().st_mtime_ns for p in shards}
    from freebind.fusion import graph

    monkeypatch.setattr(graph, "fuse_blocks", lambda *a, **k: pytest.fail("recomputed"))
    again = _build(tmp_path, "b", chunk_rows=16)
    assert all(j.cached for j in again.build_report.jobs)
    assert {p: p.stat().st_mtime_ns for p in shards} == stamp
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert first.routers


def test_router_trains_on_its_jobs_own_tuples(tmp_path, monkeypatch):
    """The router reads the tuples its bond's jobs trained on (built once, on the build's
    device at its similarity precision), not tuples rebuilt another way."""
    from freebind.build import jobs

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    made = []
    orig = jobs.make_tuples

    def spy(job, source, target, h, device=None, progress=False):
        made.append((job.id, h.get("sim", "fp32")))
        return orig(job, source, target, h, device, progress)

    monkeypatch.setattr(jobs, "make_tuples", spy)
    _build(tmp_path, "r", hyper={**FAST, "sim": "bf16"})
    assert made == [("j1", "bf16"), ("j2", "bf16"), ("j3", "bf16")]


def test_router_batches_equal_the_whole_tuple_set():
    """TupleBatches computes any batch of tuples as the whole-set computation would."""
    from freebind.fusion.graph import find_node
    from freebind.build.pseudo_tuples import build as build_tuples
    from freebind.build.router_training import tuple_data

    p, projectors, emb = random_bundle(n=40)
    bond = next(b for b in p.bonds() if b.get("route") == "learned")
    base = fuse(find_node(p.graph, p.job(bond["jobs"][0]).target), projectors, emb)
    experts = [emb["stream:at"], emb["stream:at2"]]
    tuples = [build_tuples({p.job(j).source: experts[i], p.job(j).target: base},
                           expert=p.job(j).source, base=p.job(j).target, topk=3)
              for i, j in enumerate(bond["jobs"])]
    data = tuple_data(bond, tuples, base, experts, [projectors[j] for j in bond["jobs"]])
    everything = data.rows(np.arange(data.n))
    pick = np.array([0, 5, 41, 42, 77, data.n - 1])
    part = data.rows(pick)
    for m in everything.u:
        torch.testing.assert_close(part.u[m], everything.u[m][pick], rtol=0, atol=1e-6)
        for a, b in zip(part.mixtures[m], everything.mixtures[m]):
            torch.testing.assert_close(a, b[pick], rtol=0, atol=1e-6)
    for m in everything.fixed:
        torch.testing.assert_close(part.fixed[m], everything.fixed[m][pick], rtol=0,
                                   atol=1e-6)
    assert list(part.query) == list(data.query[pick])


# ------------------------------------------------------------------------------ search

def test_index_spills_to_disk_and_ranks_as_in_memory(tmp_path, monkeypatch):
    """An index whose components and joined leaves live in memory-mapped temporary files,
    computed in chunks of 3 rows, added in several parts and from store views, ranks exactly
    as the in-memory index; a saved index reads its large files memory-mapped."""
    from types import SimpleNamespace

    from freebind.search import Index
    from freebind.search import index as index_mod
    from index_checks import random_leaves
    from tests.search.test_search_index import random_fused

    fs = random_fused()
    n = 90
    leaves = random_leaves(fs, n)
    mem = Index(fs)
    for m in ("audio", "text"):
        mem.add_leaves(m, [f"{m}{i}" for i in range(n)],
                       {r: leaves[r][m] for r in leaves if m in leaves[r]})
    # the same rows from memory-mapped store views, in three parts
    store = EmbeddingStore(tmp_path / "store", shard_size=16)
    views = {}
    for r, mods in leaves.items():
        meta = fs.plan.spaces[r]
        space = SimpleNamespace(name=r, fingerprint=r, dim=meta["dim"],
                                modalities=tuple(meta["modalities"]))
        for m, x in mods.items():
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
            keys = [hashlib.sha256(f"{r}/{m}/{i}".encode()).hexdigest() for i in range(n)]
            store.write(space, m, keys, x)
            views.setdefault(r, {})[m] = store.view(space, m, keys)
    monkeypatch.setattr(index_mod, "SPILL_BYTES", 0)
    monkeypatch.setattr("freebind.fusion.graph.fusion_chunk_rows", lambda *a, **k: 3)
    fs.save(tmp_path / "b.safetensors")
    spilled = Index(fs)
    for m in ("audio", "text"):
        for a, b in ((0, 30), (30, 31), (31, n)):
            spilled.add_leaves(m, [f"{m}{i}" for i in range(a, b)],
                               {r: views[r][m].subset(np.arange(a, b)) for r in views
                                if m in views[r]})
    block = spilled.blocks["audio"]
    assert all(isinstance(v, type(views["mini:bind"]["audio"])) for v in block.leaves.values())
    rng = np.random.default_rng(3)
    q = rng.normal(size=(4, fs.dim)).astype(np.float32)
    for factors in ([], ["a=0.3"], ["b2=off"]):
        for m in ("audio", "text"):
            got = spilled.search_many([None] * 4, modality=m, k=7, vectors=q, factors=factors)
            want = mem.search_many([None] * 4, modality=m, k=7, vectors=q, factors=factors)
            assert [[h.path for h in hs] for hs in got] == [[h.path for h in hs] for hs in want]
            for hs, ws in zip(got, want):
                np.testing.assert_allclose([h.score for h in hs], [w.score for w in ws],
                                           atol=1e-5)
    _, _, a, _, _ = spilled._components(block, spilled.table)
    assert isinstance(a, np.memmap)
    spilled.save(tmp_path / "idx")
    again = Index.load(tmp_path / "idx")
    assert isinstance(again.blocks["audio"].leaves["mini:bind"], np.memmap)
    got = again.search_many([None] * 4, modality="audio", k=7, vectors=q)
    want = mem.search_many([None] * 4, modality="audio", k=7, vectors=q)
    assert [[h.path for h in hs] for hs in got] == [[h.path for h in hs] for hs in want]


def test_search_many_scores_queries_in_blocks(monkeypatch):
    """Many queries: blocks of 2 queries' scores at a time give the same hits (scores
    within 1e-6: a matmul of another shape rounds differently in the last bits)."""
    from freebind.search import Index
    from freebind.search import index as index_mod
    from index_checks import random_leaves
    from tests.search.test_search_index import random_fused

    fs = random_fused()
    leaves = random_leaves(fs, 50)
    idx = Index(fs)
    idx.add_leaves("audio", [f"a{i}" for i in range(50)],
                   {r: leaves[r]["audio"] for r in leaves if "audio" in leaves[r]})
    q = np.random.default_rng(0).normal(size=(9, fs.dim)).astype(np.float32)
    whole = idx.search_many([None] * 9, modality="audio", k=5, vectors=q)
    monkeypatch.setattr(index_mod, "SCORE_CELLS", 100)      # 2 queries x 50 rows a block
    blocks = idx.search_many([None] * 9, modality="audio", k=5, vectors=q)
    assert [[h.path for h in hs] for hs in blocks] == [[h.path for h in hs] for hs in whole]
    np.testing.assert_allclose([[h.score for h in hs] for hs in blocks],
                               [[h.score for h in hs] for hs in whole], rtol=0, atol=1e-6)


def test_indexing_embedded_texts_reads_the_texts_file_once(tmp_path, monkeypatch):
    """Text rows sourced FILE:LINE: the file is read once, not once per row (which made
    indexing 200,000 embedded texts quadratic)."""
    from freebind.data import media
    from freebind.run.partitions import embed
    from freebind.search import Index

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = tmp_path / "t.txt"
    texts.write_text("".join(f"a bell rings {i}\n" for i in range(40)))
    embed("mini:bind", texts=texts, output=tmp_path / "out", cache_dir=tmp_path / "c",
          progress=False)
    calls = []
    real = media.iter_texts
    monkeypatch.setattr(media, "iter_texts", lambda *a, **k: calls.append(a) or real(*a, **k))
    index = Index("mini:bind")
    assert index.add_embeddings(tmp_path / "out")["added"] == 40
    assert len(calls) == 1
    assert [it["text"] for it in index.items][:2] == ["a bell rings 0", "a bell rings 1"]
