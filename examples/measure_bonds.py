"""The bond measurements on the mini world's evaluation sets.

Builds three fused spaces from the default mini pools and compares R@1 with their parts:

1. ``mini:bind + c(mini:clap)`` with the AT-expertise factors (a=0.8, t=0.5): audio–text
   R@1 (AudioCaps-layout set) ≥ 1.5× ``mini:bind``'s and ≥ 90% of ``mini:clap``'s.
2. ``mini:bind + d(mini:vl)``: image–text R@1 (COCO-layout set) ≥ 90% of ``mini:vl``'s and
   above ``mini:bind``'s.
3. With the versatile factors, every fused space (1, 2 and the quick start
   ``mini:bind + d(mini:vl) + c(mini:clap)``) keeps audio–image R@1 (VGGSS-layout set) ≥ 90%
   of ``mini:bind``'s.

R@1 is the mean of both retrieval directions (t2a/a2t, t2i/i2t, a2i/i2a)::

    .venv/bin/python examples/measure_bonds.py                 # builds, evaluates, prints
    .venv/bin/python examples/measure_bonds.py --json > bonds.json
    .venv/bin/python examples/measure_bonds.py --hyper epochs=20 --seed 1

Bundles go to ``--out`` (default ``runs/measure_bonds``); embeddings are cached, so a rerun
re-encodes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SUITES = {"at": ("audiocaps", ("t2a_R@1", "a2t_R@1")),
          "it": ("coco", ("t2i_R@1", "i2t_R@1")),
          "ai": ("vggss", ("a2i_R@1", "i2a_R@1"))}
BONDS = {
    "combination": "mini:bind + c(mini:clap)",
    "displacement": "mini:bind + d(mini:vl)",
    "quick start": "mini:bind + d(mini:vl) + c(mini:clap)",
}


def parse_hyper(specs):
    out = {}
    for spec in specs:
        k, _, v = spec.partition("=")
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/measure_bonds"))
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hyper", action="append", default=[], help="KEY=VALUE for every job")
    ap.add_argument("--mini-pool-size", type=int, default=2000)
    ap.add_argument("--mini-weights", type=Path, default=None,
                    help="use mini weights from this folder (scripts/train_mini.py --out)")
    ap.add_argument("--only", choices=list(BONDS), action="append", default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (mini models "
                                                           "run fastest on one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    if args.mini_weights is not None:
        import freebind.mini.spaces as mini_spaces

        mini_spaces.WEIGHTS_DIR = args.mini_weights
    import freebind
    from freebind.evaluate.runner import evaluate
    from freebind.mini import write_evalsets
    from freebind.data.store import EmbeddingStore

    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    args.out.mkdir(parents=True, exist_ok=True)
    evalsets = args.out / "evalsets"
    if not (evalsets / "evalsets.json").is_file():
        write_evalsets(evalsets, suites=[s for s, _ in SUITES.values()])
    store = EmbeddingStore(args.cache_dir)

    def r1(target, task, preset=None):
        suite, keys = SUITES[task]
        rec = evaluate(target, suite, evalsets / suite, store=store, preset=preset,
                       progress=False)
        m = rec["metrics"]
        return {"mean": round(sum(m[k] for k in keys) / len(keys), 4),
                **{k: round(m[k], 4) for k in keys}}

    results = {"bases": {}, "fused": {}, "builds": {}}
    results["bases"]["mini:bind"] = {t: r1("mini:bind", t) for t in SUITES}
    results["bases"]["mini:clap"] = {"at": r1("mini:clap", "at")}
    results["bases"]["mini:vl"] = {"it": r1("mini:vl", "it")}

    hyper = parse_hyper(args.hyper)
    for name, expr in BONDS.items():
        if args.only and name not in args.only:
            continue
        path = args.out / (name.replace(" ", "_") + ".safetensors")
        t = time.perf_counter()
        fused = freebind.build(expr, output=path, cache_dir=args.cache_dir, seed=args.seed,
                               hyper=hyper, mini_pool_size=args.mini_pool_size,
                               progress=False)
        rep = fused.build_report
        results["builds"][name] = {
            "expression": expr, "bundle": str(path), "seconds": round(time.perf_counter() - t, 1),
            "jobs": [{"id": j.id, "tuples": j.tuples, "epochs": j.epochs,
                      "val_loss": j.val_loss, "seconds": j.seconds} for j in rep.jobs]}
        row = {}
        for preset in ("default", "versatile", "at-expertise"):
            row[preset] = {t: r1(str(path), t, preset) for t in SUITES}
        results["fused"][name] = row
        log(f"built {expr} in {results['builds'][name]['seconds']} s")

    bind, checks = results["bases"]["mini:bind"], []

    def check(text, value, bound, ok):
        checks.append({"check": text, "value": round(value, 4), "bound": round(bound, 4),
                       "ok": bool(ok)})

    f = results["fused"]
    if "combination" in f:
        at = f["combination"]["at-expertise"]["at"]["mean"]
        check("c(clap) AT-expertise: audio-text R@1 >= 1.5x mini:bind", at,
              1.5 * bind["at"]["mean"], at >= 1.5 * bind["at"]["mean"])
        clap = results["bases"]["mini:clap"]["at"]["mean"]
        check("c(clap) AT-expertise: audio-text R@1 >= 90% mini:clap", at, 0.9 * clap,
              at >= 0.9 * clap)
    if "displacement" in f:
        it = f["displacement"]["default"]["it"]["mean"]
        vl = results["bases"]["mini:vl"]["it"]["mean"]
        check("d(vl): image-text R@1 >= 90% mini:vl", it, 0.9 * vl, it >= 0.9 * vl)
        check("d(vl): image-text R@1 > mini:bind", it, bind["it"]["mean"],
              it > bind["it"]["mean"])
    for name, row in f.items():
        ai = row["versatile"]["ai"]["mean"]
        check(f"{name} versatile: audio-image R@1 >= 90% mini:bind", ai,
              0.9 * bind["ai"]["mean"], ai >= 0.9 * bind["ai"]["mean"])
    results["checks"] = checks

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\nR@1 (mean of both directions)       audio-text  image-text  audio-image")
        for ref, row in results["bases"].items():
            print(f"  {ref:<34}" + "".join(f"{row[t]['mean']:>12.3f}" if t in row else
                                            f"{'-':>12}" for t in SUITES))
        for name, row in f.items():
            for preset, vals in row.items():
                print(f"  {name + ' @' + preset:<34}" +
                      "".join(f"{vals[t]['mean']:>12.3f}" for t in SUITES))
        print()
        for c in checks:
            print(f"  [{'ok' if c['ok'] else 'MISS'}] {c['check']}: {c['value']:.3f} "
                  f"(bound {c['bound']:.3f})")
    return results


if __name__ == "__main__":
    main()
