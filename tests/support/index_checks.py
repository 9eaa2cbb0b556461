"""Random fused-space pieces and leaf embeddings for the search index tests, and the check
that an index ranks exactly as re-fusing its items does."""

from __future__ import annotations

import numpy as np

MODALITIES = ("audio", "image", "text")


def random_projectors(p, g, hidden: int = 16) -> dict:
    """One random projector group (2 experts, in eval mode) per job of plan ``p``, drawn from
    the torch generator ``g``."""
    from freebind.fusion.projector import ProjectorGroup

    return {j.id: ProjectorGroup(2, j.source_dim, j.target_dim, hidden=hidden,
                                 generator=g).eval() for j in p.jobs}


def random_leaves(fs, n: int, seed: int = 0) -> dict:
    """``{space: {modality: [n, dim]}}``: random base-space rows of every leaf of ``fs``."""
    rng = np.random.default_rng(seed)
    return {ref: {m: rng.normal(size=(n, meta["dim"])).astype(np.float32)
                  for m in meta["modalities"]} for ref, meta in fs.plan.spaces.items()}


def add_all(index, leaves: dict, n: int, offset: int = 0) -> None:
    """Add ``n`` items of every modality (named ``<modality><i + offset>``) from ``leaves``."""
    for m in MODALITIES:
        index.add_leaves(m, [f"{m}{i + offset}" for i in range(n)],
                         {r: leaves[r][m] for r in leaves if m in leaves[r]})


def assert_ranks_as_refusing(fs, leaves: dict, index, modality: str, factors, *, k: int,
                             queries: int, seed: int, top: int) -> list:
    """Search ``queries`` random unit vectors (drawn from ``seed``) for ``k`` ``modality``
    items under ``factors``: every score is the dot product with the item fused again under
    those factors, and the first ``top`` hits are the re-fused ranking's. Returns the hits."""
    from freebind.fusion.graph import fuse

    table = index._table(factors)
    ref = fuse(fs.graph, fs.projectors, leaves, table=table, modalities=[modality])[modality]
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(queries, fs.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    hits = index.search_many([None] * queries, vectors=q, modality=modality, k=k,
                             factors=factors)
    for qi, row in enumerate(hits):
        expected = ref.numpy() @ q[qi]
        order = np.array([int(h.path[len(modality):]) for h in row])
        np.testing.assert_allclose([h.score for h in row], expected[order], atol=1e-5)
        assert list(order[:top]) == list(np.argsort(-expected, kind="stable")[:top])
    return hits
