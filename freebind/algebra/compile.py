"""Compile an AST into a :class:`Plan`: projector training jobs in dependency order and the
inference graph (a JSON-able tree that maps base-space embeddings to fused ones).

Bonds are numbered ``b1, b2, …`` in textual order; jobs ``j1, j2, …`` in dependency order.
For ``X + c(E1, E2)`` each expert gets a job E_i → X; for ``X + d(E)`` one job X → E. A job
depends on every job that produced its source or target space.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import combinations

from freebind.algebra.ast import MODALITY_ORDER, Bond, Chain, Expr, SpaceRef, space_refs
from freebind.algebra.formatter import format_expr
from freebind.algebra.keywords import factor_keyword
from freebind.util.errors import ExpressionError, SpaceError
from freebind.algebra.keywords import DEFAULT_HYPER, MINI_HYPER
from freebind.util.vocab import POOL_MODALITIES, is_mini_only

#: Letters of data modes (the paper's A, T, V).
MODE_LETTERS = {"audio": "A", "text": "T", "image": "V"}
#: Default factor (the expert's weight) per bond kind, when the expression gives none:
#: combination 0.5 (an even mix), displacement 0.8 (the paper's image/text preset).
DEFAULT_FACTOR = {"c": 0.5, "d": 0.8}


def data_modes(modalities: tuple[str, ...]) -> list[str]:
    """One data mode per non-empty subset of query modalities: ``mix`` (all) first, then
    singles and larger subsets in letter order (for A, T, V: mix, A, T, V, AT, AV, TV)."""
    letters = sorted(MODE_LETTERS[m] for m in modalities)
    if len(letters) <= 1:
        return letters
    modes = ["mix"]
    for size in range(1, len(letters)):
        modes += ["".join(c) for c in combinations(letters, size)]
    return modes


def bond_nodes(graph: dict) -> list[dict]:
    """Every bond node of a graph (or sub-graph), in textual order (b1, b2, …)."""
    found: list[dict] = []

    def walk(node):
        if node["op"] == "chain":
            walk(node["base"])
            for bond in node["bonds"]:
                found.append(bond)
                for expert in bond["experts"]:
                    walk(expert)

    walk(graph)
    return sorted(found, key=lambda b: int(b["id"][1:]))


@dataclass
class Job:
    id: str
    bond: str
    kind: str
    source: str
    target: str
    source_dim: int
    target_dim: int
    source_modalities: tuple[str, ...]
    target_modalities: tuple[str, ...]
    modalities: tuple[str, ...]
    data_modes: list[str]
    hyper: dict
    depends_on: list[str] = field(default_factory=list)
    expert_index: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("source_modalities", "target_modalities", "modalities"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        d = dict(d)
        for key in ("source_modalities", "target_modalities", "modalities"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class Plan:
    expression: str
    jobs: list[Job]
    graph: dict
    spaces: dict[str, dict]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.graph["modalities"])

    @property
    def dim(self) -> int:
        return self.graph["dim"]

    def bonds(self) -> list[dict]:
        """Every bond node of the graph, in textual order (b1, b2, …)."""
        return bond_nodes(self.graph)

    def __repr__(self) -> str:
        """A summary (``print(plan.to_dict())`` or ``freebind plan`` show everything)."""
        return (f"Plan({self.expression!r}, dim={self.dim}, modalities={self.modalities}, "
                f"{len(self.bonds())} bond(s), {len(self.jobs)} job(s))")

    def job(self, job_id: str) -> Job:
        for job in self.jobs:
            if job.id == job_id:
                return job
        raise KeyError(job_id)

    def to_dict(self) -> dict:
        return {"expression": self.expression, "jobs": [j.to_dict() for j in self.jobs],
                "graph": self.graph, "spaces": self.spaces}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["expression"], [Job.from_dict(j) for j in d["jobs"]], d["graph"],
                   d["spaces"])


def _ordered(mods) -> tuple[str, ...]:
    mods = set(mods)
    return tuple(m for m in MODALITY_ORDER if m in mods)


class _Compiler:
    def __init__(self, source: str | None, hyper: dict | None):
        self.source = source
        self.hyper_override = hyper or {}
        self.jobs: list[Job] = []
        self.spaces: dict[str, dict] = {}
        self.bond_ids: dict[int, str] = {}
        self.is_mini = False

    def fail(self, message, span, hint=None):
        src = self.source if self.source is not None else ""
        start, end = span if self.source is not None else (0, 1)
        return ExpressionError(message, src, start, end, hint)

    def number_bonds(self, expr: Expr) -> None:
        bonds: list[Bond] = []

        def walk(e):
            if isinstance(e, Chain):
                for b in e.bonds:
                    bonds.append(b)
                    for x in b.experts:
                        walk(x)

        walk(expr)
        order = sorted(range(len(bonds)), key=lambda i: (bonds[i].span[0], i))
        for n, i in enumerate(order, 1):
            self.bond_ids[id(bonds[i])] = f"b{n}"

    def space(self, ref: SpaceRef) -> dict:
        from freebind import spaces

        try:
            info = spaces.info(ref.name)
        except SpaceError as exc:
            raise self.fail(str(exc), ref.span) from None
        self.spaces[ref.name] = {"name": info.name, "family": info.family, "dim": info.dim,
                                 "modalities": list(info.modalities)}
        return {"op": "space", "ref": ref.name, "dim": info.dim,
                "modalities": list(info.modalities), "text": format_expr(ref)}

    def node(self, expr: Expr) -> tuple[dict, list[str]]:
        """(graph node, ids of the jobs that produce this space)."""
        if isinstance(expr, SpaceRef):
            return self.space(expr), []
        base_node, deps = self.node(expr.base)
        cur = base_node
        bonds = []
        for i, bond in enumerate(expr.bonds):
            bond_node, deps = self.bond(bond, cur, deps)
            bond_node["text"] = format_expr(Chain(expr.base, expr.bonds[:i + 1]))
            bonds.append(bond_node)
            cur = {"dim": bond_node["dim"], "modalities": bond_node["modalities"],
                   "text": bond_node["text"]}
        node = {"op": "chain", "base": base_node, "bonds": bonds, "dim": cur["dim"],
                "modalities": cur["modalities"], "text": cur["text"]}
        return node, deps

    def bond(self, bond: Bond, base: dict, base_deps: list[str]) -> tuple[dict, list[str]]:
        bond_id = self.bond_ids[id(bond)]
        experts = []
        expert_deps: list[str] = []
        for expert in bond.experts:
            node, deps = self.node(expert)
            experts.append(node)
            expert_deps += deps
        seen: dict[str, str] = {}
        for expert, node in zip(bond.experts, experts):
            key = (self.spaces[node["ref"]]["name"] if node.get("op") == "space"
                   else node["text"])
            if key in seen:
                same = node["text"] if seen[key] == node["text"] else \
                    f"{node['text']} (the same space as {seen[key]})"
                raise self.fail(f"{same} is twice in one bond: each expert of a bond must be "
                                f"a different space", _span(expert),
                                hint="drop the repeated expert, or bind it in a second bond")
            seen[key] = node["text"]
        base_mods = set(base["modalities"])
        all_shared: set[str] = set()
        for expert, node in zip(bond.experts, experts):
            shared = base_mods & set(node["modalities"])
            if not shared:
                raise self.fail(
                    f"{node['text']} shares no modality with {base['text']}: "
                    f"{{{', '.join(_ordered(node['modalities']))}}} vs "
                    f"{{{', '.join(_ordered(base_mods))}}}", _span(expert),
                    hint="a bond needs at least one modality in both spaces to learn from")
            all_shared |= shared
        shared = _ordered(all_shared)
        factors = {m: DEFAULT_FACTOR[bond.kind] for m in shared}
        for m, v in bond.factors:
            if m not in all_shared:
                span = bond.keyword_span(m) or bond.span
                raise self.fail(f"factor {factor_keyword(m)}= does not apply: {bond_id} mixes "
                                f"only {', '.join(shared)}", span,
                                hint="a factor weighs a modality present in both spaces")
            factors[m] = v
        options = bond.option_dict()
        weights = list(options.pop("w", (1.0,) * len(experts)))
        route = options.pop("route", "fixed")
        total = sum(weights)
        weights = [w / total for w in weights]
        union = set(base_mods)
        for node in experts:
            union |= set(node["modalities"])
        modalities = _ordered(union)
        dim = base["dim"] if bond.kind == "c" else experts[0]["dim"]
        hyper = {**DEFAULT_HYPER, **(MINI_HYPER if self.is_mini else {}), **self.hyper_override,
                 **options}
        job_ids = []
        deps = sorted(set(base_deps) | set(expert_deps), key=lambda j: int(j[1:]))
        for k, node in enumerate(experts):
            if bond.kind == "c":
                src, dst = node, base
            else:
                src, dst = base, node
            mods = _ordered((set(src["modalities"]) | set(dst["modalities"]))
                            & set(POOL_MODALITIES))
            job = Job(id=f"j{len(self.jobs) + 1}", bond=bond_id, kind=bond.kind,
                      source=src["text"], target=dst["text"], source_dim=src["dim"],
                      target_dim=dst["dim"], source_modalities=tuple(src["modalities"]),
                      target_modalities=tuple(dst["modalities"]), modalities=mods,
                      data_modes=data_modes(mods), hyper=dict(hyper), depends_on=list(deps),
                      expert_index=k)
            self.jobs.append(job)
            job_ids.append(job.id)
        node = {"id": bond_id, "kind": bond.kind, "experts": experts, "jobs": job_ids,
                "weights": weights, "factors": factors, "shared": list(shared),
                "modalities": list(modalities), "dim_in": base["dim"], "dim": dim}
        if route != "fixed":
            node["route"] = route
        return node, sorted(set(deps) | set(job_ids), key=lambda j: int(j[1:]))


def _span(expr: Expr) -> tuple[int, int]:
    return expr.span


def compile(expr: Expr, source: str | None = None, hyper: dict | None = None) -> Plan:
    """Compile ``expr``; ``source`` (the text it was parsed from) places carets in errors;
    ``hyper`` overrides training defaults for every job (bond options still win)."""
    comp = _Compiler(source, hyper)
    comp.number_bonds(expr)
    for ref in space_refs(expr):
        comp.space(ref)
    comp.is_mini = is_mini_only([s["family"] for s in comp.spaces.values()])
    graph, _ = comp.node(expr)
    return Plan(format_expr(expr), comp.jobs, graph, comp.spaces)
