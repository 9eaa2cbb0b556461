"""The fusion split at its last mixing bond: what a factor-aware index keeps per item.

For a modality m, walk the top-level chain back from its end past the combination bonds
whose experts lack m (they return their base unchanged, on or off). The first bond left is
the *pivot*. Both bond kinds are linear in two unit vectors there:

* ``c(E, m=σ)``: fused = n((1−σ)·A + σ·B) with A = u (the chain before the bond) and
  B = P(e) (the experts' projection);
* ``d(E, m=λ)``: fused = n((1−λ)·A + λ·B) with A = P(u) and B = e.

A switched-off pivot yields A (the factor 0), a modality only one side has yields that
side. With c = A·B, ``‖(1−f)A + fB‖² = (1−f)² + f² + 2f(1−f)c``, so for a query q

    q·fused = ((1−f)·q·A + f·q·B) / sqrt((1−f)² + f² + 2f(1−f)·c)

ranks the items exactly as re-fusing them under the factor f would, with no encoder and no
projector.

A pivot whose router weighs m (``route=learned``, the factor not pinned) has a σ and expert
weights of every item's own: side A is then the routed fusion itself, side B is absent (the
factor 0), and the key says ``routed``. Pinning the factor (a slider, a preset, ``route=off``)
gives another key, whose components are the fixed-weight A and B above. Every other factor and
switch the modality reads (earlier bonds, bonds inside experts) is part of the components'
:func:`key`: when it changes, the components are recomputed from the stored base-space
embeddings (projectors only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch.nn import functional as F

from freebind.algebra.compile import bond_nodes
from freebind.fusion.factors import BondFactors
from freebind.fusion.graph import _Evaluator


@dataclass(frozen=True)
class Pivot:
    """Where modality m's fusion is linear: ``bond`` (None for a plain space or a chain
    whose bonds all pass m through) and which sides exist."""

    bond: str | None
    kind: str | None
    has_a: bool
    has_b: bool
    #: the bond's router gives every item its own σ and w here (side A is the fusion)
    routed: bool = False


def pivot(graph: dict, modality: str, table: Mapping[str, BondFactors]) -> Pivot:
    ev = _Evaluator({}, lambda r, m: None, table, dry=True)
    if graph["op"] == "space" or not graph["bonds"]:
        return Pivot(None, None, True, False)
    bonds = graph["bonds"]
    i = _pivot_index(ev, bonds, modality)
    if i is None:
        return Pivot(None, None, True, False)
    bond = bonds[i]
    base_has = ev.has(graph["base"], modality)
    for b in bonds[:i]:
        base_has = ev.bond_has(b, modality, base_has)
    experts = bond["experts"] if bond["kind"] == "c" else bond["experts"][:1]
    expert_has = any(ev.has(e, modality) for e in experts)
    routed = bond["kind"] == "c" and base_has and expert_has and \
        _routes(ev, bond, table[bond["id"]], modality)
    return Pivot(bond["id"], bond["kind"], base_has, expert_has, routed)


def _routes(ev: _Evaluator, bond: dict, entry: BondFactors, modality: str) -> bool:
    """Whether the combination bond mixes ``modality`` with its router (the graph's rule:
    on, routed and not pinned, a modality the router weighs, every routed expert has it)."""
    if not entry.on or not entry.routes(modality):
        return False
    from freebind.fusion.router import router_spec

    spec = router_spec(bond).get(modality)
    return spec is not None and all(ev.has(bond["experts"][i], modality)
                                    for i in spec["experts"])


def _pivot_index(ev: _Evaluator, bonds: list[dict], modality: str) -> int | None:
    for i in range(len(bonds) - 1, -1, -1):
        b = bonds[i]
        if b["kind"] == "c" and not any(ev.has(e, modality) for e in b["experts"]):
            continue  # returns its base unchanged, on or off
        return i
    return None


def key(graph: dict, modality: str, table: Mapping[str, BondFactors]) -> str:
    """What the components of ``modality`` depend on: every bond's switch and factor for it,
    except the pivot's (those enter only through the query-time formula)."""
    p = pivot(graph, modality, table)
    parts = []
    for b in bond_nodes(graph):
        entry = table[b["id"]]
        if b["id"] == p.bond:
            continue
        routes = ":routed" if entry.routes(modality) else ""
        parts.append(f"{b['id']}:{'on' if entry.on else 'off'}:"
                     f"{entry.factors.get(modality, '-')}{routes}")
    routed = "|routed" if p.routed else ""
    return f"{modality}|{p.bond}|{int(p.has_a)}{int(p.has_b)}{routed}|" + ",".join(parts)


