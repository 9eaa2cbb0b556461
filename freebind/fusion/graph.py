"""The inference graph: a pure function from base-space embeddings to fused embeddings.

The bond table (docs/architecture.md, "Bonds"), for a bond with base embedding u, expert
embedding e, projector group P and factor σ (combination) or λ (displacement), n(·) the L2
normalisation:

=====================  ==========================  ==========  ===========================
bond                   modality in both            only base   only expert
=====================  ==========================  ==========  ===========================
c(E, m=σ)              n((1−σ)·u + σ·P(e))         u           P(e)
d(E, m=λ)              n(λ·e + (1−λ)·P(u))         P(u)        e
=====================  ==========================  ==========  ===========================

P(x) = n(m(x)), m(x) = mean_k n(P_k(x)). Parallel experts: P(e1, e2, …) = n(Σ_i w_i m_i(e_i))
over the experts that have the modality. A bond switched off uses none of its expert: a
combination yields u (the expert's own modalities disappear), a displacement P(u).

A combination bond built with ``route=learned`` carries a router (:mod:`freebind.fusion.router`,
under ``router.<bond>`` in the projector mapping) that gives every item its own σ and w;
the formula stays the same. A factor pinned by an override or preset, or ``route=off``,
brings back the fixed weights for that bond and modality.

Every modality is computed independently, so only the inputs that a requested modality
needs are read (see :func:`inputs_needed`).
"""

from __future__ import annotations

import os
from typing import Callable, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from freebind.fusion.devices import OnDevice, tensors_of
from freebind.util.errors import FreebindError, UsageError
from freebind.fusion.factors import BondFactors, resolve

#: Memory one chunk of fusion may take for the projectors' activations (bytes): fusion,
#: the space built so far, embed partitions, index builds and eval read their inputs in
#: chunks of :func:`fusion_chunk_rows` rows under this budget (256 MiB: about 1,170 rows for
#: the paper's K=7, H=2048 groups). ``FREEBIND_FUSE_BUDGET_MB`` overrides it.
FUSE_BUDGET_BYTES = int(float(os.environ.get("FREEBIND_FUSE_BUDGET_MB", 256)) * 2**20)

Fetch = Callable[[str, str], "torch.Tensor | None"]


def _n(x):
    return None if x is None else F.normalize(x, dim=-1)


