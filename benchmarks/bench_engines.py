"""Items/s of the local engine against the ray engine with 1 and 2 workers, on one manifest,
measured in one run; Ray's fixed start-up cost is reported apart.

The work is the mini audio pipeline with a CPU encoder (``mini:bind``): WAV files of
4-14 s at 22.05-48 kHz, each decoded, resampled to 16 kHz and cut to a clip (the per-item
decode cost of a real pool), then a log-mel front end and the audio tower::

    .venv/bin/python benchmarks/bench_engines.py                 # 480 clips
    .venv/bin/python benchmarks/bench_engines.py --items 4000 --workers 1,2,4
    .venv/bin/python benchmarks/bench_engines.py --json

Every run starts from an empty embedding store. For the ray engine, ``start-up`` is
``ray.init`` (once, first row) plus each run's wait for its first result (actor processes
starting, encoders loading); ``items/s`` counts the whole run, ``steady items/s`` divides
the items by the time after the first result (decoding already done by the read stage while
the actors started counts in its favour: the pipelining a long run keeps). The local
engine decodes and encodes one after the other in one process; the ray engine overlaps
them in separate processes, so it can gain even on one machine once it is up, as long as
cores remain for the read stage; on a short run its start-up dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_clips(root: Path, n: int) -> list[str]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rate = (44100, 48000, 22050, 32000)[i % 4]
        seconds = (10.0, 4.0, 14.0, 7.0)[i % 4]
        t = np.arange(int(rate * seconds)) / rate
        wave = 0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t)
        wave = wave + 0.05 * rng.standard_normal(t.size)
        path = root / f"clip{i:05d}.wav"
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        paths.append(str(path))
    return paths


def run_engine(engine: str, clips, cache: Path, workers: int, batch_size: int,
               shard_size: int):
    from freebind import spaces
    from freebind.run.engines import engine_options, fill
    from freebind.run.engines.chunks import StoreCall
    from freebind.data.store import EmbeddingStore

    store = EmbeddingStore(cache, shard_size=shard_size)
    opts = engine_options(engine, workers=workers)
    t = time.perf_counter()
    report = fill([StoreCall("mini:bind", "audio", clips)],
                  {"mini:bind": spaces.get("mini:bind")}, store, opts,
                  batch_size=batch_size, progress=False)
    return time.perf_counter() - t, report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=480)
    ap.add_argument("--workers", default="1,2", help="ray worker counts, comma-separated")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    torch.set_num_threads(1)  # one encoder thread per worker, as the local engine here
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_engines_") as tmp:
        tmp = Path(tmp)
        clips = write_clips(tmp / "clips", args.items)
        seconds, rep = run_engine("local", clips, tmp / "c_local", 1, args.batch_size,
                                  args.shard_size)
        rows.append({"engine": "local", "workers": 1, "seconds": seconds,
                     "items_per_s": args.items / seconds, "startup_s": 0.0,
                     "steady_items_per_s": args.items / seconds})
        import ray

        t = time.perf_counter()
        need = max(worker_counts) + 1
        ray.init(num_cpus=max(os.cpu_count() or 1, need), include_dashboard=False,
                 logging_level="ERROR", _temp_dir=str(tmp / "ray"),
                 object_store_memory=300 * 2**20)
        init = time.perf_counter() - t
        try:
            for w in worker_counts:
                seconds, rep = run_engine("ray", clips, tmp / f"c_ray{w}", w, args.batch_size,
                                          args.shard_size)
                first = rep.startup_seconds
                rows.append({"engine": "ray", "workers": w, "seconds": seconds,
                             "items_per_s": args.items / seconds,
                             "startup_s": first + (init if w == worker_counts[0] else 0.0),
                             "steady_items_per_s": args.items / max(seconds - first, 1e-9)})
        finally:
            ray.shutdown()
    base = rows[0]["items_per_s"]
    for r in rows:
        r["vs_local"] = r["items_per_s"] / base
        r["steady_vs_local"] = r["steady_items_per_s"] / base
    if args.json:
        print(json.dumps({"items": args.items, "ray_init_s": init, "rows": rows}, indent=1))
        return 0
    print(f"{args.items} clips, mini:bind audio, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU(s); ray.init {init:.1f} s (in the first ray row's start-up)")
    print(f"{'engine':8} {'workers':>7} {'seconds':>8} {'items/s':>8} {'vs local':>8} "
          f"{'start-up s':>10} {'steady items/s':>14} {'steady vs local':>15}")
    for r in rows:
        print(f"{r['engine']:8} {r['workers']:>7} {r['seconds']:>8.1f} "
              f"{r['items_per_s']:>8.1f} {r['vs_local']:>8.2f} {r['startup_s']:>10.1f} "
              f"{r['steady_items_per_s']:>14.1f} {r['steady_vs_local']:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
