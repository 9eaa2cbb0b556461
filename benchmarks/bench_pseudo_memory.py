"""Peak memory of pseudo-tuple construction on large pools: bounded by chunk × pool.

Two modality pools (audio, text) of 200,000 random unit 512-d embeddings, each embedded in
two spaces (an expert and a base, both audio-text): 4 × 200,000 × 512 float32 = 1.6 GB of
inputs. A full 200,000 × 200,000 similarity matrix alone would be 160 GB; the chunked
construction keeps one chunk × pool block (128 MB by default) at a time. Peak RSS of the
whole process, inputs included, is reported::

    .venv/bin/python benchmarks/bench_pseudo_memory.py                 # 20,000 queries/pool
    .venv/bin/python benchmarks/bench_pseudo_memory.py --queries 0     # every item (slow)

``--queries`` limits how many items of each pool act as queries (time scales with it; the
memory bound does not, since every query still scans the whole 200,000-item pool).
Target: under 3 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=20_000, help="0: every item")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from freebind.build import pseudo_tuples as pseudo

    rng = np.random.default_rng(0)

    def pool():
        x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
        for s in range(0, args.n, 50_000):  # normalise in place, block by block
            blk = x[s:s + 50_000]
            blk /= np.linalg.norm(blk, axis=1, keepdims=True)
        return x

    pools = {"expert": {"audio": pool(), "text": pool()},
             "base": {"audio": pool(), "text": pool()}}
    rss_inputs = _peak_mb()
    t = time.perf_counter()
    tuples = pseudo.build(pools, "expert", "base", max_queries=args.queries or None,
                          progress=not args.json)
    seconds = time.perf_counter() - t
    peak = _peak_mb()
    result = {"pool": args.n, "dim": args.dim, "queries_per_pool": args.queries or args.n,
              "tuples": len(tuples), "inputs_mb": round(4 * 4 * args.n * args.dim / 2**20),
              "peak_rss_after_inputs_mb": round(rss_inputs), "peak_rss_mb": round(peak),
              "seconds": round(seconds, 1), "target_mb": 3072, "ok": peak < 3072}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(tuples)} pseudo tuples over pools of {args.n} x {args.dim} "
              f"in {seconds:.1f} s")
        print(f"peak RSS {peak:.0f} MB (inputs alone {rss_inputs:.0f} MB); target < 3072 MB: "
              f"{'ok' if peak < 3072 else 'EXCEEDED'}")
    return result


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


if __name__ == "__main__":
    main()
