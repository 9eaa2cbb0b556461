"""Pseudo-tuple construction time vs a bare matrix product of the same size.

For a bond over three modalities (an audio-text expert bound to a unified base), building
pseudo tuples does one similarity product per retrieval hop (query pool × target pool),
plus top-k and softmax. The bare baseline is exactly those products, with nothing else::

    .venv/bin/python benchmarks/bench_pseudo.py            # n=12000 per pool, d=512
    .venv/bin/python benchmarks/bench_pseudo.py --n 4000 --json

Target: pseudo-tuple time ≤ 3× the bare products.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12000, help="items per modality pool")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from freebind.build import pseudo_tuples as pseudo

    rng = np.random.default_rng(0)
    pools = {"expert": {m: unit_rows(rng, args.n, args.dim) for m in ("audio", "text")},
             "base": {m: unit_rows(rng, args.n, args.dim) for m in ("audio", "image", "text")}}

    def run_pseudo():
        return pseudo.build(pools, "expert", "base", topk=args.topk)

    tuples = run_pseudo()  # warm-up; also gives the hops actually computed
    hops = sorted({f.route.hops[0] for f in tuples.fills.values()})

    def run_bare():
        for space, q, m in hops:
            a = torch.from_numpy(pools[space][q])
            b = torch.from_numpy(pools[space][m])
            _ = a @ b.t()
            del _

    chunk = pseudo.chunk_rows(args.n)

    def run_bare_chunked():  # the same products in the chunks pseudo tuples use
        for space, q, m in hops:
            a = torch.from_numpy(pools[space][q])
            bt = torch.from_numpy(pools[space][m]).t()
            for s in range(0, a.shape[0], chunk):
                _ = a[s:s + chunk] @ bt
                del _

    run_bare()
    t_pseudo = min(_time(run_pseudo) for _ in range(args.repeat))
    t_bare = min(_time(run_bare) for _ in range(args.repeat))
    t_chunked = min(_time(run_bare_chunked) for _ in range(args.repeat))
    result = {"n_per_pool": args.n, "dim": args.dim, "topk": args.topk, "hops": len(hops),
              "tuples": len(tuples), "threads": torch.get_num_threads(),
              "pseudo_s": round(t_pseudo, 3), "bare_matmul_s": round(t_bare, 3),
              "bare_chunked_matmul_s": round(t_chunked, 3),
              "ratio": round(t_pseudo / t_bare, 2),
              "ratio_vs_chunked": round(t_pseudo / t_chunked, 2), "target": "<= 3.0"}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"pseudo tuples: {len(tuples)} tuples, {len(hops)} similarity products of "
              f"{args.n}x{args.dim} @ {args.dim}x{args.n}")
        print(f"  pseudo-tuple construction {t_pseudo:.3f} s")
        print(f"  bare matrix products      {t_bare:.3f} s (one product per hop)")
        print(f"  bare chunked products     {t_chunked:.3f} s (same chunks, no top-k)")
        print(f"  ratio {t_pseudo / t_bare:.2f}x vs bare, {t_pseudo / t_chunked:.2f}x vs "
              f"chunked (target <= 3x)")
    return result


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
