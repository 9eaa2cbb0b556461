"""Customised inference, the paper's coarse-to-fine strategy, on cached embeddings.

* **coarse** — every on/off combination of the bundle's bonds, at the bundle's factors;
  the combination with the best balanced score is kept for the fine stage;
* **fine** — a grid over factor overrides (``a=0:1:0.1``, ``t=0:1:0.1``, ``b2.a=…``), with
  the coarse switches.

Each point fuses the cached base embeddings (projections are memoised, so a point costs a
mix and a normalisation) and scores every suite. Tasks are the suites' headline metrics
(``audiocaps:t2a_R@1``, ``esc50:acc1``, …). The per-task best is the grid point with the
highest value; the balanced ("versatile") choice is the point with the highest mean, over
tasks, of the metric scaled to [0, 1] across the grid, so that every task weighs the same.
Changes are reported against the bundle's base space alone (the unified space before any
bond), as in the paper's factor analysis.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from freebind.errors import UsageError

MAX_GRID_POINTS = 10_000
MAX_COARSE_BONDS = 6


def parse_grid(spec: str) -> tuple[str, list[float]]:
    """``a=0:1:0.1`` (start:stop:step, stop included) or ``a=0,0.5,1`` → ``("a", values)``."""
    from freebind.factors import parse_override

    key, eq, body = spec.partition("=")
    key = key.strip()
    if not eq or not key or not body.strip():
        raise UsageError(f"--grid {spec!r}: expected KEY=START:STOP:STEP or KEY=V1,V2,…")
    try:
        if ":" in body:
            parts = [float(x) for x in body.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            start, stop, step = parts
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 10) for i in range(n)]
        else:
            values = [float(x) for x in body.split(",")]
    except ValueError:
        raise UsageError(f"--grid {spec!r}: values must be START:STOP:STEP with STEP > 0 and "
                         "STOP ≥ START, or a comma-separated list") from None
    for v in values:
        ov = parse_override(f"{key}={v}")
        if ov.modality is None:
            raise UsageError(f"--grid {spec!r}: {key!r} is not a factor (a, t, i, b2.a, …)")
    return key, values


class MemoProjectors(dict):
    """Projector groups whose ``mixture`` results are memoised by input content: sweeping
    factors re-projects nothing that an earlier point already projected."""

    class _Memo:
        def __init__(self, group):
            self.group = group
            self.cache: dict[tuple, Any] = {}

        def mixture(self, x):
            import torch

            arr = x.detach().cpu().contiguous().numpy()
            key = (tuple(arr.shape), hashlib.blake2b(arr.tobytes(), digest_size=16).digest())
            if key not in self.cache:
                if len(self.cache) > 64:
                    self.cache.clear()
                with torch.no_grad():
                    self.cache[key] = self.group.mixture(x)
            return self.cache[key]

    def __init__(self, projectors):
        super().__init__({k: self._Memo(g) for k, g in projectors.items()})


@dataclass
class Point:
    overrides: list[str]
    values: dict[str, float]                 # grid key -> value ({} for coarse points)
    metrics: dict[str, float] = field(default_factory=dict)   # "suite:metric" -> value


@dataclass
class TuneResult:
    tasks: list[str]
    base: dict[str, float]
    coarse: list[Point]
    coarse_choice: list[str]
    grid_keys: list[str]
    grid_values: list[list[float]]
    fine: list[Point]
    best: dict[str, Point]
    versatile: Point
    presets: dict[str, list[str]]

    def to_dict(self) -> dict[str, Any]:
        def pt(p: Point):
            return {"overrides": p.overrides, "values": p.values, "metrics": p.metrics}

        return {
            "tasks": self.tasks, "base": self.base,
            "coarse": [pt(p) for p in self.coarse], "coarse_choice": self.coarse_choice,
            "grid": {k: v for k, v in zip(self.grid_keys, self.grid_values)},
            "fine": [pt(p) for p in self.fine],
            "best": {t: pt(p) for t, p in self.best.items()},
            "versatile": pt(self.versatile), "presets": self.presets,
        }


def balanced_scores(points: Sequence[Point], tasks: Sequence[str]) -> np.ndarray:
    """Mean over tasks of each point's metric scaled to [0, 1] across ``points``."""
    m = np.array([[p.metrics[t] for t in tasks] for p in points], dtype=float)
    lo, hi = m.min(axis=0), m.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return ((m - lo) / span).mean(axis=1)


