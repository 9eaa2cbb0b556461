"""Micro-batching (freebind.serve.batching) and the embeddings API under 16 concurrent
clients: requests that arrive together are encoded together, each gets its own rows, an
error reaches only its request, a slow lane does not hold a fast one."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from live_server import LiveServer  # noqa: E402
from search_world import make_bundle  # noqa: E402

import freebind  # noqa: E402

CLIENTS = 16


def _rows(key, items):
    if any(x < 0 for x in items):
        raise ValueError(f"negative input in {items}")
    return np.array([[x, 2 * x] for x in items], dtype=np.float32)


def test_jobs_that_arrive_together_run_together():
    from freebind.serve.batching import Batcher

    sizes = []
    batcher = Batcher(lambda k, items: (time.sleep(0.02), _rows(k, items))[1],
                      window=0.05, max_batch=64, on_batch=sizes.append)
    barrier = threading.Barrier(CLIENTS)

    def client(i):
        with batcher.expect():
            barrier.wait()
        return batcher.submit("text", "k", [i, i + 100])

    with ThreadPoolExecutor(CLIENTS) as pool:
        got = list(pool.map(client, range(CLIENTS)))
    for i, rows in enumerate(got):
        np.testing.assert_array_equal(rows, [[i, 2 * i], [i + 100, 2 * i + 200]])
    assert sum(sizes) == 2 * CLIENTS and max(sizes) > 2 and len(sizes) < CLIENTS
    batcher.close()


def test_max_batch_and_a_lone_client_does_not_wait():
    from freebind.serve.batching import Batcher

    sizes = []
    batcher = Batcher(_rows, window=1.0, max_batch=4, on_batch=sizes.append)
    t0 = time.monotonic()
    np.testing.assert_array_equal(batcher.submit("text", "k", [3]), [[3, 6]])
    assert time.monotonic() - t0 < 0.5        # nobody expected: no window
    big = batcher.submit("text", "k", list(range(10)))   # over max_batch: alone
    assert big.shape == (10, 2) and sizes[-1] == 10
    barrier = threading.Barrier(8)

    def client(i):
        with batcher.expect():
            barrier.wait()
        return batcher.submit("text", "k", [i])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    assert max(sizes[2:]) <= 4
    batcher.close()


def test_an_error_reaches_only_its_request():
    from freebind.serve.batching import Batcher

    batcher = Batcher(_rows, window=0.05, max_batch=64)
    barrier = threading.Barrier(6)

    def client(i):
        with batcher.expect():
            barrier.wait()
        try:
            return batcher.submit("text", "k", [i if i != 3 else -1])
        except ValueError as exc:
            return str(exc)

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(client, range(6)))
    assert got[3] == "negative input in [-1]"
    for i in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(got[i], [[i, 2 * i]])
    batcher.close()


def test_a_slow_lane_does_not_hold_a_fast_one():
    from freebind.serve.batching import Batcher

    def run(key, items):
        if key == "slow":
            time.sleep(1.0)
        return _rows(key, items)

    batcher = Batcher(run, window=0.0, max_batch=64)
    slow = threading.Thread(target=batcher.submit, args=("media", "slow", [1]))
    slow.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    batcher.submit("text", "fast", [2])
    assert time.monotonic() - t0 < 0.5
    slow.join()
    batcher.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from freebind.serve.embeddings_api import EmbeddingService, create_app, guard
    from freebind.serve.ops import Metrics

    bundle = make_bundle(tmp_path_factory.mktemp("batch") / "fused.safetensors")
    service = EmbeddingService(str(bundle), model="fused", window=0.02,
                               metrics=Metrics(("/v1/",)))
    with LiveServer(guard(create_app(service), service=service)) as live:
        yield {"live": live, "bundle": bundle, "httpx": httpx, "service": service}
    service.close()


def test_sixteen_concurrent_clients_get_their_own_rows(api):
    httpx, url = api["httpx"], api["live"].url("/v1/embeddings")
    texts = [f"a dog barks {'loudly ' * (i % 4)}number {i}" for i in range(CLIENTS * 3)]
    fused = freebind.load(api["bundle"])
    want = np.concatenate([fused.encode("text", [t]).numpy() for t in texts])

    def client(i):
        with httpx.Client(timeout=60) as c:
            out = []
            for t in texts[i::CLIENTS]:
                r = c.post(url, json={"model": "fused", "input": t})
                assert r.status_code == 200, r.text
                out.append((t, r.json()["data"][0]["embedding"]))
            return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        got = dict(kv for part in pool.map(client, range(CLIENTS)) for kv in part)
    np.testing.assert_allclose(np.array([got[t] for t in texts], dtype=np.float32), want,
                               rtol=0, atol=1e-5)
    text = httpx.get(api["live"].url("/metrics")).text
    sizes = [line for line in text.splitlines()
             if line.startswith("freebind_batch_size_count")]
    count = float(sizes[0].split()[-1])
    total = float([line for line in text.splitlines()
                   if line.startswith("freebind_batch_size_sum")][0].split()[-1])
    assert total == len(texts) and count < len(texts)   # some requests shared a batch