class _Evaluator:
    """The bond table evaluated over a graph, one modality at a time, on the inputs
    ``fetch(space_ref, modality)`` returns; ``dry`` follows the switches and which side has
    a modality without computing (which inputs a modality reads, which modalities exist).
    Subclasses emit other forms of the same computation (:mod:`freebind.share.onnx`)."""

    def __init__(self, projectors: Mapping, fetch: Fetch, table: Mapping[str, BondFactors],
                 dry: bool):
        self.projectors = projectors
        self.fetch = fetch
        self.table = table
        self.dry = dry

    def has(self, node: dict, modality: str) -> bool:
        """Whether ``node`` yields ``modality`` under the current switches."""
        if node["op"] == "space":
            return modality in node["modalities"]
        mods_ok = self.has(node["base"], modality)
        for bond in node["bonds"]:
            mods_ok = self.bond_has(bond, modality, mods_ok)
        return mods_ok

    def bond_has(self, bond: dict, modality: str, base_has: bool) -> bool:
        if not self.table[bond["id"]].on:
            return base_has
        return base_has or any(self.has(e, modality) for e in bond["experts"])

    def value(self, node: dict, modality: str):
        if node["op"] == "space":
            return self.fetch(node["ref"], modality)
        return self.chain(node["base"], node["bonds"], modality)

    def chain(self, base: dict, bonds: list[dict], modality: str):
        if not bonds:
            return self.value(base, modality)
        *earlier, bond = bonds
        base_has = self.has(base, modality)
        for b in earlier:
            base_has = self.bond_has(b, modality, base_has)

        def u():
            return self.chain(base, earlier, modality)

        entry = self.table[bond["id"]]
        if bond["kind"] == "c":
            return self.combination(bond, entry, modality, base_has, u)
        return self.displacement(bond, entry, modality, base_has, u)

    def project(self, job_id: str, x):
        if self.dry or x is None:
            return None
        group = self.projectors.get(job_id)
        if group is None:
            raise FreebindError(f"projector {job_id} is missing")
        return group.mixture(x)

    def expert_projection(self, bond: dict, modality: str):
        total = None
        for expert, job_id, w in zip(bond["experts"], bond["jobs"], bond["weights"]):
            if not self.has(expert, modality) or w == 0:
                continue
            m = self.project(job_id, self.value(expert, modality))
            if not self.dry:
                total = w * m if total is None else total + w * m
        return _n(total)

    def router(self, bond, entry: BondFactors, modality):
        """The bond's router when it weighs ``modality`` here, else None."""
        if not entry.routes(modality):
            return None
        from freebind.fusion.router import router_key

        router = self.projectors.get(router_key(bond["id"]))
        if router is None:
            if self.dry:
                return True
            raise FreebindError(f"router of {bond['id']} is missing (route=learned bond); "
                                f"pass route=off to fuse with the fixed factors")
        if modality not in getattr(router, "spec", {modality: None}):
            return None
        return router

    def routed(self, bond, router, modality, u):
        """n((1 − σ)·u + σ·n(Σ_i w_i m_i(e_i))) with the router's per-item σ and w."""
        from freebind.fusion.router import mix, router_spec

        experts = router_spec(bond)[modality]["experts"]
        base = u()
        mixtures = []
        for i in experts:
            if not self.has(bond["experts"][i], modality):
                return None
            mixtures.append(self.project(bond["jobs"][i], self.value(bond["experts"][i],
                                                                    modality)))
        if self.dry:
            return None
        projections = [F.normalize(m, dim=-1) for m in mixtures]
        sigma, w = router.weights(modality, base, projections)
        return mix(base, mixtures, sigma, w)

    def combination(self, bond, entry: BondFactors, modality, base_has, u):
        """A combination bond's row of the bond table: u when it is off or no expert has
        ``modality``, P(e) when only the experts have it, the router's mix when it weighs
        ``modality``, else :meth:`fixed_combination`."""
        expert_has = any(self.has(e, modality) for e in bond["experts"])
        if not entry.on or not expert_has:
            return u()
        if not base_has:
            return self.expert_projection(bond, modality)
        router = self.router(bond, entry, modality)
        if router is not None and all(self.has(bond["experts"][i], modality)
                                      for i in _router_experts(bond, modality)):
            return self.routed(bond, router, modality, u)
        return self.fixed_combination(bond, entry, modality, u)

    def fixed_combination(self, bond, entry: BondFactors, modality, u):
        """n((1 − σ)·u + σ·P(e)) with the bond's factor σ (0 and 1 read one side only)."""
        sigma = entry.factors.get(modality, 0.0)
        if sigma == 0.0:
            return u()
        if sigma == 1.0:
            return self.expert_projection(bond, modality)
        base, proj = u(), self.expert_projection(bond, modality)
        if self.dry:
            return None
        return _n((1.0 - sigma) * base + sigma * proj)

    def displacement(self, bond, entry: BondFactors, modality, base_has, u):
        """A displacement bond's row of the bond table: P(u) when it is off or its expert
        lacks ``modality``, e when only the expert has it, else :meth:`fixed_displacement`."""
        expert = bond["experts"][0]
        job_id = bond["jobs"][0]

        def pu():
            return self.normalize(self.project(job_id, u()))

        if not entry.on or not self.has(expert, modality):
            return pu()
        if not base_has:
            return self.value(expert, modality)
        return self.fixed_displacement(bond, entry, modality, pu)

    def fixed_displacement(self, bond, entry: BondFactors, modality, pu):
        """n(λ·e + (1 − λ)·P(u)) with the bond's factor λ (0 and 1 read one side only);
        ``pu()`` computes P(u)."""
        expert = bond["experts"][0]
        lam = entry.factors.get(modality, 0.0)
        if lam == 1.0:
            return self.value(expert, modality)
        if lam == 0.0:
            return pu()
        e, p = self.value(expert, modality), pu()
        if self.dry:
            return None
        return _n(lam * e + (1.0 - lam) * p)

    def normalize(self, x):
        """n(x) (None stays None: a dry run)."""
        return _n(x)


def _router_experts(bond: dict, modality: str) -> list[int]:
    from freebind.fusion.router import router_spec

    return router_spec(bond).get(modality, {}).get("experts", [])


def output_modalities(graph: dict, table: Mapping[str, BondFactors] | None = None
                      ) -> list[str]:
    """The modalities a graph yields under ``table``'s switches."""
    table = table if table is not None else resolve(graph)
    ev = _Evaluator({}, lambda r, m: None, table, dry=True)
    return [m for m in graph["modalities"] if ev.has(graph, m)]


def inputs_needed(graph: dict, modality: str, table: Mapping[str, BondFactors] | None = None
                  ) -> dict[str, set[str]]:
    """``{space_ref: {modality, …}}`` that fusing ``modality`` reads (factors of 0 or 1 and
    switched-off bonds skip inputs they do not use)."""
    table = table if table is not None else resolve(graph)
    _check_modality(graph, modality, table)
    needed: dict[str, set[str]] = {}

    def fetch(ref, m):
        needed.setdefault(ref, set()).add(m)
        return None

    _Evaluator({}, fetch, table, dry=True).value(graph, modality)
    return needed


