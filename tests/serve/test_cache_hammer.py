"""The search index's shared caches (query rows, components per factor table, float16 scan
copies, the remembered projections) hammered from many threads: every answer equals the
single-threaded one, nothing raises, each scan copy is built once."""

from __future__ import annotations

import random
import threading

import numpy as np
import torch

from search_world import make_index  # noqa: E402

THREADS = 16


def _factor_sets(index) -> list:
    controls = index.factor_controls()
    out = [None]
    for v in (0.0, 0.3, 0.6, 1.0):      # five tables: more than the three components kept
        out.append([f"{c['bond']}.{c['modality']}={v}" for c in controls])
    return out


def _hits(hits) -> list:
    return [(h.id, round(float(h.score), 5)) for h in hits]


def test_index_caches_from_many_threads(tmp_path, monkeypatch):
    import freebind.search.index as index_mod
    from freebind.search import Index

    index = Index.load(make_index(tmp_path, n=12))
    monkeypatch.setattr(index_mod, "SCAN_MIN_ROWS", 0)   # every search takes the fp16 scan
    builds = []
    real_scan = index_mod._Scan

    class CountedScan(real_scan):
        def __init__(self, a, b):
            builds.append(threading.get_ident())
            super().__init__(a, b)

    monkeypatch.setattr(index_mod, "_Scan", CountedScan)
    queries = [f"a {w} sound number {i}" for i in range(40) for w in ("dog", "car")]
    factors = _factor_sets(index)
    work = [(q, f, m) for q in queries for f in range(len(factors))
            for m in ("audio", "image")]
    want = {}
    fresh = Index.load(index.path)
    for q, f, m in work[::7]:          # the answers of an index that no thread touched
        want[(q, f, m)] = _hits(fresh.search(q, modality=m, k=3, factors=factors[f]))
    builds.clear()
    index.search(queries[0], modality="audio", k=3)   # the index's own components
    random.Random(0).shuffle(work)
    errors, got = [], {}
    barrier = threading.Barrier(THREADS)

    def hammer(part):
        barrier.wait()
        try:
            for q, f, m in part:
                got[(q, f, m)] = _hits(index.search(q, modality=m, k=3, factors=factors[f]))
        except Exception as exc:  # noqa: BLE001  reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(work[i::THREADS],))
               for i in range(THREADS)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert errors == []
    assert len(got) == len(work)
    for key, hits in want.items():
        assert got[key] == hits, key
    assert len(index._query_cache) <= 4096
    for block in index.blocks.values():
        assert len(block.comps) <= 3 and set(block.scans) <= set(block.comps)


def test_remembered_projections_under_eviction_churn():
    from freebind.fusion.memo import remembered
    from freebind.fusion.projector import ProjectorGroup

    g = torch.Generator().manual_seed(0)
    group = ProjectorGroup(2, 8, 6, hidden=16, generator=g).eval()
    memo = remembered({"j": group}, entries=4, clone=True)["j"]
    inputs = [torch.randn(2, 8, generator=g) for _ in range(32)]
    with torch.no_grad():
        want = [group.mixture(x) for x in inputs]
    errors = []

    def hammer(seed):
        rng = random.Random(seed)
        try:
            for _ in range(300):
                i = rng.randrange(len(inputs))
                out = memo.mixture(inputs[i])
                if not all(torch.equal(a, b) for a, b in zip(_flat(out), _flat(want[i]))):
                    errors.append(f"wrong rows for input {i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(THREADS)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    assert errors == [] and len(memo.cache) <= 4


def _flat(x):
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _flat(v)]
    return [t for v in x for t in _flat(v)]


def test_scan_copies_built_once_per_table(tmp_path, monkeypatch):
    import freebind.search.index as index_mod
    from freebind.search import Index

    index = Index.load(make_index(tmp_path, n=8))
    monkeypatch.setattr(index_mod, "SCAN_MIN_ROWS", 0)
    built = []
    real = index_mod._Scan

    class Slow(real):
        def __init__(self, a, b):
            built.append(1)
            threading.Event().wait(0.05)       # a slow build: the others arrive meanwhile
            super().__init__(a, b)

    monkeypatch.setattr(index_mod, "_Scan", Slow)
    barrier = threading.Barrier(THREADS)
    out = []

    def go():
        barrier.wait()
        out.append(_hits(index.search("a dog barks", modality="audio", k=3)))

    threads = [threading.Thread(target=go) for _ in range(THREADS)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert len(out) == THREADS and all(o == out[0] for o in out)
    assert len(built) == 1
    assert np.isfinite([s for _, s in out[0]]).all()
