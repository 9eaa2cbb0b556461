"""Peak anonymous memory of streamed retrieval evaluation on memory-mapped embeddings.

A synthetic retrieval suite: ``--items`` random unit ``--dim`` item embeddings and as many
caption embeddings (one caption per item, near its item), both ``np.lib.format`` memory
maps on disk. A ``[captions, items]`` float32 similarity matrix would be 160 GB at 200,000
items; :func:`freebind.evaluate.paired_retrieval_from_embeddings` scores blocks of
``block_rows`` × ``block_rows`` (from ``--budget-mb``) and keeps counts per row and column.
Each size runs in a fresh process; peak RssAnon (sampled every 5 ms, page cache excluded)
and seconds are printed, and the growth per item between the smallest and largest size::

    .venv/bin/python benchmarks/bench_eval_memory.py --items 50000 200000 --queries 5000
    .venv/bin/python benchmarks/bench_eval_memory.py --items 200000 --queries 0   # all (slow)

``--queries Q`` scores Q caption queries against every item (one direction,
:func:`freebind.evaluate.retrieval_from_embeddings`; time scales with Q, the memory bound
does not, every query still meets the whole gallery); ``--queries 0`` scores every caption
and every item, both directions (Q·G·d multiply-adds: 200,000² at 1024-d is about 20
CPU-minutes). Target: peak anonymous memory well under 3 GB, at most 2 KB more per item.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from anon_memory import Peak, in_fresh_process


def synthetic(folder: Path, n: int, dim: int) -> tuple[Path, Path]:
    """Item and caption memory maps (written once, block by block)."""
    items, caps = folder / f"items_{n}_{dim}.npy", folder / f"captions_{n}_{dim}.npy"
    if not caps.exists():
        rng = np.random.default_rng(0)
        a = np.lib.format.open_memmap(items, "w+", np.float32, (n, dim))
        c = np.lib.format.open_memmap(str(caps) + ".part", "w+", np.float32, (n, dim))
        for s in range(0, n, 8192):
            e = min(n, s + 8192)
            x = rng.standard_normal((e - s, dim)).astype(np.float32)
            a[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
            y = x + 2.0 * rng.standard_normal((e - s, dim)).astype(np.float32)
            c[s:e] = y / np.linalg.norm(y, axis=1, keepdims=True)
        a.flush(), c.flush()
        del a, c
        os.replace(str(caps) + ".part", caps)
    return items, caps


def one(n: int, dim: int, queries: int, budget_mb: float, folder: Path) -> dict:
    import freebind.evaluate as fe

    items_p, caps_p = synthetic(folder, n, dim)
    items = np.load(items_p, mmap_mode="r")
    caps = np.load(caps_p, mmap_mode="r")
    budget = int(budget_mb * 2**20)
    with Peak() as m:
        if queries:
            q = min(queries, n)
            metrics = fe.retrieval_from_embeddings(caps[:q], items, np.arange(q),
                                                   budget_bytes=budget, name="t2a")
        else:
            metrics = fe.paired_retrieval_from_embeddings(caps, items, np.arange(n),
                                                          budget_bytes=budget)
    from freebind.evaluate.metrics import block_rows_for

    return {"items": n, "queries": queries or n, "dim": dim,
            "block_rows": block_rows_for(dim, budget), "seconds": round(m.seconds, 1),
            "cpu_seconds": round(m.cpu, 1), "base_anon_mb": round(m.base / 2**20, 1),
            "peak_anon_mb": round(m.peak / 2**20, 1),
            "t2a_R@1": round(metrics["t2a_R@1"], 4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=5000,
                    help="caption queries against every item (0: all, both directions)")
    ap.add_argument("--budget-mb", type=float, default=256)
    ap.add_argument("--folder", default=None, help="where the memory maps go (default: tmp)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    folder = Path(args.folder or Path(tempfile.gettempdir()) / "freebind-bench-eval")
    folder.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one(args.items[0], args.dim, args.queries, args.budget_mb, folder)))
        return
    rows = []
    for n in args.items:                      # a fresh process per size: a clean peak
        rows.append(in_fresh_process(__file__, ["--items", n, "--dim", args.dim,
                                                "--queries", args.queries, "--budget-mb",
                                                args.budget_mb, "--folder", folder]))
    first, last = rows[0], rows[-1]
    growth = ((last["peak_anon_mb"] - first["peak_anon_mb"]) * 2**20
              / (last["items"] - first["items"])) if len(rows) > 1 else None
    result = {"runs": rows, "growth_bytes_per_item": None if growth is None
              else round(growth, 1)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'items':>9} {'queries':>8} {'block':>6} {'seconds':>8} {'cpu s':>8} "
          f"{'base MB':>8} {'peak anon MB':>13}")
    for r in rows:
        print(f"{r['items']:>9} {r['queries']:>8} {r['block_rows']:>6} {r['seconds']:>8} "
              f"{r['cpu_seconds']:>8} {r['base_anon_mb']:>8} {r['peak_anon_mb']:>13}")
    if growth is not None:
        print(f"growth {growth:.0f} bytes per item (target <= 2048); "
              f"peak {last['peak_anon_mb']:.0f} MB (target < 3072)")


if __name__ == "__main__":
    main()