def _check_modality(graph, modality, table):
    mods = output_modalities(graph, table)
    if modality not in mods:
        raise UsageError(f"{graph['text']} has no {modality} modality here "
                         f"(it yields {', '.join(mods) or 'nothing'})")


def _rows_of(x) -> int:
    return int(x.shape[0])


def _sliceable(embeddings: Mapping) -> dict:
    """Inputs as row-sliceable objects (nested lists become float32 arrays)."""
    return {ref: {m: v if hasattr(v, "shape") else np.asarray(v, dtype=np.float32)
                  for m, v in mods.items()} for ref, mods in embeddings.items()}


def _slice(x, a: int, b: int):
    """Rows [a, b) of an input: a tensor, an array, a memory map or a store PoolView."""
    return x[a:b]


def compute_device(projectors: Mapping, embeddings: Mapping | None = None, device=None):
    """Where fusion runs: ``device`` when given, else that of the first input tensor not on
    the CPU, else that of the projectors (the CPU for a bundle that was never moved)."""
    if device is not None:
        return torch.device(device)
    for mods in (embeddings or {}).values():
        for v in mods.values():
            if isinstance(v, torch.Tensor) and v.device.type != "cpu":
                return v.device
    for group in projectors.values():
        for p in tensors_of(group):
            return p.device
    return torch.device("cpu")


