"""Training a group of 7 projectors as one batched computation vs 7 separate models.

Both sides do the same work: 7 projectors (Linear–BatchNorm–ReLU–Linear–BatchNorm, L2
output), each trained for the same number of steps of symmetric InfoNCE over two modality
pairs with Adam on its own batches. *Batched* is freebind's ProjectorGroup (one [7, B, d]
computation, one optimiser); *separate* is 7 ``torch.nn.Sequential`` models trained one
after another, as a straightforward implementation would::

    .venv/bin/python benchmarks/bench_train.py                 # mini and paper-size configs
    .venv/bin/python benchmarks/bench_train.py --config mini --json

Target: batched ≥ 3× faster.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.nn import functional as F

CONFIGS = {
    # mini spaces: mini:bind (64) -> mini:vl (48), the quick start's sizes
    "mini": {"d_in": 64, "d_out": 48, "hidden": 256, "batch": 256, "steps": 60},
    # paper scale: IB (1024) -> InternVL-C (768), hidden 2048
    "paper": {"d_in": 1024, "d_out": 768, "hidden": 2048, "batch": 512, "steps": 4},
}
K = 7
TEMP = 0.05


def infonce(p, t):
    """Symmetric InfoNCE, p/t [..., B, d] -> per leading index."""
    logits = p @ t.transpose(-1, -2) / TEMP
    b = logits.shape[-1]
    labels = torch.arange(b).expand(*logits.shape[:-2], b).reshape(-1)
    l1 = F.cross_entropy(logits.reshape(-1, b), labels, reduction="none")
    l2 = F.cross_entropy(logits.transpose(-1, -2).reshape(-1, b), labels, reduction="none")
    return (0.5 * (l1 + l2)).reshape(*logits.shape[:-2], b).mean(-1)


def make_data(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = cfg["batch"] * 4
    src = [F.normalize(torch.randn(n, cfg["d_in"], generator=g), dim=-1) for _ in range(2)]
    tgt = [F.normalize(torch.randn(n, cfg["d_out"], generator=g), dim=-1) for _ in range(2)]
    idx = torch.randint(0, n, (cfg["steps"], K, cfg["batch"]), generator=g)
    return src, tgt, idx


def run_batched(cfg, data):
    from freebind.fusion.projector import ProjectorGroup

    src, tgt, idx = data
    group = ProjectorGroup(K, cfg["d_in"], cfg["d_out"], cfg["hidden"],
                           generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(group.parameters(), lr=1e-3)
    b = cfg["batch"]
    for step in range(cfg["steps"]):
        ids = idx[step]                                           # [K, B]
        x = torch.cat([s[ids] for s in src], dim=1)               # [K, 2B, d_in]
        y = group(x)
        loss = sum(infonce(y[:, i * b:(i + 1) * b], t[ids]) for i in range(2)
                   for t in tgt) / 4
        opt.zero_grad()
        loss.sum().backward()
        opt.step()


def run_separate(cfg, data):
    src, tgt, idx = data
    b = cfg["batch"]
    for k in range(K):
        torch.manual_seed(k)
        model = nn.Sequential(nn.Linear(cfg["d_in"], cfg["hidden"]),
                              nn.BatchNorm1d(cfg["hidden"]), nn.ReLU(),
                              nn.Linear(cfg["hidden"], cfg["d_out"]), nn.BatchNorm1d(cfg["d_out"]))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for step in range(cfg["steps"]):
            ids = idx[step, k]
            y = F.normalize(model(torch.cat([s[ids] for s in src])), dim=-1)
            loss = sum(infonce(y[i * b:(i + 1) * b], t[ids]) for i in range(2) for t in tgt) / 4
            opt.zero_grad()
            loss.backward()
            opt.step()


def bench(name, repeat=2):
    cfg = CONFIGS[name]
    data = make_data(cfg)
    small = {**cfg, "steps": 2}
    run_batched(small, make_data(small))  # warm-up
    run_separate(small, make_data(small))
    tb = min(_time(run_batched, cfg, data) for _ in range(repeat))
    ts = min(_time(run_separate, cfg, data) for _ in range(repeat))
    return {"config": name, **cfg, "projectors": K, "threads": torch.get_num_threads(),
            "batched_s": round(tb, 3), "separate_s": round(ts, 3), "speedup": round(ts / tb, 2),
            "target": ">= 3.0"}


def _time(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(CONFIGS) if args.config == "all" else [args.config]
    results = [bench(n, args.repeat) for n in names]
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"{r['config']:>6}: {K} projectors {r['d_in']}->{r['hidden']}->{r['d_out']}, "
                  f"batch {r['batch']}, {r['steps']} steps each: batched {r['batched_s']:.2f} s, "
                  f"separate {r['separate_s']:.2f} s -> {r['speedup']:.2f}x (target >= 3x)")
    return results


if __name__ == "__main__":
    main()
