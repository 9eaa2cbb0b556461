"""Paper scale on one machine: pseudo tuples and one training epoch on pools in the store.

Three modes, each printing per stage the time, the work done (FLOP), the achieved FLOP/s,
the rate of a bare matmul / bmm of the same shapes measured in the same run (the floor),
their ratio, the peak RSS and the peak device memory (``--json``: the same as data)::

    # paper layout (IB 1024 audio/image/text, CLAP_g and CLAP_m 512 audio/text, InternVL-C
    # 768 image/text): N synthetic items per modality written into an EmbeddingStore
    # (float16 by default), then the pseudo tuples of IB + d(InternVL) streamed from the
    # memory-mapped store for Q queries per modality, then one epoch of its 7 projectors
    .venv/bin/python benchmarks/bench_scale.py --items 200000 [--queries 2000] [--json]

    # one retrieval Q x N x D, in memory on the device (what benchmarks/device.sh runs)
    .venv/bin/python benchmarks/bench_scale.py --mode retrieve --queries 2000000 \\
        --items 2300000 --dim 1024 --sim bf16 --device cuda

    # one training epoch of 7 projectors IB -> InternVL on T synthetic tuples
    .venv/bin/python benchmarks/bench_scale.py --mode train --tuples 1000000 --device cuda \\
        --amp bf16 --batch 4096

Targets: pseudo tuples >= 0.7x the bare matmul rate, training >= 0.5x the bare bmm rate.
The store folder is a temporary one (removed at the end) unless ``--root`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: The paper's spaces and the modalities each one embeds.
PAPER = {"IB": (1024, ("audio", "image", "text")), "CLAP_g": (512, ("audio", "text")),
         "CLAP_m": (512, ("audio", "text")), "InternVL": (768, ("image", "text"))}
MODALITIES = ("audio", "image", "text")
TOPK, TAU, TEMP = 5, 0.05, 0.05


# ------------------------------------------------------------------------------ meters

def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Meter:
    """Peak RSS (sampled every few ms) and peak device memory over a stage."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.t0
        self.cpu_seconds = time.process_time() - self.c0
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.device_peak = (int(torch.cuda.max_memory_allocated(self.device))
                            if self.device.type == "cuda" else None)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_rate(fn, flop: float, device, min_seconds: float = 2.0,
               max_reps: int = 200) -> tuple[float, float]:
    """(FLOP per wall second, FLOP per CPU second) of ``fn``: one warm-up call, then
    repeated for at least ``min_seconds``."""
    fn()
    _sync(device)
    reps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        reps += 1
        _sync(device)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds or reps >= max_reps:
            cpu = max(1e-9, time.process_time() - c0)
            return flop * reps / elapsed, flop * reps / cpu


def matmul_floor(q: int, n: int, d: int, dtype, device) -> float:
    """Bare ``[q, d] @ [d, n]`` rate in ``dtype`` (the retrieval's block shape)."""
    import torch

    a = torch.randn(q, d, device=device).to(dtype)
    b = torch.randn(d, n, device=device).to(dtype)
    return timed_rate(lambda: a @ b, 2.0 * q * n * d, device)


def bmm_floor(k: int, rows: int, d_in: int, hidden: int, d_out: int, dtype, device) -> float:
    """Bare bmm rate of the projector group's two layers ``[K, rows, d_in] @ [K, d_in, H]``
    and ``[K, rows, H] @ [K, H, d_out]`` (the training step's shapes)."""
    import torch

    x = torch.randn(k, rows, d_in, device=device).to(dtype)
    w1 = torch.randn(k, d_in, hidden, device=device).to(dtype)
    h = torch.randn(k, rows, hidden, device=device).to(dtype)
    w2 = torch.randn(k, hidden, d_out, device=device).to(dtype)
    flop = 2.0 * k * rows * hidden * (d_in + d_out)
    return timed_rate(lambda: (torch.bmm(x, w1), torch.bmm(h, w2)), flop, device)


def train_flop(k: int, batch: int, n_src: int, pairs: int, d_in: int, hidden: int,
               d_out: int, backward: bool = True) -> float:
    """Matmul FLOP of one training step: the forward's two layers and B x B logits, and
    the backward's (the first layer needs no input gradient: 1x; the others 2x)."""
    rows = n_src * batch
    l1 = 2.0 * k * rows * d_in * hidden
    l2 = 2.0 * k * rows * hidden * d_out
    logits = 2.0 * k * batch * batch * d_out * pairs
    if not backward:
        return l1 + l2 + logits
    return 2.0 * l1 + 3.0 * l2 + 3.0 * logits


