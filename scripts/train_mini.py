#!/usr/bin/env python
"""Reproduce the mini world's shipped weights from the seed, then report held-out R@1 for
every modality pair of every space and the four role conditions.

    .venv/bin/python scripts/train_mini.py          # all five spaces -> freebind/mini/weights
    .venv/bin/python scripts/train_mini.py --out /tmp/w --spaces clap,clap2 --json

``3d`` (a point tower over mini:vl's frozen towers, Uni3D's role) trains after the others,
from the ``vl`` weights in ``--out`` when they are there, else the shipped ones.

Spaces train in parallel worker processes (``--jobs``, one torch thread each); the paired
training corpus is rendered once from the ``train`` random stream and shared through a
memory-mapped temporary folder (or ``--cache DIR`` to keep it between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from freebind.mini.training import CORPUS_SIZE, RECIPES, render_corpus  # noqa: E402
from freebind.mini.world import GENERATOR_VERSION, Event  # noqa: E402

#: Rough relative cost of each recipe, to start the longest first.
COST = {"vl": 4, "bind": 4, "clap": 2, "clap2": 1.5, "3d": 1}


def _corpus_dir(cache: Path, seed: int, n: int, workers: int) -> Path:
    tag = cache / "corpus.json"
    want = {"generator": GENERATOR_VERSION, "seed": seed, "n": n}
    if tag.is_file() and json.loads(tag.read_text()) == want:
        print(f"corpus: reusing {cache}", flush=True)
        return cache
    t0 = time.time()
    corpus = render_corpus(n, seed=seed, workers=workers)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "audio.npy", corpus["audio"])
    np.save(cache / "pixels.npy", corpus["pixels"])
    (cache / "events.json").write_text(json.dumps([asdict(e) for e in corpus["events"]]))
    tag.write_text(json.dumps(want))
    print(f"corpus: rendered {n} paired events in {time.time() - t0:.0f}s", flush=True)
    return cache


def _load_corpus(folder: Path) -> dict:
    return {"events": [Event(**e) for e in json.loads((folder / "events.json").read_text())],
            "audio": np.load(folder / "audio.npy", mmap_mode="r"),
            "pixels": np.load(folder / "pixels.npy", mmap_mode="r")}


def _train_one(args) -> tuple[str, float]:
    which, folder, out, seed, threads = args
    import torch

    torch.set_num_threads(threads)
    from freebind.mini.training import save_weights, train_space

    t0 = time.time()
    teacher = RECIPES[which].get("teacher")
    own = Path(out) / f"{teacher}.safetensors" if teacher else None
    overrides = {"teacher_weights": str(own)} if own is not None and own.is_file() else None
    tensors, meta = train_space(which, _load_corpus(Path(folder)), seed=seed,
                                log=lambda m: print(m, flush=True), overrides=overrides)
    save_weights(Path(out) / f"{which}.safetensors", tensors, meta)
    return which, time.time() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "freebind/mini/weights",
                   help="folder for <space>.safetensors (default: the shipped weights)")
    p.add_argument("--spaces", default=",".join(RECIPES),
                   help="comma-separated subset of: " + ", ".join(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="spaces trained in parallel (one torch thread each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument("--cache", type=Path, default=None, help="keep the rendered corpus here")
    p.add_argument("--items", type=int, default=500, help="held-out items for the report")
    p.add_argument("--skip-train", action="store_true", help="only measure the weights in --out")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    spaces = [s for s in a.spaces.split(",") if s]
    unknown = [s for s in spaces if s not in RECIPES]
    if unknown:
        p.error(f"unknown space(s): {', '.join(unknown)}")

    t_start = time.time()
    scratch = None
    if not a.skip_train and a.cache is None:   # the corpus in a temporary folder, removed
        scratch = tempfile.TemporaryDirectory(prefix="freebind-mini-corpus-")
    try:
        timings = _train(a, spaces, Path(scratch.name) if scratch else a.cache, t_start) \
            if not a.skip_train else {}
    finally:
        if scratch is not None:
            scratch.cleanup()
    return _report(a, timings)


def _train(a, spaces, cache: Path, t_start: float) -> dict:
    """Render (or reuse) the corpus in ``cache`` and train ``spaces``; their timings."""
    timings = {}
    folder = _corpus_dir(cache, a.seed, CORPUS_SIZE, workers=max(1, a.jobs))
    timings["corpus"] = time.time() - t_start
    tasks = [(w, str(folder), str(a.out), a.seed, a.threads)
             for w in sorted(spaces, key=lambda s: -COST[s]) if not RECIPES[w].get("teacher")]
    taught = [(w, str(folder), str(a.out), a.seed, a.threads)
              for w in spaces if RECIPES[w].get("teacher")]
    if a.jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(a.jobs, len(tasks))) as pool:
            for which, secs in pool.imap_unordered(_train_one, tasks):
                timings[which] = secs
                print(f"trained {which} in {secs:.0f}s", flush=True)
    else:
        for t in tasks:
            which, secs = _train_one(t)
            timings[which] = secs
    for t in taught:         # after their teachers
        which, secs = _train_one(t)
        timings[which] = secs
    timings["train_total"] = time.time() - t_start
    return timings


def _report(a, timings: dict) -> int:
    """Measure the weights in ``a.out`` and print the report."""
    from freebind.mini.roles import measure
    from freebind.mini.spaces import load_file

    t0 = time.time()
    loaded = {f"mini:{w}": load_file(a.out / f"{w}.safetensors", name=f"mini:{w}")
              for w in RECIPES if (a.out / f"{w}.safetensors").is_file()}
    report = measure(loaded, n=a.items, seed=a.seed)
    timings["measure"] = time.time() - t0
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        from freebind.mini.report import render_report

        render_report(report)
    return 0 if report.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