def components(graph: dict, projectors: Mapping, leaves: Mapping[str, Mapping[str, object]],
               modality: str, table: Mapping[str, BondFactors]
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(A, B)`` float32 arrays ``[N, dim]`` (None for a side that does not exist) from the
    base-space embeddings ``leaves = {space_ref: {modality: [N, d]}}``."""
    as_tensor = {ref: {m: F.normalize(torch.as_tensor(np.asarray(v), dtype=torch.float32),
                                      dim=-1) for m, v in mods.items()}
                 for ref, mods in leaves.items()}

    def fetch(ref, m):
        return as_tensor[ref][m]

    ev = _Evaluator(projectors, fetch, table, dry=False)
    p = pivot(graph, modality, table)
    with torch.no_grad():
        if p.bond is None or p.routed:
            return _np(ev.value(graph, modality)), None
        bonds = graph["bonds"]
        i = next(j for j, b in enumerate(bonds) if b["id"] == p.bond)
        bond, earlier = bonds[i], bonds[:i]
        a = b = None
        if p.kind == "c":
            if p.has_a:
                a = ev.chain(graph["base"], earlier, modality)
            if p.has_b:
                b = ev.expert_projection(bond, modality)
        else:
            if p.has_a:
                u = ev.chain(graph["base"], earlier, modality)
                a = F.normalize(ev.project(bond["jobs"][0], u), dim=-1)
            if p.has_b:
                b = ev.value(bond["experts"][0], modality)
    return _np(a), _np(b)


def _np(x):
    if x is None:
        return None
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


def mix(pv: Pivot, table: Mapping[str, BondFactors], modality: str) -> float | None:
    """The weight f of side B under ``table`` (0: side A alone, 1: side B alone), or None when
    the modality does not exist under these switches."""
    if pv.bond is None or pv.routed:
        return 0.0
    entry = table[pv.bond]
    if not entry.on:
        return 0.0 if pv.has_a else None
    if pv.has_a and pv.has_b:
        return float(entry.factors.get(modality, 0.0))
    return 0.0 if pv.has_a else 1.0


def scores(q: np.ndarray, a: np.ndarray | None, b: np.ndarray | None, dot: np.ndarray | None,
           f: float) -> np.ndarray:
    """``q · n((1−f)A + fB)`` for every item row; ``q`` is ``[dim]`` or ``[Q, dim]``."""
    if f == 0.0 or b is None:
        return _mv(a, q)
    if f == 1.0 or a is None:
        return _mv(b, q)
    num = (1.0 - f) * _mv(a, q) + f * _mv(b, q)
    norm = np.sqrt((1.0 - f) ** 2 + f ** 2 + 2.0 * f * (1.0 - f) * dot)
    return num / (norm if num.ndim == 1 else norm[:, None])


def _mv(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    # one query: a single-threaded SIMD loop (memory-bound; BLAS threads only add waiting
    # on a busy machine); several: a matrix product
    return np.einsum("ij,j->i", x, q) if q.ndim == 1 else x @ q.T


def fused_rows(a, b, dot, f: float) -> np.ndarray:
    """The fused item vectors ``n((1−f)A + fB)`` themselves (for approximate indexes)."""
    if f == 0.0 or b is None:
        return a
    if f == 1.0 or a is None:
        return b
    v = (1.0 - f) * a + f * b
    return v / np.linalg.norm(v, axis=1, keepdims=True)
