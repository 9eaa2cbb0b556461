"""Customised inference, the paper's coarse-to-fine strategy, on cached embeddings.

* **coarse** — every on/off combination of the bundle's bonds, at the bundle's factors;
  the combination with the best balanced score is kept for the fine stage;
* **fine** — a grid over factor overrides (``a=0:1:0.1``, ``t=0:1:0.1``, ``b2.a=…``), with
  the coarse switches.

The presets are chosen among every point evaluated, the coarse rows included, so no preset
is worse on its task than a row the report shows. A grid key without a bond (``t=``) sets
that factor in every bond that mixes the modality; :func:`grid_scope` names them and the
report says so.

Each point fuses the cached base embeddings (projections are memoised, so a point costs a
mix and a normalisation) and scores every suite. Tasks are the suites' headline metrics
(``audiocaps:t2a_R@1``, ``esc50:acc1``, …). The per-task best is the grid point with the
highest value; the balanced ("versatile") choice is the point with the highest mean, over
tasks, of the metric scaled to [0, 1] across the grid, so that every task weighs the same.
Changes are reported against the bundle's base space alone (the unified space before any
bond), as in the paper's factor analysis.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from freebind.util.errors import UsageError

MAX_GRID_POINTS = 10_000
MAX_COARSE_BONDS = 6


def parse_grid(spec: str) -> tuple[str, list[float]]:
    """``a=0:1:0.1`` (start:stop:step, stop included) or ``a=0,0.5,1`` → ``("a", values)``."""
    from freebind.fusion.factors import parse_override

    key, eq, body = spec.partition("=")
    key = key.strip()
    if not eq or not key or not body.strip():
        raise UsageError(f"grid {spec!r}: expected KEY=START:STOP:STEP or KEY=V1,V2,…")
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
        raise UsageError(f"grid {spec!r}: values must be START:STOP:STEP with STEP > 0 and "
                         "STOP ≥ START, or a comma-separated list") from None
    for v in values:
        ov = parse_override(f"{key}={v}")
        if ov.modality is None:
            raise UsageError(f"grid {spec!r}: {key!r} is not a factor (a, t, i, b2.a, …)")
    return key, values


def grid_scope(graph: dict, key: str) -> list[str]:
    """The bond factors a grid key sets, e.g. ``["b1.text", "b2.text"]`` for ``t`` in a
    bundle with two bonds that mix text (``b2.t`` → ``["b2.text"]``)."""
    from freebind.fusion.factors import _targets, bond_nodes, parse_override

    ov = parse_override(f"{key}=0")
    return [f"{b['id']}.{ov.modality}" for b in _targets(bond_nodes(graph), ov, strict=False)
            if ov.modality in b["factors"]]


def scope_notes(scope: dict[str, list[str]]) -> list[str]:
    """One line per grid key that sets several bonds: ``t= sets b1.text and b2.text
    together; …``."""
    def joined(items):
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

    return [f"{k}= sets {joined(v)} together; name a bond, e.g. {v[-1].split('.')[0]}.{k}=, to "
            f"move one" for k, v in scope.items() if len(v) > 1]


class MemoProjectors(dict):
    """Projector groups whose ``mixture`` results are memoised by input content: sweeping
    factors re-projects nothing that an earlier point already projected.

    The groups keep their ``k``/``hidden``/``d_in``/``d_out``, so fusion through them is
    chunked by :func:`~freebind.fusion.graph.fusion_chunk_rows` like fusion through the bare
    groups (1,092 rows for K=7, H=2048, 1024-d under the 256 MiB budget). What is remembered is
    bounded too: at most :attr:`ENTRIES` chunk outputs, and no more of them than fit in
    ``budget_bytes`` (default the fusion budget), so a large suite re-projects rather than
    keeping every chunk's output."""

    ENTRIES = 64

    def __init__(self, projectors, budget_bytes: int | None = None):
        from freebind.fusion.memo import remembered

        self.entries = memo_entries(projectors, budget_bytes, self.ENTRIES)
        super().__init__(remembered(projectors, self.entries))