def row(stage, meter, flop=None, floor=None, **extra) -> dict:
    rate = flop / meter.seconds if flop and meter.seconds > 0 else None
    wall_floor, cpu_floor = floor if floor else (None, None)
    ratio_wall = rate / wall_floor if rate and wall_floor else None
    ratio_cpu = (flop / meter.cpu_seconds / cpu_floor
                 if flop and cpu_floor and meter.cpu_seconds > 0 else None)
    # on the CPU the ratio of CPU-time rates: other jobs sharing the cores slow both
    # sides alike; on a device the wall-clock one
    ratio = ratio_wall if meter.device.type != "cpu" else ratio_cpu
    out = {"stage": stage, "seconds": round(meter.seconds, 3),
           "cpu_seconds": round(meter.cpu_seconds, 3),
           "flop": flop, "flop_per_s": rate, "floor_flop_per_s": wall_floor,
           "ratio": ratio, "ratio_wall": ratio_wall, "ratio_cpu": ratio_cpu,
           "peak_rss_mb": round(meter.peak / 2**20, 1),
           "peak_device_mb": (round(meter.device_peak / 2**20, 1)
                              if meter.device_peak is not None else None)}
    out.update(extra)
    return out


# ------------------------------------------------------------------------------ data

def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def item_keys(modality: str, n: int) -> list[str]:
    return [hashlib.sha256(f"bench-scale\0{modality}\0{i}".encode()).hexdigest()
            for i in range(n)]


def bench_space(name: str, dim: int, modalities) -> SimpleNamespace:
    return SimpleNamespace(name=f"bench-{name}", fingerprint=f"bench-scale:{name}:{dim}",
                           dim=dim, modalities=tuple(modalities))


def write_paper_pools(store, n: int, seed: int, chunk: int = 16384):
    """N synthetic unit rows per (space, modality) written into ``store``; returns views."""
    views = {}
    keys = {m: item_keys(m, n) for m in MODALITIES}
    for s_i, (name, (dim, mods)) in enumerate(PAPER.items()):
        space = bench_space(name, dim, mods)
        for m_i, m in enumerate(mods):
            rng = np.random.default_rng([seed, s_i, m_i])
            if store.cached(space, m) >= n:     # a kept store (--root) written before
                views.setdefault(name, {})[m] = store.view(space, m, keys[m])
                continue
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                store.write(space, m, keys[m][start:stop], unit_rows(rng, stop - start, dim))
            views.setdefault(name, {})[m] = store.view(space, m, keys[m])
    return views


def float32_bytes(n: int) -> int:
    return n * sum(dim * len(mods) for dim, mods in PAPER.values()) * 4


# ------------------------------------------------------------------------------ modes

