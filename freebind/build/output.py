"""The end of a build (step 4): the :class:`~freebind.fusion.fused.FusedSpace` bundle of its
trained jobs (:func:`make_bundle`, deterministic content: no times, no absolute paths) and
where it is saved (:func:`default_output`, :func:`save_bundle`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from freebind.build.leaf_embeddings import LeafPools
from freebind.util.vocab import POOL_MODALITIES


def _slug(expression: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", expression).strip("-").lower()
    return (s[:80] or "fused") + ".safetensors"


def default_output(expression: str) -> Path:
    return Path(_slug(expression))


def make_bundle(plan, projectors: Mapping, training: Mapping, leaf: LeafPools,
                leaves: Mapping):
    """The :class:`~freebind.fusion.fused.FusedSpace` of a finished build: projectors, routers,
    training summaries, each space's fingerprint (and where its rows came from) and each
    pool's (items kept, content fingerprint)."""
    from freebind.fusion.fused import FusedSpace

    space_meta = {ref: {**plan.spaces[ref], "fingerprint": str(leaves[ref].space.fingerprint),
                        **leaves[ref].meta()} for ref in plan.spaces}
    data_fp = {}
    for m in POOL_MODALITIES:
        if m in leaf.kept:
            h = hashlib.sha256(m.encode())
            keys = leaf.keys(m)
            for a in range(0, len(keys), 1 << 16):   # the keys' bytes, block by block
                h.update(np.ascontiguousarray(keys[a:a + (1 << 16)]).tobytes())
            data_fp[m] = {"items": int(len(leaf.kept[m])), "fingerprint": h.hexdigest()[:16]}
    return FusedSpace.from_plan(plan, projectors, spaces=space_meta, training=training,
                                data=data_fp)


def save_bundle(fused, expression: str, output=None) -> Path:
    """Save a built bundle to ``output`` (default: named after the expression) and record
    it as the latest build (:func:`freebind.run.implicit.record_build`); returns its path."""
    from freebind.run.implicit import record_build

    out = Path(output) if output is not None else default_output(expression)
    fused.save(out)
    record_build(out, expression)
    return out
