"""`freebind api` under concurrent clients: the same requests sent one at a time, then by
``--clients`` concurrent clients, whose requests the server batches together
(freebind.serve.batching).

The server runs in its own process (as `freebind api` does) over a bundle of the quick
start's shape on the mini world's spaces (mini:bind + d(mini:vl) + c(mini:clap), untrained
projectors of the real shapes). Each request embeds ``--inputs`` texts drawn from the mini
world's caption grammar. Clients are threads with keep-alive connections. Prints
``sequential_rps``, ``concurrent_rps``, their ``ratio`` (target: at least 2 with 16 clients)
and the concurrent requests' latency ``p50_ms`` / ``p99_ms``.

    .venv/bin/python benchmarks/bench_api.py --clients 16 --json
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

WORDS = ("a loud dog barks twice", "a quiet car passes by", "a small bird sings",
         "a red piano plays softly", "rain falls on a tin roof", "a violin plays",
         "a cat meows near the door", "an engine starts in the cold")


def make_bundle(folder: str) -> str:
    import torch

    from freebind.algebra import plan
    from freebind.fusion.fused import FusedSpace
    from freebind.fusion.projector import ProjectorGroup

    p = plan("mini:bind + d(mini:vl) + c(mini:clap)")
    torch.manual_seed(0)
    proj = {j.id: ProjectorGroup(len(j.data_modes), j.source_dim, j.target_dim,
                                 hidden=256).eval() for j in p.jobs}
    return str(FusedSpace(p, proj).save(os.path.join(folder, "fused.safetensors")))


def run_server(port: int, bundle: str, window_ms: float, max_batch: int) -> None:
    from freebind.serve.embeddings_api import serve

    serve(bundle, port=port, model="fused", window=window_ms / 1000.0, max_batch=max_batch,
          log_level="error")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle: str, window_ms: float, max_batch: int):
    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--bundle",
                             bundle, "--window-ms", str(window_ms), "--max-batch",
                             str(max_batch)], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def requests_for(n: int, inputs: int, seed: int = 0) -> list[dict]:
    rnd = random.Random(seed)
    return [{"model": "fused", "input": [f"{rnd.choice(WORDS)} {rnd.randrange(1000)}"
                                         for _ in range(inputs)]} for _ in range(n)]


def send_all(port: int, bodies: list[dict], clients: int) -> tuple[float, list[float]]:
    """Wall seconds and per-request latencies of ``bodies`` sent by ``clients`` threads."""
    import httpx

    lat, errors, lock = [], [], threading.Lock()

    def client(part):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            c.get("/health")                   # connect before the clock starts
            barrier.wait()
            for body in part:
                t0 = time.perf_counter()
                r = c.post("/v1/embeddings", json=body)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    if r.status_code != 200:
                        errors.append(r.status_code)

    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=client, args=(bodies[i::clients],))
               for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed: {errors[:5]}")
    return wall, lat


def measure(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_bundle(tmp)
        proc, port = start(bundle, args.window_ms, args.max_batch)
        try:
            bodies = requests_for(args.requests, args.inputs)
            send_all(port, requests_for(32, args.inputs, seed=1), 4)   # warm up
            seq_wall, seq_lat = send_all(port, bodies, 1)
            con_wall, con_lat = send_all(port, bodies, args.clients)
        finally:
            proc.terminate()
            proc.wait(30)
    con_lat.sort()
    seq_rps, con_rps = len(bodies) / seq_wall, len(bodies) / con_wall
    return {"sequential_rps": round(seq_rps, 1), "concurrent_rps": round(con_rps, 1),
            "ratio": round(con_rps / seq_rps, 2),
            "p50_ms": round(statistics.median(con_lat) * 1000, 2),
            "p99_ms": round(con_lat[min(len(con_lat) - 1, int(0.99 * len(con_lat)))] * 1000,
                            2),
            "sequential_p50_ms": round(statistics.median(seq_lat) * 1000, 2),
            "clients": args.clients, "requests": len(bodies), "inputs": args.inputs,
            "window_ms": args.window_ms, "max_batch": args.max_batch,
            "cpus": os.cpu_count(), "load_average": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=480)
    ap.add_argument("--inputs", type=int, default=1, help="texts per request")
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--bundle", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return run_server(args.serve, args.bundle, args.window_ms, args.max_batch)
    out = measure(args)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>18}: {v}")


if __name__ == "__main__":
    main()