def run_paper(args, device) -> list[dict]:
    import torch

    from freebind.build import pseudo_tuples as pseudo
    from freebind.algebra import data_modes
    from freebind.data.store import EmbeddingStore
    from freebind.build.projector_training import train_group

    rows = []
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        store = EmbeddingStore(root, shard_size=args.shard_size, dtype=args.store_dtype)
        with Meter(device) as m:
            views = write_paper_pools(store, args.items, args.seed)
        disk = sum(p.stat().st_size for p in root.rglob("*.npz"))
        rows.append(row("write pools", m, items=args.items,
                        float32_gb=round(float32_bytes(args.items) / 1e9, 2),
                        store_gb=round(disk / 1e9, 2), store_dtype=args.store_dtype))

        pools = {"InternVL": views["InternVL"], "IB": views["IB"]}
        budget = int(args.budget_mb) << 20
        q = min(args.queries, args.items)
        with Meter(device) as m:
            tuples = pseudo.build(pools, expert="InternVL", base="IB", modalities=MODALITIES,
                                  topk=TOPK, tau=TAU, seed=args.seed, max_queries=q,
                                  device=device, sim=args.sim, budget_bytes=budget)
        hops = {}
        for (qm, tm), fill in tuples.fills.items():
            for space, a, b in fill.route.hops:
                hops[(space, a, b)] = PAPER[space][0]
        flop = sum(2.0 * q * args.items * d for d in hops.values())
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.sim, torch.float32)
        block = min(args.items, 65536)
        floors = [matmul_floor(min(q, 4096), block, d, dtype, device)
                  for d in sorted(set(hops.values()))]
        floor = tuple(float(np.mean([f[i] for f in floors])) for i in (0, 1))
        rows.append(row("pseudo tuples", m, flop, floor, queries=q, hops=len(hops),
                        tuples=len(tuples), budget_mb=args.budget_mb, sim=args.sim))

        modes = data_modes(MODALITIES)
        hyper = {"epochs": 1, "batch": args.batch, "hidden": args.hidden, "seed": args.seed,
                 "amp": None if args.amp == "none" else args.amp}
        source, target = views["IB"], views["InternVL"]
        with Meter(device) as m:
            result = train_group(tuples, source, target, modes, hyper, device=device,
                                 materialise_bytes=budget)
        rows.append(_train_row(m, result, tuples, modes, args, source, target, device))
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _train_row(m, result, tuples, modes, args, source, target, device):
    import torch

    d_in = int(next(iter(source.values())).shape[1])
    d_out = int(next(iter(target.values())).shape[1])
    n_src = len([x for x in tuples.modalities if x in source])
    pairs, k = len(result.pairs), len(modes)
    step = train_flop(k, result.batch, n_src, pairs, d_in, args.hidden, d_out)
    val = train_flop(k, result.val_batch, n_src, pairs, d_in, args.hidden, d_out,
                     backward=False)
    flop = result.epochs * (result.steps * step + result.val_batches * val)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp, torch.float32)
    floor = bmm_floor(k, n_src * result.batch, d_in, args.hidden, d_out, dtype, device)
    epoch = row("train 1 epoch", m, flop, floor, tuples=len(tuples), projectors=k,
                batch=result.batch, steps=result.steps, amp=args.amp)
    epoch["pipeline_peak_rss_mb"] = round(_maxrss() / 2**20, 1)
    inter = interleaved_step_ratio(k, result.batch, n_src, result.pairs, d_in, args.hidden,
                                   d_out, dtype, device, args)
    epoch["epoch_ratio"] = epoch["ratio"]
    epoch.update(inter)
    epoch["ratio"] = inter["step_ratio"]
    return epoch


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reference_forward(group, x):
    """The projector group's training forward as plain autograd ops (bias, two-pass
    BatchNorm statistics, ReLU, normalisation each a pass), as training ran before its
    step was fused."""
    import torch
    from torch.nn import functional as F

    from freebind.fusion.projector import _batch_norm

    h = torch.bmm(x, group.w1) + group.b1[:, None, :]
    h = F.relu(_batch_norm(h, group.bn1.running_mean, group.bn1.running_var, group.bn1.weight,
                           group.bn1.bias, True, group.momentum))
    y = torch.bmm(h, group.w2) + group.b2[:, None, :]
    y = _batch_norm(y, group.bn2.running_mean, group.bn2.running_var, group.bn2.weight,
                    group.bn2.bias, True, group.momentum)
    return F.normalize(y, dim=-1)


class _Reference:
    """A group whose training forward is :func:`_reference_forward`."""

    def __init__(self, group):
        self.group = group

    def __call__(self, x):
        return _reference_forward(self.group, x)


