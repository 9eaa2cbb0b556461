"""Time `freebind tune`'s coarse + 11x11 fine stages at the paper's dimensions (IB 1024-d +
c(CLAP_g, CLAP_m) 512-d, 7 projectors each, hidden 2048) on a synthetic 1,000-clip /
5,000-caption retrieval suite, with random cached embeddings (no encoder is loaded): the
suite loader and the embedding step are replaced by in-memory stand-ins, so only tuning is
timed. Prints the time per grid point against one plain evaluation of the same suite.

    .venv/bin/python benchmarks/bench_tune.py"""

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import freebind
from freebind.evaluate import runner
from freebind.evaluate.suites.tasks import EvalSet, RetrievalTask
from freebind.fusion.fused import FusedSpace
from freebind.fusion.projector import ProjectorGroup


def main(n_items=1000, captions_per_item=5, expression="IB + c(CLAP_g, CLAP_m)"):
    plan = freebind.plan(expression)
    torch.manual_seed(0)
    groups = {j.id: ProjectorGroup(len(j.data_modes), j.source_dim, j.target_dim,
                                   hidden=2048).eval() for j in plan.jobs}
    path = Path(tempfile.mkdtemp()) / "bench_tune.safetensors"
    FusedSpace.from_plan(plan, groups).save(path)
    task = RetrievalTask("audio", "text", [f"a{i}" for i in range(n_items)],
                         [f"t{i}" for i in range(n_items * captions_per_item)],
                         np.repeat(np.arange(n_items), captions_per_item))
    es = EvalSet("audiocaps", Path("."), [task])
    items = {"audio": task.items, "text": task.captions}
    rng = np.random.default_rng(0)
    rows = {ref: {m: rng.standard_normal((len(items[m]), meta["dim"])).astype(np.float32)
                  for m in items if m in meta["modalities"]}
            for ref, meta in plan.spaces.items()}
    runner.embed_suite = lambda target, evalset, **k: runner.Embedded(es, items, rows)
    runner.load_suite = lambda name, folder, **o: es
    target = runner.load_target(str(path))
    grid = [i / 10 for i in range(11)]
    t0 = time.perf_counter()
    res, _ = runner.tune_target(target, [("audiocaps", ".", {})], [("a", grid), ("t", grid)],
                                progress=False)
    print(f"{expression}: {len(res.coarse)} coarse + {len(res.fine)} fine points over "
          f"{n_items} items / {n_items * captions_per_item} captions in "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
