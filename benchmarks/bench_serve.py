"""`freebind serve` under load: searches from 1 and 16 concurrent clients, latency p50/p99,
errors, and the same crowd against a server whose searches queue behind one lock.

The server runs in its own process (as `freebind serve` does) over an index of random base
embeddings of the quick start's bundle shape (mini:bind + d(mini:vl) + c(mini:clap),
untrained projectors of the real shapes); each request is a text query from a pool of 64
(encoded once, then cached as the page's repeated queries are) with a random audio factor,
over every item modality (`k` = 20). Clients are threads with keep-alive connections.

    .venv/bin/python benchmarks/bench_serve.py [--items 20000] [--requests 2000]
"""

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

TEXTS = [f"a {adj} {noun} {verb}" for adj in ("loud", "quiet", "small", "red")
         for noun in ("dog", "car", "bird", "piano") for verb in ("barks", "passes", "sings",
                                                                    "plays")]


def build_index(n: int):
    import numpy as np
    import torch

    from freebind.algebra import plan
    from freebind.fused import FusedSpace
    from freebind.projector import ProjectorGroup
    from freebind.search import Index

    p = plan("mini:bind + d(mini:vl) + c(mini:clap)")
    torch.manual_seed(0)
    proj = {j.id: ProjectorGroup(len(j.data_modes), j.source_dim, j.target_dim,
                                 hidden=256).eval() for j in p.jobs}
    fs = FusedSpace(p, proj)
    index = Index(fs)
    rng = np.random.default_rng(0)
    for m in ("audio", "image"):
        leaves = {ref: rng.normal(size=(n, meta["dim"])).astype(np.float32)
                  for ref, meta in fs.plan.spaces.items() if m in meta["modalities"]}
        index.add_leaves(m, [f"/nonexistent/{m}{i}.{'wav' if m == 'audio' else 'png'}"
                             for i in range(n)], leaves)
    return index


def run_server(port: int, items: int, searchers: int) -> None:
    import uvicorn

    from freebind.search.serve import create_app
    from freebind.web import guarded_protocol

    app = create_app(build_index(items), searchers=searchers)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error",
                http=guarded_protocol(10))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(items: int, searchers: int):
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--items",
                             str(items), "--searchers", str(searchers)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    import httpx

    for _ in range(600):
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def crowd(port: int, clients: int, total: int) -> dict:
    import httpx

    lat, errors = [], []
    lock = threading.Lock()
    per = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]

    def client(i, n):
        rnd = random.Random(i)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for _ in range(n):
                body = {"text": rnd.choice(TEXTS), "k": 20,
                        "factors": {"b2.audio": round(rnd.random(), 2)}}
                t0 = time.perf_counter()
                try:
                    r = c.post("/api/search", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError as exc:
                    ok, r = False, exc
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if not ok:
                        errors.append(str(getattr(r, "status_code", r)))

    # warm: every text encoded once
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
        for t in TEXTS:
            c.post("/api/search", json={"text": t, "k": 20})
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i, n)) for i, n in enumerate(per)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"n": len(lat), "errors": len(errors), "p50": statistics.median(lat) * 1000,
            "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000,
            "rps": len(lat) / wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000, help="items per modality")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--searchers", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        run_server(args.serve, args.items, args.searchers or None)
        return
    print(f"{2 * args.items} items (audio + image, 48-d), text queries with a random factor, "
          f"k=20; cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for label, searchers in (("parallel searches", 0), ("one lock", 1)):
        proc, port = start(args.items, searchers)
        try:
            for clients, total in ((1, max(200, args.requests // 10)), (16, args.requests)):
                r = crowd(port, clients, total)
                rows.append((label, clients, r))
                print(f"{label:18s} {clients:2d} clients: {r['n']} searches, {r['errors']} "
                      f"errors, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, "
                      f"{r['rps']:.0f}/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    par = next(r for lb, c, r in rows if lb == "parallel searches" and c == 16)
    one = next(r for lb, c, r in rows if lb == "one lock" and c == 16)
    print(f"16 clients, parallel vs one lock: throughput ×{par['rps'] / one['rps']:.2f}, "
          f"p99 ×{par['p99'] / one['p99']:.2f}")


if __name__ == "__main__":
    main()