def interleaved_step_ratio(k, batch, n_src, pairs, d_in, hidden, d_out, dtype, device, args):
    """The training step's rate over the bare bmm rate of its two layers, measured in
    alternation (floor, step, reference step) over ``args.rounds`` rounds on one synthetic
    batch of the real shapes: load on a shared machine hits both sides of each round alike;
    the median of the rounds' ratios is reported (CPU-time rates on the CPU, wall-clock on a
    device). The reference is the unfused step (plain autograd ops, single-tensor Adam)."""
    import statistics

    import torch
    from torch.nn import functional as F

    from freebind.fusion.projector import ProjectorGroup
    from freebind.build.projector_training import _adam, _infonce, train_step

    g = torch.Generator().manual_seed(args.seed)
    src_mods = sorted({a for a, _ in pairs})
    tgt_mods = sorted({t for _, t in pairs})
    src = {m: F.normalize(torch.randn(k, batch, d_in, generator=g), dim=-1).to(device)
           for m in src_mods}
    tgt = {m: F.normalize(torch.randn(k, batch, d_out, generator=g), dim=-1).to(device)
           for m in tgt_mods}
    amp = None if args.amp == "none" else args.amp
    group = ProjectorGroup(k, d_in, d_out, hidden=hidden, generator=g).to(device).train()
    opt = _adam(group.parameters(), lr=1e-4)
    ref_group = group   # the same weights; its own optimiser (single-tensor Adam)
    ref_opt = torch.optim.Adam(ref_group.parameters(), lr=1e-4,
                               **({"foreach": False} if device.type == "cpu" else {}))

    def ref_step():
        loss = _infonce(_Reference(ref_group), src, tgt, pairs, TEMP, amp)
        ref_opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        ref_opt.step()

    rows = n_src * batch
    x = torch.randn(k, rows, d_in, device=device).to(dtype)
    w1 = torch.randn(k, d_in, hidden, device=device).to(dtype)
    h = torch.randn(k, rows, hidden, device=device).to(dtype)
    w2 = torch.randn(k, hidden, d_out, device=device).to(dtype)
    floor_flop = 2.0 * k * rows * hidden * (d_in + d_out)
    step_flop = train_flop(k, batch, n_src, len(pairs), d_in, hidden, d_out)

    def rate(fn, flop, reps):
        fn()
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(reps):
            fn()
        _sync(device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return flop * reps / (cpu if device.type == "cpu" else wall)

    reps = args.step_reps
    step, ref = [], []
    for _ in range(args.rounds):
        f = rate(lambda: (torch.bmm(x, w1), torch.bmm(h, w2)), floor_flop, reps)
        step.append(rate(lambda: train_step(group, opt, src, tgt, pairs, TEMP, amp),
                         step_flop, reps) / f)
        if args.reference:
            ref.append(rate(ref_step, step_flop, reps) / f)
    return {"step_ratio": statistics.median(step), "step_ratios": [round(r, 3) for r in step],
            "reference_ratio": statistics.median(ref) if ref else None,
            "reference_ratios": [round(r, 3) for r in ref], "rounds": args.rounds}


def run_retrieve(args, device) -> list[dict]:
    import torch

    from freebind.build.pseudo_tuples import topk_retrieve

    g = torch.Generator(device=device).manual_seed(args.seed)
    with Meter(device) as m:
        queries = _unit(args.queries, args.dim, g, device)
        pool = _unit(args.items, args.dim, g, device)
    rows = [row("synthetic data", m, queries=args.queries, items=args.items, dim=args.dim)]
    budget = int(args.budget_mb) << 20 if args.budget_mb else None
    with Meter(device) as m:
        index, _ = topk_retrieve(queries, pool, TOPK, TAU, device=device, sim=args.sim,
                                 budget_bytes=budget, candidates=args.candidates)
    flop = 2.0 * args.queries * args.items * args.dim
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.sim, torch.float32)
    floor = matmul_floor(min(args.queries, 4096), min(args.items, 1 << 20), args.dim, dtype,
                         device)
    rows.append(row("pseudo tuples", m, flop, floor, queries=args.queries, items=args.items,
                    dim=args.dim, sim=args.sim, rescored=args.sim != "fp32"))
    return rows