def fusion_chunk_rows(projectors: Mapping, budget_bytes: int | None = None) -> int:
    """Rows fused at once so that one chunk's working memory fits in ``budget_bytes``
    (default :data:`FUSE_BUDGET_BYTES`). Per row, in float32: the largest group's
    activations while it runs (K projectors of hidden width H: ``K·(3·H + 2·out)``), plus
    what every group leaves held until its bond combines (its input, its mixture, the
    normalised projection and the weighted sum: ``in + 3·out``), plus each router's input
    (the base and its experts' projections concatenated) and hidden layer: all the groups
    of a fusion and their router run for the same chunk."""

    budget = int(budget_bytes if budget_bytes is not None else FUSE_BUDGET_BYTES)
    largest, held = 0, 0
    for group in projectors.values():
        k, hidden, d_out = (getattr(group, a, None) for a in ("k", "hidden", "d_out"))
        if k and hidden and d_out:
            largest = max(largest, int(k) * (3 * int(hidden) + 2 * int(d_out)))
            held += int(getattr(group, "d_in", None) or d_out) + 3 * int(d_out)
            continue
        spec, dim = getattr(group, "spec", None), getattr(group, "dim", None)
        if spec and dim and hidden:   # a bond's router: its widest modality's net
            experts = max(len(s.get("experts", ())) for s in spec.values())
            held += int(dim) * (1 + experts) + 2 * int(hidden)
    per_row = 4 * (largest + held)
    return max(1, budget // max(per_row, 4 * 4096))


def _plan_fusion(graph, table, as_rows: Mapping, modalities):
    """``{modality: inputs needed}`` for the requested modalities (default: every output
    modality whose inputs are all present), checked against what is given."""
    if modalities is None:  # every output modality whose inputs are all present
        needs = {m: inputs_needed(graph, m, table) for m in output_modalities(graph, table)}
        needs = {m: need for m, need in needs.items()
                 if all(ms <= set(as_rows.get(ref, {})) for ref, ms in need.items())}
    else:
        needs = {m: inputs_needed(graph, m, table) for m in modalities}
    rows = {}
    for m, need in needs.items():
        missing = [f"{ref} {mm}" for ref, ms in need.items() for mm in sorted(ms)
                   if mm not in as_rows.get(ref, {})]
        if missing:
            raise UsageError(f"fusing {m} needs embeddings of: {', '.join(missing)}")
        sizes = {_rows_of(as_rows[ref][mm]) for ref, ms in need.items() for mm in ms}
        if len(sizes) > 1:
            raise UsageError(f"fusing {m}: input embeddings have different row counts "
                             f"{sorted(sizes)}")
        rows[m] = sizes.pop() if sizes else 0
    return needs, rows


def _fuse_rows(graph, projectors, table, embeddings, need, modality, a, b, device):
    """The fused rows [a, b) of ``modality``: inputs sliced, made float32 unit rows on
    ``device``, evaluated through the graph."""
    inputs = {}
    for ref, ms in need.items():
        for mm in ms:
            x = _slice(embeddings[ref][mm], a, b)
            t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
            # Spaces give unit rows; normalising again is a no-op for them and keeps the
            # output on the unit sphere for inputs that are not (e.g. reduced precision).
            inputs[(ref, mm)] = F.normalize(t.to(device=device, dtype=torch.float32), dim=-1)

    def fetch(ref, mm):
        return inputs[(ref, mm)]

    with torch.no_grad():
        return _Evaluator(projectors, fetch, table, dry=False).value(graph, modality)


def fuse_blocks(graph: dict, projectors: Mapping, embeddings: Mapping[str, Mapping[str, object]],
                factors=None, presets: Mapping | None = None, preset: str | None = None,
                modalities: list[str] | None = None,
                table: Mapping[str, BondFactors] | None = None, chunk_rows: int | None = None,
                device=None):
    """Fuse in chunks: yields ``(modality, start, Tensor [rows, dim])`` block by block.

    Inputs are read ``chunk_rows`` rows at a time (tensors, arrays, memory maps or store
    :class:`~freebind.data.store.PoolView` s), so what is held is one chunk's inputs and
    activations, never a pool's (default chunk: :func:`chunk_rows` of the projectors).
    Fusion runs on ``device`` (default :func:`compute_device`)."""
    if table is None:
        table = resolve(graph, factors, presets, preset)
    embeddings = _sliceable(embeddings)
    needs, rows = _plan_fusion(graph, table, embeddings, modalities)
    dev = compute_device(projectors, embeddings, device)
    on_dev = OnDevice(projectors, dev)
    step = max(1, int(chunk_rows) if chunk_rows else fusion_chunk_rows(projectors))
    for m, need in needs.items():
        n = rows[m]
        if n == 0:
            yield m, 0, _fuse_rows(graph, on_dev, table, embeddings, need, m, 0, 0, dev)
            continue
        for a in range(0, n, step):
            b = min(n, a + step)
            yield m, a, _fuse_rows(graph, on_dev, table, embeddings, need, m, a, b, dev)


def fuse(graph: dict, projectors: Mapping, embeddings: Mapping[str, Mapping[str, object]],
         factors=None, presets: Mapping | None = None, preset: str | None = None,
         modalities: list[str] | None = None,
         table: Mapping[str, BondFactors] | None = None, chunk_rows: int | None = None,
         device=None) -> dict[str, torch.Tensor]:
    """Fuse precomputed embeddings ``{space_ref: {modality: [N, dim]}}`` (tensors, arrays,
    memory maps or store views).

    Returns ``{modality: Tensor [N, dim]}`` for every requested modality (default: every
    output modality whose inputs are all present). ``factors`` are override strings (see
    :mod:`freebind.fusion.factors`); ``preset`` selects one of ``presets``. The work runs in
    chunks of ``chunk_rows`` rows (see :func:`fuse_blocks`): only the output is pool-sized;
    to keep even that out of memory, consume :func:`fuse_blocks` or call :func:`fuse_into`."""
    if table is None:
        table = resolve(graph, factors, presets, preset)
    embeddings = _sliceable(embeddings)
    needs, rows = _plan_fusion(graph, table, embeddings, modalities)
    out: dict[str, torch.Tensor] = {}
    for m, a, block in fuse_blocks(graph, projectors, embeddings, table=table,
                                   modalities=list(needs), chunk_rows=chunk_rows,
                                   device=device):
        if m not in out:
            if a == 0 and block.shape[0] == rows[m]:   # one chunk: no copy
                out[m] = block
                continue
            out[m] = torch.empty((rows[m], block.shape[1]), dtype=block.dtype,
                                 device=block.device)
        out[m][a:a + block.shape[0]] = block
    return out


def fuse_into(graph: dict, projectors: Mapping, embeddings: Mapping[str, Mapping[str, object]],
              write: Callable[[str, int, "np.ndarray"], None], **options) -> dict[str, int]:
    """Stream fused rows to ``write(modality, start, float32 array)`` chunk by chunk (an
    ``np.lib.format.open_memmap``, a store, a file); returns the rows written per modality.
    ``options`` are :func:`fuse_blocks`' keywords."""
    counts: dict[str, int] = {}
    for m, a, block in fuse_blocks(graph, projectors, embeddings, **options):
        arr = block.detach().to("cpu", torch.float32).numpy()
        write(m, a, arr)
        counts[m] = counts.get(m, 0) + arr.shape[0]
    return counts


def find_node(graph: dict, text: str) -> dict:
    """The sub-graph whose canonical text is ``text`` (a space, an expert, or the chain up
    to some bond): the space a job trains on."""
    found = _find(graph, text)
    if found is None:
        raise KeyError(text)
    return found


def _find(node: dict, text: str):
    if node["text"] == text:
        return node
    if node["op"] == "space":
        return None
    for i, bond in enumerate(node["bonds"]):
        if bond["text"] == text:
            return {"op": "chain", "base": node["base"], "bonds": node["bonds"][:i + 1],
                    "dim": bond["dim"], "modalities": bond["modalities"], "text": text}
        for expert in bond["experts"]:
            hit = _find(expert, text)
            if hit is not None:
                return hit
    return _find(node["base"], text)
