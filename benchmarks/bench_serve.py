"""`freebind serve` under load: searches from 1 and 16 concurrent clients, latency p50/p99,
errors, and the same crowd against a server whose searches queue behind one lock.

The server runs in its own process (as `freebind serve` does) over an index of random base
embeddings of the quick start's bundle shape (mini:bind + d(mini:vl) + c(mini:clap),
untrained projectors of the real shapes); each request is a text query from a pool of 64
(encoded once, then cached as the page's repeated queries are) with a random audio factor,
over every item modality (`k` = 20). Clients are threads with keep-alive connections.

    .venv/bin/python benchmarks/bench_serve.py [--items 20000] [--requests 2000]
    .venv/bin/python benchmarks/bench_serve.py --uploads INDEX_DIR

``--uploads`` serves a real index (``freebind index``; the mini world's will do) and
measures ``/api/info`` (p50/p99, polled every 20 ms) while 8 images just under the pixel
limit (6000×6600, 39.6 MP) decode and 8 oversized ones (20000×20000 headers) are refused;
then 200 concurrent uploads of different clips, each followed by its search.
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
    from freebind.fusion.fused import FusedSpace
    from freebind.fusion.projector import ProjectorGroup
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

    from freebind.serve.search_server import create_app
    from freebind.serve.localhost import guarded_protocol

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


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """A real PNG of width × height pixels (smooth, so it stays small on disk)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    c = rng.uniform(0.3, 1.0, size=3)
    shape = (height, width)
    rgb = np.stack([np.broadcast_to(x * c[0] + y * (1 - c[0]), shape),
                    np.broadcast_to(y * c[1], shape), np.broadcast_to(x * c[2], shape)],
                   axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def wav_bytes(seconds: float, seed: int) -> bytes:
    import io
    import wave

    import numpy as np

    rng = np.random.default_rng(seed)
    x = (rng.normal(size=int(seconds * 16000)) * 3000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def uploads(index_dir: str) -> None:
    import httpx

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from tests.test_search_serve_safety import png_header_only

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "freebind_cli.main", "serve", index_dir,
                             "--port", str(port)], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(url + "/api/info", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        big = [png_bytes(6000, 6600, i) for i in range(8)]
        print(f"8 images of 6000×6600 (39.6 MP, {len(big[0]) / 1e6:.1f} MB each) and 8 "
              f"oversized headers; cores: {os.cpu_count()}, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        codes, lock = [], threading.Lock()

        def send(name, data):
            with httpx.Client(timeout=600) as c:
                r = c.post(url + "/api/upload", files={"file": (name, data, "image/png")})
                with lock:
                    codes.append(r.status_code)

        threads = [threading.Thread(target=send, args=(f"big{i}.png", b))
                   for i, b in enumerate(big)]
        threads += [threading.Thread(target=send, args=(f"bomb{i}.png",
                                                        png_header_only(20000, 20000)))
                    for i in range(8)]
        waits = []
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        with httpx.Client(timeout=60) as c:
            while any(t.is_alive() for t in threads):
                s0 = time.perf_counter()
                c.get(url + "/api/info")
                waits.append(time.perf_counter() - s0)
                time.sleep(0.02)
        for t in threads:
            t.join()
        waits.sort()
        print(f"uploads: {sorted(codes)} in {time.perf_counter() - t0:.1f} s; /api/info "
              f"meanwhile: {len(waits)} requests, p50 {statistics.median(waits) * 1000:.0f} "
              f"ms, p99 {waits[min(len(waits) - 1, int(0.99 * len(waits)))] * 1000:.0f} ms, "
              f"max {waits[-1] * 1000:.0f} ms", flush=True)
        ok = []

        def one(i):
            with httpx.Client(timeout=600) as c:
                r = c.post(url + "/api/upload", files={"file": (f"c{i}.wav", wav_bytes(1.0, i),
                                                                "audio/wav")})
                good = r.status_code == 200
                if good:
                    s = c.post(url + "/api/search", json={"upload": r.json()["upload"], "k": 3})
                    good = s.status_code == 200
                with lock:
                    ok.append(good)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(f"200 concurrent uploads + their searches: {sum(ok)} succeeded, "
              f"{len(ok) - sum(ok)} failed, {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000, help="items per modality")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--searchers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--uploads", default=None, metavar="INDEX_DIR",
                    help="measure uploads against this index instead")
    args = ap.parse_args()
    if args.uploads:
        uploads(args.uploads)
        return
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