def _unit(n, d, g, device, chunk=1 << 18):
    import torch
    from torch.nn import functional as F

    out = torch.empty(n, d, device=device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        out[s:e] = F.normalize(torch.randn(e - s, d, generator=g, device=device), dim=-1)
    return out


def run_train(args, device) -> list[dict]:
    import torch

    from freebind.algebra import data_modes
    from freebind.build.pseudo_tuples import Fill, PseudoTuples, Route
    from freebind.build.projector_training import train_group

    g = torch.Generator(device=device).manual_seed(args.seed)
    n = args.items
    with Meter(device) as m:
        source = {mm: _unit(n, PAPER["IB"][0], g, device) for mm in MODALITIES}
        target = {mm: _unit(n, PAPER["InternVL"][0], g, device) for mm in ("image", "text")}
        rng = np.random.default_rng(args.seed)
        per = args.tuples // len(MODALITIES)
        tuples = PseudoTuples(MODALITIES, {q: rng.integers(0, n, per) for q in MODALITIES},
                              topk=TOPK, tau=TAU)
        for q in MODALITIES:
            for t in MODALITIES:
                if t != q:
                    w = rng.random((per, TOPK), dtype=np.float32)
                    tuples.fills[(q, t)] = Fill(rng.integers(0, n, (per, TOPK)),
                                                w / w.sum(1, keepdims=True),
                                                Route(q, t, (("IB", q, t),)))
    rows = [row("synthetic data", m, tuples=len(tuples), items=n)]
    modes = data_modes(MODALITIES)
    hyper = {"epochs": 1, "batch": args.batch, "hidden": args.hidden, "seed": args.seed,
             "amp": None if args.amp == "none" else args.amp}
    budget = (int(args.budget_mb) << 20) if args.budget_mb else 64 << 30
    with Meter(device) as m:
        result = train_group(tuples, source, target, modes, hyper, device=device,
                             materialise_bytes=budget)
    rows.append(_train_row(m, result, tuples, modes, args, source, target, device))
    return rows


# ------------------------------------------------------------------------------ main

def render(rows, out=sys.stdout) -> None:
    head = (f"{'stage':<16} {'seconds':>9} {'GFLOP/s':>10} {'floor GFLOP/s':>14} "
            f"{'ratio':>6} {'peak RSS MB':>12} {'peak dev MB':>12}")
    print(head, file=out)
    for r in rows:
        fmt = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        print(f"{r['stage']:<16} {r['seconds']:>9.2f} "
              f"{fmt(r['flop_per_s'] and r['flop_per_s'] / 1e9):>10} "
              f"{fmt(r['floor_flop_per_s'] and r['floor_flop_per_s'] / 1e9):>14} "
              f"{fmt(r['ratio'], 2):>6} {r['peak_rss_mb']:>12.1f} "
              f"{fmt(r['peak_device_mb']):>12}", file=out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("paper", "retrieve", "train"), default="paper")
    ap.add_argument("--items", type=int, default=20000, help="pool items per modality")
    ap.add_argument("--queries", type=int, default=2000,
                    help="queries per modality (paper) or in all (retrieve)")
    ap.add_argument("--tuples", type=int, default=60000, help="tuples (train mode)")
    ap.add_argument("--dim", type=int, default=1024, help="embedding dim (retrieve mode)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sim", default="fp32", choices=("fp32", "tf32", "bf16", "fp16"))
    ap.add_argument("--candidates", type=int, default=None,
                    help="candidates re-scored in float32 (default max(2k, k+16))")
    ap.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    ap.add_argument("--batch", type=int, default=256,
                    help="tuples per projector per step (activations: about 32 x K x "
                         "source modalities x batch x hidden bytes)")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--budget-mb", type=int, default=1024,
                    help="memory the retrieval and training data may hold (MiB; 0: the "
                         "device's default)")
    ap.add_argument("--store-dtype", default="fp16", choices=("fp16", "fp32"))
    ap.add_argument("--shard-size", type=int, default=8192)
    ap.add_argument("--root", default=None, help="store folder to write (kept)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating floor/step rounds of the training ratio (median)")
    ap.add_argument("--step-reps", type=int, default=2, help="calls per side and round")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the unfused reference step in the training rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # the optimiser's first construction imports torch's compiler stack (seconds): not
    # training time
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    if args.mode == "paper" and not args.budget_mb:
        args.budget_mb = 1024
    rows = {"paper": run_paper, "retrieve": run_retrieve, "train": run_train}[args.mode](
        args, device)
    ru = _maxrss()
    # the pipeline's peak: before the training ratio's interleaved rounds (their synthetic
    # batch, optimiser states and the reference step's activations are the benchmark's own)
    pipeline = next((r["pipeline_peak_rss_mb"] for r in rows
                     if "pipeline_peak_rss_mb" in r), None)
    summary = {"mode": args.mode, "device": str(device),
               "device_name": (torch.cuda.get_device_name(device)
                               if device.type == "cuda" else "cpu"),
               "threads": torch.get_num_threads(), "stages": rows,
               "peak_rss_mb": pipeline if pipeline is not None else round(ru / 2**20, 1),
               "peak_rss_with_rounds_mb": round(ru / 2**20, 1),
               "pseudo_floor_ratio": next((r["ratio"] for r in rows
                                           if r["stage"] == "pseudo tuples"), None),
               "train_floor_ratio": next((r["ratio"] for r in rows
                                          if r["stage"].startswith("train")), None),
               "train_reference_ratio": next((r.get("reference_ratio") for r in rows
                                              if r["stage"].startswith("train")), None)}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        render(rows)
        train = next((r for r in rows if r["stage"].startswith("train")), None)
        if train is not None:
            print(f"training step vs bare bmm, {train['rounds']} interleaved rounds: median "
                  f"{_r(train['step_ratio'])} {train['step_ratios']}; unfused reference "
                  f"step {_r(train['reference_ratio'])} {train['reference_ratios']}; whole "
                  f"epoch (floor timed after it) {_r(train['epoch_ratio'])}")
        print(f"peak RSS of the run: {summary['peak_rss_mb']:.0f} MB (with the training "
              f"rounds {summary['peak_rss_with_rounds_mb']:.0f} MB); pseudo tuples "
              f"{_r(summary['pseudo_floor_ratio'])} x bare matmul, training "
              f"{_r(summary['train_floor_ratio'])} x bare bmm")
    return 0


def _r(v):
    return "-" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    sys.exit(main())
