"""The space built so far (a sequential bond's source or target): a plan's sub-space,
identified in the store by :class:`SubSpace`, fused chunk by chunk with the projectors
trained so far into the embedding store and read back memory-mapped (:func:`space_so_far`)."""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

from freebind.build.leaf_embeddings import LeafPools


class SubSpace:
    """The identity of a space built so far (a chain of bonds) in the embedding store: its
    sub-expression, the keys of the jobs it depends on (which carry their training data and
    weights) and its factors, so a rebuild and later jobs reuse its rows."""

    def __init__(self, node: dict, job_keys: Mapping[str, str], table):
        from freebind.fusion.factors import describe

        self.name = node["text"]
        self.dim = int(node["dim"])
        self.modalities = tuple(node["modalities"])
        jobs = sorted(_jobs_under(node))
        spec = {"text": node["text"], "jobs": [job_keys[j] for j in jobs],
                "factors": describe(table), "format": 1}
        self.fingerprint = "space-so-far:" + hashlib.sha256(
            json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _jobs_under(node: dict) -> set[str]:
    if node["op"] == "space":
        return set()
    out = _jobs_under(node["base"])
    for bond in node["bonds"]:
        out.update(bond["jobs"])
        for expert in bond["experts"]:
            out |= _jobs_under(expert)
    return out


def space_so_far(plan, text: str, projectors, leaf: LeafPools, job_keys: Mapping[str, str],
                 chunk_rows: int | None = None, device=None, progress: bool = False) -> dict:
    """Pool embeddings of a (sub-)space of the plan: a leaf space's rows, or a chain
    evaluated with the projectors trained so far and the expression's own factors,
    computed chunk by chunk into the embedding store (in the store's dtype) and read back
    memory-mapped (or into memory when small). A rebuild, or a later job over the same
    sub-space, reads what the store holds."""
    if text in leaf.rows:
        return dict(leaf.rows[text])
    from freebind.fusion.factors import resolve
    from freebind.fusion.graph import find_node, fuse_blocks, output_modalities

    node = find_node(plan.graph, text)
    if node["op"] == "space":
        return dict(leaf.rows[node["ref"]])
    table = resolve(node)
    space = SubSpace(node, job_keys, table)
    store = leaf.store
    mods = [m for m in output_modalities(node, table) if m in leaf.kept
            and _inputs_present(node, m, table, leaf.rows)]
    out = {}
    for m in mods:
        keys = leaf.keys(m)
        todo = store.index(space, m).find(keys) < 0
        if todo.any():
            for _, a, block in fuse_blocks(node, projectors, leaf.rows, table=table,
                                           modalities=[m], chunk_rows=chunk_rows,
                                           device=device):
                b = a + block.shape[0]
                if todo[a:b].any():
                    store.put(space, m, keys[a:b], block.detach().cpu().float().numpy())
        out[m] = leaf.resident(store.view(space, m, keys))
    return out


def _inputs_present(node, modality, table, rows) -> bool:
    from freebind.fusion.graph import inputs_needed

    need = inputs_needed(node, modality, table)
    return all(m in rows.get(ref, {}) for ref, ms in need.items() for m in ms)
