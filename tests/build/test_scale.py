"""Scale paths on the CPU: blocked/streamed retrieval, reduced-precision similarity with
exact re-scoring, the float16 memory-mapped store, training on a device argument, and the
benchmark scripts' dry runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from freebind.build import pseudo_tuples as pseudo
from freebind.algebra import data_modes
from freebind.util.errors import FreebindError
from freebind.build.pseudo_tuples import PseudoTupleError, topk_retrieve
from freebind.data.store import EmbeddingStore, PoolView, text_key
from freebind.build.projector_training import train_group

ROOT = Path(__file__).resolve().parents[2]


def unit(x):
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def rand_unit(rng, n, d):
    return unit(rng.normal(size=(n, d)))


def space(name, dim, mods=("audio", "image", "text")):
    return SimpleNamespace(name=name, fingerprint=f"{name}-v1", dim=dim, modalities=mods)


def keys_of(tag, n):
    return [text_key(f"{tag}-{i}") for i in range(n)]


def stored(tmp_path, arrays: dict, dtype="float32", shard_size=97):
    """Write {(space_name, modality): array} into a store; return views of the same shape."""
    store = EmbeddingStore(tmp_path / f"store-{dtype}", shard_size=shard_size, dtype=dtype)
    views = {}
    for (name, m), arr in arrays.items():
        sp = space(name, arr.shape[1])
        keys = keys_of(m, len(arr))
        store.write(sp, m, keys, arr)
        views.setdefault(name, {})[m] = store.view(sp, m, keys)
    return store, views


# ------------------------------------------------------------------------------ store

def test_fp16_store_is_within_1e3_and_half_the_bytes(tmp_path):
    rng = np.random.default_rng(0)
    x = rand_unit(rng, 500, 256)
    _, v32 = stored(tmp_path, {("S", "text"): x}, "float32")
    _, v16 = stored(tmp_path, {("S", "text"): x}, "float16")
    a32, a16 = np.asarray(v32["S"]["text"]), np.asarray(v16["S"]["text"])
    assert a32.dtype == a16.dtype == np.float32
    np.testing.assert_array_equal(a32, x)               # float32: exact
    err = np.abs(a16 - x).max()
    assert 0 < err < 1e-3                                # float16: rounded, within 1e-3
    assert v16["S"]["text"].stored_dtype == np.float16
    size = lambda d: sum(p.stat().st_size for p in (tmp_path / d).rglob("*.npz"))  # noqa
    assert size("store-float16") < 0.6 * size("store-float32")


def test_pool_view_gathers_blocks_subsets_and_repeats(tmp_path):
    rng = np.random.default_rng(1)
    x = rand_unit(rng, 300, 16)
    _, views = stored(tmp_path, {("S", "image"): x}, shard_size=64)
    view = views["S"]["image"]
    assert isinstance(view, PoolView) and view.shape == (300, 16) and len(view.shards) == 5
    rows = np.array([299, 0, 5, 5, 130, 64, 63])
    np.testing.assert_array_equal(view[rows], x[rows])
    np.testing.assert_array_equal(view[10:200], x[10:200])
    sub = view.subset(np.arange(50, 250, 3))
    np.testing.assert_array_equal(np.asarray(sub), x[50:250:3])
    np.testing.assert_array_equal(np.concatenate([b for _, b in view.blocks(77)]), x)


def test_store_write_view_and_lazy_embed(tmp_path):
    class Fake:
        name, fingerprint, dim, modalities = "fake", "fake-v1", 8, ("text",)

        def encode(self, modality, items, batch_size=64):
            return unit([[len(t) + j for j in range(8)] for t in items])

    store = EmbeddingStore(tmp_path, shard_size=3, dtype="fp16")
    texts = [f"text {i}" * (i + 1) for i in range(10)]
    full = store.embed(Fake(), "text", texts, progress=False)
    lazy = store.embed(Fake(), "text", texts, progress=False, lazy=True)
    assert isinstance(lazy, PoolView)
    np.testing.assert_array_equal(np.asarray(lazy), full)
    np.testing.assert_allclose(full, Fake().encode("text", texts), atol=1e-3)
    # writing the same keys again writes nothing; a bad key or shape is refused
    assert store.write(Fake(), "text", [text_key(t) for t in texts], full) == 0
    with pytest.raises(FreebindError, match="64 lowercase hex"):
        store.write(Fake(), "text", ["nothex"], full[:1])
    with pytest.raises(FreebindError, match="shape"):
        store.write(Fake(), "text", [text_key("x")], full[:1, :4])
    with pytest.raises(FreebindError, match="no cached embedding"):
        store.view(Fake(), "text", [text_key("never")])
    with pytest.raises(FreebindError, match="expected fp32 or fp16"):
        EmbeddingStore(tmp_path, dtype="int8")


# ------------------------------------------------------------------------------ retrieval

@pytest.mark.parametrize("sim", ["fp32", "tf32", "bf16", "fp16"])
def test_reduced_precision_with_rescoring_equals_fp32(sim):
    rng = np.random.default_rng(2)
    q, p = rand_unit(rng, 300, 64), rand_unit(rng, 5000, 64)
    want_i, want_w = topk_retrieve(q, p, 8, 0.05)                 # the plain fp32 path
    idx, w = topk_retrieve(q, p, 8, 0.05, device="cpu", sim=sim)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(w, want_w, rtol=1e-4, atol=1e-5)


def test_rescoring_orders_what_bf16_cannot_tell_apart():
    # 12 items whose cosines with the query differ by 4e-4, far below bf16's rounding step
    # (2^-8 near 0.9), among 500 unrelated ones
    rng = np.random.default_rng(3)
    d = 32
    cos = 0.9 + 4e-4 * np.arange(12)
    near = np.zeros((12, d), dtype=np.float32)
    near[:, 0], near[:, 1] = cos, np.sqrt(1 - cos ** 2)
    far = rand_unit(rng, 500, d) * 0.5
    far[:, 0] = -np.abs(far[:, 0])
    pool = unit(np.concatenate([far, near]))
    query = np.zeros((1, d), dtype=np.float32)
    query[0, 0] = 1.0
    truth = 500 + np.arange(11, 6, -1)                             # the 5 highest cosines
    bf = torch.from_numpy(query).bfloat16() @ torch.from_numpy(pool).bfloat16().t()
    top_bf = torch.topk(bf.float(), 5).values[0]
    assert len(set(top_bf.tolist())) < 5                           # bf16 sees ties
    idx, w = topk_retrieve(query, pool, 5, 0.05, device="cpu", sim="bf16")
    np.testing.assert_array_equal(idx[0], truth)
    np.testing.assert_array_equal(topk_retrieve(query, pool, 5, 0.05)[0][0], truth)
    assert np.all(np.diff(w[0]) < 0)                               # strictly ordered weights


@pytest.mark.parametrize("n", [100, 4096, 5000, 9999])
def test_two_stage_topk_equals_topk(n):
    g = torch.Generator().manual_seed(n)
    sims = torch.randn(37, n, generator=g)
    sims[3, 7:70] = 9.0 + torch.arange(63) * 1e-3   # the top values crowded in one group
    v, i = pseudo._block_topk(sims, 12)
    want_v, want_i = torch.topk(sims, 12, dim=1)
    order = torch.argsort(v, dim=1, descending=True)
    assert torch.equal(torch.gather(i, 1, order), want_i)
    assert torch.equal(torch.gather(v, 1, order), want_v)
    assert torch.equal(torch.gather(sims, 1, i), v)


def test_streamed_blocks_equal_in_memory(tmp_path):
    rng = np.random.default_rng(4)
    q, p = rand_unit(rng, 700, 40), rand_unit(rng, 3000, 40)
    want_i, want_w = topk_retrieve(q, p, 6, 0.1)
    _, views = stored(tmp_path, {("S", "text"): p, ("S", "image"): q})
    budget = 200_000      # far below the pool (480 KB): many blocks and query super-chunks
    for queries in (q, views["S"]["image"]):
        idx, w = topk_retrieve(queries, views["S"]["text"], 6, 0.1, budget_bytes=budget)
        np.testing.assert_array_equal(idx, want_i)
        np.testing.assert_allclose(w, want_w, rtol=1e-5, atol=1e-6)
    idx, w = topk_retrieve(q, p, 6, 0.1, budget_bytes=budget, sim="bf16")
    np.testing.assert_array_equal(idx, want_i)


def test_cpu_blocks_bound_the_pool_copy(monkeypatch):
    """On the CPU a pool above CPU_BLOCK_BYTES is read in blocks of that size, not held
    whole within the budget: the same neighbours and weights (blocks of 150 rows)."""
    rng = np.random.default_rng(7)
    q, p = rand_unit(rng, 300, 24), rand_unit(rng, 2000, 24)
    cut = pseudo._cut(300, p, 6, torch.device("cpu"), "fp32", 1 << 30, None, None)
    assert cut.resident and cut.block == 2000
    want_i, want_w = topk_retrieve(q, p, 6, 0.1, budget_bytes=1 << 30)
    monkeypatch.setattr(pseudo, "CPU_BLOCK_BYTES", 24 * 8 * 150)   # 8 bytes a cell
    cut = pseudo._cut(300, p, 6, torch.device("cpu"), "fp32", 1 << 30, None, None)
    assert not cut.resident and cut.block == 150
    idx, w = topk_retrieve(q, p, 6, 0.1, budget_bytes=1 << 30)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(w, want_w, rtol=1e-6, atol=1e-7)


def test_pseudo_build_streamed_from_store_equals_in_memory(tmp_path):
    rng = np.random.default_rng(5)
    mem = {"E": {"audio": rand_unit(rng, 400, 24), "text": rand_unit(rng, 350, 24)},
           "B": {"image": rand_unit(rng, 300, 32), "text": rand_unit(rng, 350, 32)}}
    _, views = stored(tmp_path, {(k, m): a for k, mods in mem.items() for m, a in mods.items()})
    want = pseudo.build(mem, expert="E", base="B", topk=4, tau=0.05, max_queries=120)
    assert len(want.fills[("audio", "image")].route.hops) == 2     # a chain is covered
    got = pseudo.build(views, expert="E", base="B", topk=4, tau=0.05, max_queries=120,
                       budget_bytes=60_000)
    for key, fill in want.fills.items():
        np.testing.assert_array_equal(got.fills[key].index, fill.index)
        np.testing.assert_allclose(got.fills[key].weight, fill.weight, rtol=1e-5, atol=1e-6)
    g_mem = want.gather(mem["B"], "audio", rows=[0, 5, 7])
    g_view = got.gather(views["B"], "audio", rows=[0, 5, 7])
    for m in g_mem:
        np.testing.assert_allclose(g_view[m].numpy(), g_mem[m].numpy(), atol=1e-6)
    with pytest.raises(PseudoTupleError, match="sim 'int4'"):
        pseudo.build(mem, expert="E", base="B", sim="int4")


# ------------------------------------------------------------------------------ training

def _tuples_and_pools(seed=6):
    rng = np.random.default_rng(seed)
    pools = {"E": {"image": rand_unit(rng, 200, 16), "text": rand_unit(rng, 220, 16)},
             "B": {"image": rand_unit(rng, 200, 24), "text": rand_unit(rng, 220, 24)}}
    tuples = pseudo.build(pools, expert="E", base="B", topk=3, tau=0.05)
    return tuples, pools


HYPER = {"hidden": 32, "epochs": 2, "batch": 64, "patience": 5, "seed": 0}


def _weights(result):
    return {k: v.numpy().tobytes() for k, v in result.group.tensors("g").items()}


def test_training_device_cpu_is_bit_identical_and_views_stream_identically(tmp_path):
    tuples, pools = _tuples_and_pools()
    modes = data_modes(tuples.modalities)
    base = train_group(tuples, pools["B"], pools["E"], modes, HYPER)
    on_cpu = train_group(tuples, pools["B"], pools["E"], modes, HYPER, device="cpu")
    assert _weights(base) == _weights(on_cpu)
    assert on_cpu.batch == 64 and on_cpu.steps >= 1
    # gathered batch by batch from memory-mapped views == gathered batch by batch in memory
    _, views = stored(tmp_path, {(k, m): a for k, mods in pools.items() for m, a in mods.items()})
    lazy_mem = train_group(tuples, pools["B"], pools["E"], modes, HYPER, materialise_bytes=0)
    lazy_view = train_group(tuples, views["B"], views["E"], modes, HYPER, materialise_bytes=0)
    assert _weights(lazy_mem) == _weights(lazy_view)
    np.testing.assert_allclose(lazy_mem.val_loss, base.val_loss, rtol=1e-4)


def test_bf16_autocast_trains_close_to_fp32():
    tuples, pools = _tuples_and_pools()
    modes = data_modes(tuples.modalities)
    fp32 = train_group(tuples, pools["B"], pools["E"], modes, HYPER)
    bf16 = train_group(tuples, pools["B"], pools["E"], modes, {**HYPER, "amp": "bf16"})
    assert all(np.isfinite(bf16.val_loss))
    np.testing.assert_allclose(bf16.val_loss, fp32.val_loss, rtol=0.05)
    assert bf16.group.w1.dtype == torch.float32
    with pytest.raises(FreebindError, match="amp 'int8'"):
        train_group(tuples, pools["B"], pools["E"], modes, {**HYPER, "amp": "int8"})


# ------------------------------------------------------------------------------ builds

def test_build_device_cpu_is_byte_identical_and_fp16_store_builds(tmp_path, monkeypatch):
    from freebind.build.orchestrator import build
    from freebind.data.store import npz_member

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fast = {"hidden": 32, "batch": 64, "epochs": 2, "patience": 2, "threads": 1}
    kw = dict(mini_pool_size=150, progress=False)
    expr = "mini:bind + c(mini:clap)"
    a = build(expr, output=tmp_path / "a.safetensors", cache_dir=tmp_path / "c1",
              hyper=fast, **kw)
    build(expr, output=tmp_path / "b.safetensors", cache_dir=tmp_path / "c2", hyper=fast,
          space_options={"device": "cpu"}, **kw)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    c = build(expr, output=tmp_path / "c.safetensors", cache_dir=tmp_path / "c3",
              hyper={**fast, "sim": "bf16"}, store_dtype="fp16", **kw)
    shards = list((tmp_path / "c3").glob("mini_bind-*/audio/shard-*.npz"))
    assert shards and all(npz_member(s)[2] == np.float16 for s in shards)
    ja, jc = a.build_report.jobs[0], c.build_report.jobs[0]
    assert jc.tuples == ja.tuples and np.isfinite(jc.val_loss)
    assert abs(jc.val_loss - ja.val_loss) < 0.05 * ja.val_loss
    assert c.metadata["training"]["j1"]["hyper"]["sim"] == "bf16"
    from freebind.util.errors import UsageError

    with pytest.raises(UsageError, match="hyper sim='int4'"):
        build(expr, cache_dir=tmp_path / "c1", hyper={"sim": "int4"}, save=False, **kw)


# ------------------------------------------------------------------------------ scripts

def _run(cmd, timeout=300, **extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_bench_scale_paper_layout_small_json(tmp_path):
    out = _run([sys.executable, "benchmarks/bench_scale.py", "--items", "600", "--queries",
                "100", "--hidden", "64", "--batch", "32", "--budget-mb", "1", "--json",
                "--root", str(tmp_path / "store")])
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    stages = {r["stage"]: r for r in data["stages"]}
    assert set(stages) == {"write pools", "pseudo tuples", "train 1 epoch"}
    assert stages["pseudo tuples"]["tuples"] == 300 and stages["pseudo tuples"]["hops"] == 6
    assert stages["write pools"]["store_dtype"] == "fp16"
    assert data["pseudo_floor_ratio"] > 0 and data["train_floor_ratio"] > 0
    assert list((tmp_path / "store").glob("bench-IB-*/audio/shard-*.npz"))


@pytest.mark.slow
def test_device_script_dry_run(tmp_path):
    out = _run(["bash", "benchmarks/device.sh", "--dry-run"], timeout=900,
               OUT_DIR=str(tmp_path / "out"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "pseudo tuples" in out.stdout and "train 1 epoch" in out.stdout
    for name in ("retrieve", "train"):
        assert (tmp_path / "out" / f"{name}.rc").read_text().strip() == "0"
        assert json.loads((tmp_path / "out" / f"{name}.json").read_text())["stages"]
