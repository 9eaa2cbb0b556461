"""The end of a build (step 4): the :class:`~freebind.fusion.fused.FusedSpace` bundle of its
trained jobs (:func:`make_bundle`, deterministic content: no times, no absolute paths) and
where it is saved (:func:`default_output`, :func:`save_bundle`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable, Mapping

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


def previous_bundle(plan, output=None, force: bool = False,
                    say: Callable[[str], None] | None = None) -> dict | None:
    """Pre-flight of the file a build will write (``output``, default named after the
    expression): nothing a user made is overwritten without asking.

    A bundle there holding presets or recorded results (``tune``, ``eval --record``,
    :func:`freebind.fusion.bundle.user_made`) for the same graph (bonds, experts, factors:
    the presets still mean the same) gives its metadata back, to be carried into the new
    bundle (:func:`save_bundle`). For another graph, or a file that is not a bundle, the
    build stops here saying what would be lost, unless ``force``. None when there is nothing
    to keep."""
    import json

    from freebind.fusion import bundle as bundle_io
    from freebind.util.errors import BundleError, UsageError
    from freebind.util.text import first_line

    say = say or (lambda msg: None)
    out = Path(output) if output is not None else default_output(plan.expression)
    if not out.is_file():
        return None
    try:
        meta = bundle_io.read_metadata(out)
    except BundleError as exc:
        if force:
            return None
        raise UsageError(f"{first_line(exc)}; the build would overwrite it: pass --force to "
                         f"overwrite it, or -o another file") from None
    made = bundle_io.user_made(meta)
    if not (made["presets"] or made["evaluation"]):
        return None
    lost = _made_text(made)
    same = json.dumps((meta.get("plan") or {}).get("graph"), sort_keys=True) == \
        json.dumps(json.loads(json.dumps(plan.to_dict()["graph"])), sort_keys=True)
    if same:
        if not meta.get("weights_fingerprint"):      # written before headers kept it
            arrays, _ = bundle_io.load(out)
            meta["weights_fingerprint"] = bundle_io.weights_fingerprint(
                meta.get("expression", ""), arrays)
        say(f"{out} is a bundle of the same graph: its {lost} are kept in the new bundle")
        return meta
    if not force:
        raise UsageError(f"{out} holds {lost} of {meta.get('expression', '?')}; a build of "
                         f"another graph ({plan.expression}) would lose them: pass --force to "
                         f"overwrite it, or -o another file")
    say(f"--force: overwriting {out} and its {lost}")
    return None


def _made_text(made: dict) -> str:
    parts = []
    if made["presets"]:
        parts.append(f"preset(s) {', '.join(made['presets'])}")
    if made["evaluation"]:
        parts.append(f"results recorded on {', '.join(made['evaluation'])}")
    return " and ".join(parts)


def check_output(output) -> None:
    """A bundle is one ``.safetensors`` file: any other name (``out.txt``, a folder) is refused
    before any work, as the CLI's ``-o`` is."""
    if output is None:
        return
    from freebind.util.errors import UsageError

    path = Path(output)
    if path.is_dir():
        raise UsageError(f"output {path}: is a folder, not a file; name the file to write "
                         f"(NAME.safetensors)")
    if path.suffix.lower() != ".safetensors":
        named = path.with_suffix(".safetensors") if path.suffix else f"{path}.safetensors"
        raise UsageError(f"output {path}: a bundle is a .safetensors file; name it {named}")


def save_bundle(fused, expression: str, output=None, previous: dict | None = None) -> Path:
    """Save a built bundle to ``output`` (default: named after the expression) and record
    it as the latest build (:func:`freebind.run.implicit.record_build`); returns its path.
    ``previous`` (from :func:`previous_bundle`) is the metadata of the bundle it replaces,
    whose presets, tuning records and recorded results are carried over, stamped with the
    weights they were measured on (:func:`freebind.fusion.bundle.carried`)."""
    from freebind.fusion.bundle import carried
    from freebind.run.implicit import record_build

    out = Path(output) if output is not None else default_output(expression)
    if previous is not None:
        fused.metadata.update(carried(fused.metadata, previous))
    fused.save(out)
    record_build(out, expression)
    return out