def task_preset_name(prefix: str, task: str) -> str:
    suite, _, metric = task.partition(":")
    direction = metric.split("_")[0] if "_" in metric else ""
    return f"{prefix}-{suite}" + (f"-{direction}" if direction else "")


def tune(fused, suites: Sequence[tuple[str, Any]], grids: Sequence[tuple[str, list[float]]],
         tasks_of: Callable[[str, dict], list[str]], score_base: Callable[[str], dict],
         score: Callable[[str, dict], dict], fuse: Callable[[list[str]], dict],
         prefix: str = "tuned", progress: bool = True) -> TuneResult:
    """Run coarse and fine stages. The callables keep this module free of I/O:
    ``fuse(overrides) -> per-suite fused embeddings``, ``score(suite, fused) -> metrics``,
    ``score_base(suite) -> metrics`` of the base space, ``tasks_of(suite, metrics)``."""
    from freebind.factors import bond_nodes

    n_points = int(np.prod([len(v) for _, v in grids])) if grids else 0
    if n_points > MAX_GRID_POINTS:
        raise UsageError(f"the grid has {n_points} points (limit {MAX_GRID_POINTS})")
    names = [s for s, _ in suites]
    base_metrics = {s: score_base(s) for s in names}
    tasks = [f"{s}:{m}" for s in names for m in tasks_of(s, base_metrics[s])]
    if not tasks:
        raise UsageError("the chosen suites report no headline metric to tune for")
    base = {t: base_metrics[t.split(":", 1)[0]][t.split(":", 1)[1]] for t in tasks}

    def evaluate(overrides: list[str], values: dict) -> Point:
        fused_emb = fuse(overrides)
        metrics = {}
        for s in names:
            got = score(s, fused_emb)
            for t in tasks:
                if t.startswith(s + ":"):
                    metrics[t] = got[t.split(":", 1)[1]]
        return Point(overrides, values, metrics)

    bonds = [b["id"] for b in bond_nodes(fused.graph)]
    if len(bonds) > MAX_COARSE_BONDS:
        combos = [()]                      # too many combinations: all bonds on
    else:
        combos = [c for r in range(len(bonds) + 1) for c in itertools.combinations(bonds, r)]
    bar = _bar(len(combos) + n_points, progress)
    coarse = []
    for off in combos:
        coarse.append(evaluate([f"{b}=off" for b in off], {}))
        bar.update()
    choice = coarse[int(np.argmax(balanced_scores(coarse, tasks)))] if len(coarse) > 1 \
        else coarse[0]
    switches = list(choice.overrides)

    fine = []
    keys = [k for k, _ in grids]
    for combo in itertools.product(*[v for _, v in grids]):
        values = dict(zip(keys, combo))
        fine.append(evaluate(switches + [f"{k}={_fmt(v)}" for k, v in values.items()], values))
        bar.update()
    bar.close()
    candidates = fine or coarse
    best = {t: max(candidates, key=lambda p: p.metrics[t]) for t in tasks}
    versatile = candidates[int(np.argmax(balanced_scores(candidates, tasks)))]
    presets = {f"{prefix}-versatile": versatile.overrides}
    for t, p in best.items():
        presets[task_preset_name(prefix, t)] = p.overrides
    return TuneResult(tasks, base, coarse, switches, keys, [list(v) for _, v in grids], fine,
                      best, versatile, presets)


def _fmt(v: float) -> str:
    return f"{v:g}"


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="tune", unit="pt", disable=not progress, leave=False)