def memo_entries(projectors, budget_bytes: int | None = None, most: int = 64) -> int:
    """How many chunk outputs a projection memo may keep: ``most``, or fewer when that many
    outputs of :func:`~freebind.fusion.graph.fusion_chunk_rows` rows (float32, the widest
    group's ``d_out``) would pass ``budget_bytes`` (default the fusion budget); at least 1."""
    from freebind.fusion import graph

    budget = int(budget_bytes if budget_bytes is not None else graph.FUSE_BUDGET_BYTES)
    rows = graph.fusion_chunk_rows(projectors, budget)
    width = max([int(getattr(g, "d_out", 0) or 0) for g in projectors.values()] or [0])
    per_entry = 4 * rows * max(width, 1)
    return max(1, min(int(most), budget // per_entry))


def explicit_overrides(graph: dict, table) -> list[str]:
    """Overrides that give ``table`` on their own, whatever else a bundle was opened with:
    per bond its switch, its route, and every factor that an override set (``b1=off``,
    ``b2.route=off``, ``b2.a=0.3``)."""
    from freebind.algebra.keywords import factor_keyword
    from freebind.fusion.factors import bond_nodes

    out = []
    for b in bond_nodes(graph):
        entry = table[b["id"]]
        if not entry.on:
            out.append(f"{b['id']}=off")
        if b.get("route") == "learned" and not entry.routed:
            out.append(f"{b['id']}.route=off")
        for m, v in entry.factors.items():
            if m in entry.pinned or v != b["factors"].get(m):
                out.append(f"{b['id']}.{factor_keyword(m)}={_fmt(v)}")
    return out


def reproducing(graph: dict, table, overrides: list[str]) -> list[str]:
    """``overrides`` when, stored as a preset on its own, it gives exactly ``table`` (the
    factors a point was measured with), else :func:`explicit_overrides` of ``table``: a
    bundle opened with a preset or factors measured on top of them, and the stored preset
    must carry them."""
    from freebind.fusion.factors import resolve

    for candidate in (list(overrides), explicit_overrides(graph, table)):
        if resolve(graph, (), {"p": candidate}, "p") == dict(table):
            return candidate
    raise AssertionError("explicit_overrides does not reproduce the table")  # pragma: no cover


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
    #: the bond factors each grid key sets (``{"t": ["b1.text", "b2.text"]}``)
    grid_scope: dict[str, list[str]] = field(default_factory=dict)
    #: set by :func:`freebind.evaluate.entrypoints.tune`: what tune.json holds, the heatmap, the
    #: tune.json file, whether the presets were stored in the bundle
    summary: dict[str, Any] = field(default_factory=dict)
    figure: Any = None
    path: Any = None
    saved: bool = False
    #: what each preset was chosen for: ``"versatile"`` or a task (``"esc50:acc1"``)
    chosen_for: dict[str, str] = field(default_factory=dict)
    #: set when stored: the presets of the same names the bundle held before
    #: (``{name: {"factors": …, "record": …}}``, :func:`freebind.fusion.bundle.store_presets`)
    replaced: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def pt(p: Point):
            return {"overrides": p.overrides, "values": p.values, "metrics": p.metrics}

        return {
            "tasks": self.tasks, "base": self.base,
            "coarse": [pt(p) for p in self.coarse], "coarse_choice": self.coarse_choice,
            "grid": {k: v for k, v in zip(self.grid_keys, self.grid_values)},
            "grid_scope": self.grid_scope,
            "fine": [pt(p) for p in self.fine],
            "best": {t: pt(p) for t, p in self.best.items()},
            "versatile": pt(self.versatile), "presets": self.presets,
            "chosen_for": self.chosen_for,
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
         prefix: str = "tuned", progress: bool = True,
         fast: Callable[[list[list[str]]], Any] | None = None,
         stored: Callable[[list[str]], list[str]] | None = None) -> TuneResult:
    """Run coarse and fine stages. The callables keep this module free of I/O:
    ``fuse(overrides) -> per-suite fused embeddings``, ``score(suite, fused) -> metrics``,
    ``score_base(suite) -> metrics`` of the base space, ``tasks_of(suite, metrics)``;
    ``fast(point_overrides)`` may return an object whose ``score(overrides)`` gives
    ``{suite: metrics}`` for those points more cheaply (:class:`LastBondMixer`);
    ``stored(point_overrides)`` is the preset that reproduces a point on its own (default:
    its overrides, right for a bundle opened without a preset or factors)."""
    from freebind.fusion.factors import bond_nodes

    n_points = int(np.prod([len(v) for _, v in grids])) if grids else 0
    if n_points > MAX_GRID_POINTS:
        raise UsageError(f"the grid has {n_points} points (limit {MAX_GRID_POINTS})")
    names = [s for s, _ in suites]
    base_metrics = {s: score_base(s) for s in names}
    tasks = [f"{s}:{m}" for s in names for m in tasks_of(s, base_metrics[s])]
    if not tasks:
        raise UsageError("the chosen suites report no headline metric to tune for")
    base = {t: base_metrics[t.split(":", 1)[0]][t.split(":", 1)[1]] for t in tasks}

    def evaluate(overrides: list[str], values: dict, scorer=None) -> Point:
        if scorer is not None:
            per_suite = scorer.score(overrides)
        else:
            fused_emb = fuse(overrides)
            per_suite = {s: score(s, fused_emb) for s in names}
        metrics = {}
        for s in names:
            got = per_suite[s]
            for t in tasks:
                if t.startswith(s + ":"):
                    metrics[t] = got[t.split(":", 1)[1]]
        return Point(overrides, values, metrics)

    bonds = [b["id"] for b in bond_nodes(fused.graph)]
    if len(bonds) > MAX_COARSE_BONDS:
        combos = [()]                      # too many combinations: all bonds on
    else:
        combos = [c for r in range(len(bonds) + 1) for c in itertools.combinations(bonds, r)]
    # a bundle with learned routers: each combination once routed, once with fixed factors
    routed = any(b.get("route") == "learned" for b in bond_nodes(fused.graph))
    variants = [[], ["route=off"]] if routed else [[]]
    bar = _bar(len(combos) * len(variants) + n_points, progress)
    coarse = []
    for off in combos:
        for extra in variants:
            coarse.append(evaluate([f"{b}=off" for b in off] + extra, {}))
            bar.update()
    choice = coarse[int(np.argmax(balanced_scores(coarse, tasks)))] if len(coarse) > 1 \
        else coarse[0]
    switches = list(choice.overrides)

    fine = []
    keys = [k for k, _ in grids]
    combos_fine = [dict(zip(keys, c)) for c in itertools.product(*[v for _, v in grids])] \
        if grids else []
    specs = [switches + [f"{k}={_fmt(v)}" for k, v in values.items()] for values in combos_fine]
    scorer = fast(specs) if (fast is not None and specs) else None
    for values, spec in zip(combos_fine, specs):
        fine.append(evaluate(spec, values, scorer))
        bar.update()
    bar.close()
    # every evaluated point is a candidate: a coarse row (a bond switched off at the bundle's
    # factors) can beat the whole fine grid, which moves shared keys in every bond at once
    candidates = coarse + fine
    best = {t: max(candidates, key=lambda p: p.metrics[t]) for t in tasks}
    versatile = candidates[int(np.argmax(balanced_scores(candidates, tasks)))]
    presets, chosen_for = _named(prefix, versatile, best, stored or list)
    scope = {k: grid_scope(fused.graph, k) for k in keys}
    return TuneResult(tasks, base, coarse, switches, keys, [list(v) for _, v in grids], fine,
                      best, versatile, presets, scope, chosen_for=chosen_for)


def _named(prefix: str, versatile: Point, best: dict[str, Point], stored: Callable):
    """``({preset: stored overrides}, {preset: "versatile" or its task})``."""
    presets = {f"{prefix}-versatile": stored(versatile.overrides)}
    chosen_for = {f"{prefix}-versatile": "versatile"}
    for t, p in best.items():
        presets[task_preset_name(prefix, t)] = stored(p.overrides)
        chosen_for[task_preset_name(prefix, t)] = t
    return presets, chosen_for


def data_record(evalset) -> dict[str, Any]:
    """What a suite was measured on: its data folder, a fingerprint of what it lists (items
    relative to the folder, captions, prompts, labels; not the files' bytes), the items per
    modality and the listed files that were missing."""
    import hashlib
    from pathlib import Path

    root = Path(evalset.root)
    h = hashlib.sha256(str(evalset.suite).encode())

    def text(x) -> str:
        try:
            return Path(x).relative_to(root).as_posix()
        except (TypeError, ValueError):
            return str(x)

    for task in evalset.tasks:
        h.update(b"\0task\0" + task.kind.encode())
        for m, xs in sorted(task.inputs().items()):
            h.update(b"\0" + m.encode())
            for x in xs:
                h.update(text(x).encode() + b"\0")
        for attr in ("caption_item", "labels"):
            if hasattr(task, attr):
                h.update(np.ascontiguousarray(getattr(task, attr), dtype=np.int64).tobytes())
    return {"data": str(root.resolve()), "fingerprint": h.hexdigest()[:16],
            "items": {m: len(v) for m, v in evalset.inputs().items()},
            "missing": len(evalset.missing)}


def preset_records(result: TuneResult, data: dict[str, dict], **common) -> dict[str, dict]:
    """``{preset: record}`` for :func:`freebind.fusion.bundle.store_presets`: the suites with
    their :func:`data_record`, the grid, the coarse choice, the number of points, what the
    preset was chosen for, its measured row (``scores``, ``base``, the ``measured``
    overrides) and ``common`` (the reference it was opened as, the weights, …)."""
    grid = {k: list(v) for k, v in zip(result.grid_keys, result.grid_values)}
    out = {}
    for name in result.presets:
        chosen = result.chosen_for.get(name, "versatile")
        point = result.versatile if chosen == "versatile" else result.best[chosen]
        out[name] = {"suites": {s: dict(d) for s, d in data.items()}, "grid": grid,
                     "coarse_choice": list(result.coarse_choice),
                     "points": len(result.coarse) + len(result.fine), "chosen_for": chosen,
                     "scores": dict(point.metrics), "base": dict(result.base),
                     "measured": list(point.overrides), **common}
    return out


def _fmt(v: float) -> str:
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


def _bar(total: int, progress: bool):
    from freebind.util.progress import bar

    return bar(total=total, desc="tune", unit="pt", disable=not progress, leave=False)


# --- the exact fast path for the usual grid: factors of the last combination bond --------

#: Largest similarity matrix (cells) for which the four Gram matrices are precomputed.
MAX_GRAM_CELLS = 30_000_000


class LastBondMixer:
    """Scores grid points that change only the factors of the chain's last combination bond.

    There the fused embedding of modality m is n((1−σ_m)·u + σ_m·p) with u (the space before
    the bond) and p (the experts' projection) fixed across the grid, and, for unit rows,
    ‖(1−σ)u + σp‖² = (1−σ)² + σ² + 2σ(1−σ)⟨u, p⟩. A retrieval similarity is therefore a
    combination of four Gram matrices (uuᵀ, upᵀ, puᵀ, ppᵀ) scaled by row norms — computed once —
    and a point costs a few element-wise passes instead of fusing and multiplying again.
    Classification tasks get their fused rows from u and p directly. The result equals the
    generic path up to float rounding."""

    def __init__(self, bond_id, base_has, expert_has, rows_u, rows_p, embedded, table_of):
        self.bond_id = bond_id
        self.base_has, self.expert_has = base_has, expert_has
        self.u, self.p = rows_u, rows_p
        self.embedded = embedded
        self.table_of = table_of
        self.dot = {s: {m: np.einsum("ij,ij->i", rows_u[s][m], rows_p[s][m])
                        for m in rows_u[s] if m in rows_p[s]} for s in rows_u}
        self.grams: dict[tuple[str, int], dict] = {}
        for s, emb in embedded.items():
            for k, task in enumerate(emb.evalset.tasks):
                if getattr(task, "kind", "") != "retrieval":
                    continue
                if len(task.captions) * len(task.items) > MAX_GRAM_CELLS:
                    continue
                self.grams[(s, k)] = self._grams(s, task)

    @classmethod
    def build(cls, graph, table_of, fuse_rows, embedded, points: Sequence[list[str]]):
        """The mixer, or None when the grid changes more than the last combination bond.
        ``table_of(overrides)`` resolves factors; ``fuse_rows(overrides, modalities)`` gives
        ``{suite: {modality: rows}}`` through the generic graph."""
        from freebind.fusion.graph import output_modalities

        if graph.get("op") != "chain" or not points:
            return None
        last = graph["bonds"][-1]
        if last["kind"] != "c":
            return None
        lid = last["id"]
        tables = [table_of(o) for o in points]
        ref = {b: (e.on, e.factors) for b, e in tables[0].items() if b != lid}
        for t in tables:
            if not t[lid].on or {b: (e.on, e.factors) for b, e in t.items() if b != lid} != ref:
                return None
        for t in tables:                 # a router weighs items one by one: no shortcut
            if any(t[lid].routes(m) for m in t[lid].factors):
                return None
        switches = [o for o in points[0] if o.endswith("=off") or o.endswith("=on")]
        off = switches + [f"{lid}=off"]
        wanted = sorted({m for emb in embedded.values() for m in emb.items})
        base_mods = set(output_modalities(graph, table_of(off)))
        expert_has = {m: any(m in e["modalities"] for e in last["experts"]) for m in wanted}
        base_has = {m: m in base_mods for m in wanted}
        rows_u = fuse_rows(off, [m for m in wanted if base_has[m]])
        rows_p: dict[str, dict] = {s: {} for s in embedded}
        for m in wanted:
            if not expert_has[m]:
                continue
            spec = switches + ([f"{lid}.{m}=1"] if base_has[m] else [])
            for s, mods in fuse_rows(spec, [m]).items():
                if m in mods:
                    rows_p[s][m] = mods[m]
        return cls(lid, base_has, expert_has, rows_u, rows_p, embedded, table_of)

    def _index(self, s, m, wanted):
        from freebind.evaluate.suites.tasks import rows_of

        return rows_of(self.embedded[s].items[m], wanted)

    def _grams(self, s, task) -> dict:
        q, g = task.caption_modality, task.item_modality
        qi, gi = self._index(s, q, task.captions), self._index(s, g, task.items)
        out = {"qi": qi, "gi": gi}
        for a_name, a_rows in (("u", self.u[s].get(q)), ("p", self.p[s].get(q))):
            for b_name, b_rows in (("u", self.u[s].get(g)), ("p", self.p[s].get(g))):
                if a_rows is not None and b_rows is not None:
                    out[a_name + b_name] = a_rows[qi] @ b_rows[gi].T
        return out

    def coefficients(self, table, m):
        """(a, b) of n(a·u + b·p) for modality m under ``table``."""
        if not self.expert_has[m]:
            return 1.0, 0.0
        if not self.base_has[m]:
            return 0.0, 1.0
        sigma = float(table[self.bond_id].factors.get(m, 0.0))
        return 1.0 - sigma, sigma

    def _norm(self, s, m, a, b):
        if b == 0.0 or a == 0.0:
            return None
        return np.sqrt(np.maximum(a * a + b * b + 2 * a * b * self.dot[s][m], 1e-12))

    def rows(self, s, m, a, b):
        u, p = self.u[s].get(m), self.p[s].get(m)
        if b == 0.0:
            return u
        if a == 0.0:
            return p
        return (a * u + b * p) / self._norm(s, m, a, b)[:, None]

    def similarity(self, s, k, table) -> np.ndarray:
        task = self.embedded[s].evalset.tasks[k]
        q, g = task.caption_modality, task.item_modality
        G = self.grams[(s, k)]
        (aq, bq), (ag, bg) = self.coefficients(table, q), self.coefficients(table, g)
        sim = None
        for name, coef in (("uu", aq * ag), ("up", aq * bg), ("pu", bq * ag), ("pp", bq * bg)):
            if coef != 0.0:
                sim = coef * G[name] if sim is None else sim + coef * G[name]
        nq, ng = self._norm(s, q, aq, bq), self._norm(s, g, ag, bg)
        if nq is not None:
            sim /= nq[G["qi"]][:, None]
        if ng is not None:
            sim /= ng[G["gi"]][None, :]
        return sim

    def score(self, overrides: list[str]) -> dict[str, dict[str, float]]:
        """``{suite: metrics}`` at one grid point."""
        table = self.table_of(overrides)
        out: dict[str, dict[str, float]] = {}
        for s, emb in self.embedded.items():
            metrics: dict[str, float] = {}
            for k, task in enumerate(emb.evalset.tasks):
                if (s, k) in self.grams:
                    metrics.update(task.score_similarity(self.similarity(s, k, table)))
                    continue
                fused = {}
                for m, wanted in task.inputs().items():
                    a, b = self.coefficients(table, m)
                    fused[m] = self.rows(s, m, a, b)[self._index(s, m, wanted)]
                metrics.update(task.score(fused))
            out[s] = metrics
        return out
