"""Engines without Ray: the chunk layout, slices (``shard=(i, n)``, ``--shard I/N``) and
their options. The ray engine itself is tested on a local Ray in test_engine_ray.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from build_world import world_folder  # noqa: E402

from freebind.util.errors import UsageError  # noqa: E402
from freebind_cli.main import app  # noqa: E402

FAST = {"hidden": 16, "epochs": 2, "batch": 32, "patience": 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = world_folder(tmp_path_factory, n=40)
    (root / "audio" / "a9999.wav").write_bytes(b"RIFF not really a wav file")
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def store_of(cache: Path) -> dict[str, tuple]:
    """Store shards by name: (keys, embeddings bytes) — npz files carry zip timestamps,
    so their contents are compared, not their bytes."""
    out = {}
    for p in sorted(cache.rglob("shard-*.npz")):
        with np.load(p) as z:
            out[str(p.relative_to(cache))] = (z["keys"].tolist(), z["emb"].tobytes())
    return out


# ------------------------------------------------------------------------------ options

def test_parse_shard_and_engine_options():
    from freebind.run.engines import engine_options, in_slice, parse_shard

    assert parse_shard("1/3") == (1, 3) and parse_shard((0, 1)) == (0, 1)
    assert parse_shard(None) is None
    for bad in ("3/3", "-1/2", "a/b", "2", "1/0"):
        with pytest.raises(UsageError, match="shard"):
            parse_shard(bad)
    assert [k for k in range(7) if in_slice(k, (1, 3))] == [1, 4]
    assert all(in_slice(k, None) for k in range(3))
    with pytest.raises(UsageError, match="engine 'spark'"):
        engine_options("spark")
    with pytest.raises(UsageError, match="workers"):
        engine_options("local", workers=0)
    with pytest.raises(UsageError, match="resource"):
        engine_options("local", cpus_per_worker=0)
    with pytest.raises(UsageError, match="MODULE:FUNCTION"):
        engine_options("local", setup="nocolon")
    with pytest.raises(UsageError, match="needs engine='ray'"):
        engine_options("local", workers=2)
    with pytest.raises(UsageError, match="ray_address"):
        engine_options("local", ray_address="auto")
    opts = engine_options("local", gpus_per_worker=1, ray_address=None)
    assert (opts.workers, opts.gpus_per_worker, opts.ray_address) == (1, 1, None)


def test_missing_ray_is_named_before_any_work(world, tmp_path, monkeypatch):
    from freebind.run.engines import engine_options

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(UsageError, match=r"freebind\[ray\]"):
        engine_options("ray")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["embed", "test:base", str(world / "image"), "-o", str(out),
                                 "--engine", "ray", "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2 and "freebind[ray]" in r.output and "Traceback" not in r.output
    assert not out.exists()  # nothing done
    r = CliRunner().invoke(app, ["embed", "test:base", str(world / "image"), "-o", str(out),
                                 "--shard", "3/3"])
    assert r.exit_code == 2 and "0 <= I < N" in r.output


# ------------------------------------------------------------------------------ chunks

def test_chunks_are_the_store_layout_and_do_not_move(world, tmp_path):
    from freebind import spaces
    from freebind.run.engines.chunks import StoreCall, plan_chunks
    from freebind.data.store import EmbeddingStore

    space = spaces.get("test:base")
    images = sorted(str(p) for p in (world / "image").glob("*.png"))
    calls = [StoreCall("test:base", "image", images[:30]),
             StoreCall("test:base", "image", images[20:])]  # overlaps the first by 10
    store = EmbeddingStore(tmp_path / "c", shard_size=8)
    chunks, failures = plan_chunks(store, {"test:base": space}, calls)
    assert failures == []
    # 30 distinct, then the 10 the first call did not have: 4 + 2 chunks
    assert [c.size for c in chunks] == [8, 8, 8, 6, 8, 2]
    assert [c.index for c in chunks] == list(range(6))
    assert all(len(c.todo) == c.size for c in chunks)
    # the local code path (the store, call after call) writes exactly these shards
    for call in calls:
        store.embed(space, "image", call.items, batch_size=3, progress=False)
    written = sorted(sorted(k.decode() for k in np.load(p)["keys"])
                     for p in (tmp_path / "c").rglob("shard-*.npz"))
    assert written == sorted(sorted(c.keys) for c in chunks)
    # once cached, the same chunks are planned, all done
    again, _ = plan_chunks(store, {"test:base": space}, calls)
    assert [(c.index, c.size) for c in again] == [(c.index, c.size) for c in chunks]
    assert all(not c.todo for c in again)


# ------------------------------------------------------------------------------ slices

def embed_cli(*args):
    return CliRunner().invoke(app, ["embed", *map(str, args)])


def test_embed_slices_then_a_plain_run_equal_one_plain_run(world, tmp_path):
    common = ["test:base", world / "audio", world / "image", "--texts", world / "texts.txt",
              "--partition-size", 15, "--shard-size", 8, "--batch-size", 4, "-q"]
    r = embed_cli(*common, "-o", tmp_path / "one", "--cache-dir", tmp_path / "c1")
    assert r.exit_code == 0, r.output
    out, cache = tmp_path / "sliced", tmp_path / "c2"
    for i in range(3):
        r = embed_cli(*common, "-o", out, "--cache-dir", cache, "--shard", f"{i}/3", "--json")
        assert r.exit_code == 0, r.output
        rep = json.loads(r.stdout)
        assert rep["slice"] == [i, 3]
        # the slice writes its own partitions: k % 3 == i
        assert sorted(s["k"] for s in rep["shards"]) == [k for k in range(9) if k % 3 == i]
        assert rep["written"] == 3
        if i == 0:
            assert sorted(p.name for p in out.glob("*_emb/*.npy")) == [
                "audio_emb_0.npy", "image_emb_3.npy", "text_emb_6.npy"]
    # the corrupt wav sits in partition 2 (audio 30..40), written by slice 2
    r = embed_cli(*common, "-o", out, "--cache-dir", cache, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["written"] == 0 and rep["reused"] == 9 and rep["slice"] is None
    assert [s["path"] for s in rep["skipped"]] == [str(world / "audio" / "a9999.wav")]
    got, want = files_of(out), files_of(tmp_path / "one")
    assert got.keys() == want.keys()
    assert {k: v for k, v in got.items() if k != "embed.json"} == \
        {k: v for k, v in want.items() if k != "embed.json"}
    manifest = [json.loads(d["embed.json"]) for d in (got, want)]
    for m in manifest:  # what this run wrote and what it found done differ, nothing else
        del m["report"]["written"], m["report"]["reused"]
    assert manifest[0] == manifest[1]
    assert store_of(cache) == store_of(tmp_path / "c1")


def test_build_slices_fill_the_store_then_a_plain_build_equals_one_build(world, tmp_path):
    from freebind.build.orchestrator import build
    from freebind.build.report import BuildReport

    expr = "test:base + c(test:at)"
    kw = dict(pools=world, hyper=FAST, progress=False, batch_size=4)
    one = build(expr, output=tmp_path / "one.safetensors", cache_dir=tmp_path / "c1", **kw)
    cache = tmp_path / "c2"
    written = 0
    for i in range(3):
        rep = build(expr, output=tmp_path / "sliced.safetensors", cache_dir=cache,
                    shard=f"{i}/3", **kw)
        assert isinstance(rep, BuildReport) and rep.engine["engine"] == "local"
        assert not (tmp_path / "sliced.safetensors").exists()  # no bundle from a slice
        written += rep.engine["written"]
        assert [s["path"] for s in rep.skipped] in ([], [str(world / "audio" / "a9999.wav")])
    chunks = rep.engine["chunks"]
    assert written == chunks  # the slices share the chunks out, each chunk once
    last = build(expr, output=tmp_path / "sliced.safetensors", cache_dir=cache, **kw)
    assert last.build_report.encoded == 0  # everything came from the slices
    assert last.build_report.skipped == one.build_report.skipped != []
    assert (tmp_path / "sliced.safetensors").read_bytes() == \
        (tmp_path / "one.safetensors").read_bytes()
    assert store_of(cache) == store_of(tmp_path / "c1")


def test_build_cli_shard_prints_the_slice(world, tmp_path):
    r = CliRunner().invoke(app, ["build", "test:base + c(test:at)", "--pools", str(world),
                                 "--cache-dir", str(tmp_path / "c"), "--shard", "1/2",
                                 "--hyper", "epochs=1", "-o", str(tmp_path / "x.safetensors")])
    assert r.exit_code == 0, r.output
    assert "slice 1/2" in r.output and "without --shard" in r.output
    assert not (tmp_path / "x.safetensors").exists()
    r = CliRunner().invoke(app, ["build", "test:base + c(test:at)", "--pools", str(world),
                                 "--cache-dir", str(tmp_path / "c"), "--shard", "0/2",
                                 "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["engine"]["engine"] == "local" and rep["jobs"] == []


# ------------------------------------------------------------------------------ the ray
# engine's encoding half, without Ray: the store's rows, skips and reasons

class _SplitSpace:
    """A text space with both halves: "bad" cannot be decoded, "nan" encodes to NaN."""

    name, modalities, dim, fingerprint = "split", ("text",), 3, "split-v1"

    def decode_item(self, modality, item):
        from freebind.util.errors import MediaError

        if item.startswith("bad"):
            raise MediaError(f"{item}: cannot decode this text")
        return item

    def _rows(self, inputs):
        rows = np.array([[len(t), 1.0, float("nan") if t == "nan" else 0.5] for t in inputs],
                        dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def encode_decoded(self, modality, inputs, batch_size=256):
        from freebind.spaces.guard import check_finite

        # the adapters' halves name rows, not items
        return check_finite(self._rows(inputs), self.name, modality,
                            [f"item {i}" for i in range(len(inputs))])

    def encode(self, modality, items, batch_size=32):
        from freebind.spaces.guard import check_finite

        rows = self._rows([self.decode_item(modality, t) for t in items])
        return check_finite(rows, self.name, modality, items)


def test_encoding_half_gives_the_stores_rows_skips_and_reasons(tmp_path):
    from freebind.run.engines.ray_engine import encode_entries
    from freebind.util.errors import MediaError
    from freebind.data.store import EmbeddingStore
    from freebind.util.text import reason

    space = _SplitSpace()
    items = ["a", "bad one", "ccc", "nan", "dddd", "ee"]
    store = EmbeddingStore(tmp_path / "c", shard_size=16)
    want, kept, failures = store.embed(space, "text", items, batch_size=3, progress=False,
                                       on_error="skip")
    assert kept.tolist() == [0, 2, 4, 5] and len(failures) == 2
    rows, reasons = [], []
    for b in range(0, len(items), 3):  # the store's batches
        batch = items[b:b + 3]
        entries = []
        for t in batch:
            try:
                entries.append((True, space.decode_item("text", t)))
            except MediaError as exc:
                entries.append((False, reason(exc, t)))
        emb, mask, why = encode_entries(space, "text", entries, batch)
        assert emb.shape == (sum(mask), 3)
        rows.append(emb)
        reasons += why
    assert np.concatenate(rows).tobytes() == want.tobytes()
    assert reasons == [f.reason for f in failures]
    assert "non-finite" in reasons[1]


def test_engine_flags_become_the_library_call(world, tmp_path, monkeypatch):
    import importlib

    from freebind.run.engines import EngineOptions

    E = importlib.import_module("freebind.run.partitions")
    seen = {}

    def fake(target, paths, texts, output, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr(E, "embed", fake)
    r = CliRunner().invoke(app, ["embed", "test:base", str(world / "image"), "-o",
                                 str(tmp_path / "o"), "--engine", "RAY", "--workers", "3",
                                 "--gpus-per-worker", "1", "--cpus-per-worker", "2",
                                 "--ray-address", "head:6379", "--shard", "2/5"])
    assert r.exit_code == 0, r.output
    assert seen["engine"] == EngineOptions("ray", workers=3, cpus_per_worker=2.0,
                                           gpus_per_worker=1.0, ray_address="head:6379")
    assert seen["shard"] == (2, 5)
    seen.clear()
    r = CliRunner().invoke(app, ["embed", "test:base", str(world / "image"), "-o",
                                 str(tmp_path / "o")])
    assert r.exit_code == 0 and "engine" not in seen and "shard" not in seen


def _old_plan(store, space, calls):
    """The layout as the plan computed it before its keys were arrays (a dict of seen keys,
    a list of (key, text)): [(size, todo)] per chunk, and the key failures."""
    import os

    from freebind.util.errors import MediaError
    from freebind.util.text import reason

    out, failures, seen = [], [], set()
    cached = store.index(space, "image")
    for call in calls:
        distinct = []
        for item in call.items:
            text = item if isinstance(item, str) else os.fspath(item)
            try:
                key = store.key("image", item)
            except MediaError as exc:
                entry = {"path": text, "reason": reason(exc, item), "modality": "image"}
                if entry not in failures:
                    failures.append(entry)
                continue
            if key not in seen:
                seen.add(key)
                distinct.append((key, text))
        for a in range(0, len(distinct), store.shard_size):
            part = distinct[a:a + store.shard_size]
            out.append((len(part), tuple(p for p in part if p[0] not in cached)))
    return out, failures


def test_chunks_of_compact_items_equal_the_old_plan(world, tmp_path):
    """plan_chunks over arrays (lists or packed items) gives the chunks and failures the
    dict-and-tuple plan gave: shard_size 3, duplicates, unreadable files, an overlapping
    second call, part of it cached."""
    from freebind import spaces
    from freebind.data.items import ItemList
    from freebind.data.store import EmbeddingStore
    from freebind.run.engines.chunks import StoreCall, plan_chunks

    space = spaces.get("test:base")
    images = sorted(str(p) for p in (world / "image").glob("*.png"))
    missing = str(world / "image" / "absent.png")
    first = images[:9] + [images[2], missing] + images[4:6]
    second = images[7:14] + [missing, images[0]]
    store = EmbeddingStore(tmp_path / "c", shard_size=3)
    store.embed(space, "image", images[5:8], batch_size=2, progress=False)   # cached
    want, want_fail = _old_plan(store, space, [StoreCall("test:base", "image", first),
                                               StoreCall("test:base", "image", second)])
    assert len(want_fail) == 1 and sum(1 for _, todo in want if len(todo) < 3) >= 2
    for wrap in (list, lambda x: ItemList.of([Path(p) for p in x], "path")):
        calls = [StoreCall("test:base", "image", wrap(first)),
                 StoreCall("test:base", "image", wrap(second))]
        chunks, failures = plan_chunks(store, {"test:base": space}, calls)
        assert [(c.size, c.todo) for c in chunks] == want and failures == want_fail
