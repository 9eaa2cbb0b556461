"""Bundles: one ``.safetensors`` file holding projector weights, with JSON metadata in the
header (format version, canonical expression, plan with graph and jobs, presets, spaces,
training config, data fingerprints, evaluation results). No pickle anywhere.

``save`` is atomic (a temporary file in the same folder, fsync, rename), so an interrupted
save never leaves a partial file under the final name. ``load`` reports a truncated file,
a file that is not safetensors, another format version or missing tensors in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from freebind.util.atomic import atomic_write
from freebind.util.errors import BundleError
from freebind.util.text import first_line

FORMAT_VERSION = 1
METADATA_KEY = "freebind"


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(value)


def save(path: str | os.PathLike, tensors: Mapping[str, object], metadata: dict) -> Path:
    """Write ``tensors`` and ``metadata`` (JSON-able) to ``path`` atomically."""
    from safetensors.numpy import save_file

    from freebind.util.version import __version__

    meta = {"format_version": FORMAT_VERSION, "freebind_version": __version__, **metadata}
    meta["format_version"] = FORMAT_VERSION
    arrays = {name: _to_numpy(t) for name, t in tensors.items()}
    meta["weights_fingerprint"] = weights_fingerprint(meta.get("expression", ""), arrays)
    header = {METADATA_KEY: json.dumps(meta, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=header))


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a bundle, reading only its header."""
    return _open(path)[1]


def load(path: str | os.PathLike, required: list[str] | None = None
         ) -> tuple[dict[str, np.ndarray], dict]:
    """``(tensors, metadata)``; ``required`` names tensors that must be present."""
    handle, meta = _open(path)
    with handle as f:
        keys = set(f.keys())
        missing = [k for k in (required or []) if k not in keys]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise BundleError(f"{path}: bundle is missing tensors {', '.join(missing[:3])}"
                              f"{more}")
        try:
            tensors = {k: f.get_tensor(k) for k in sorted(keys)}
        except Exception as exc:
            raise BundleError(f"{path}: cannot read tensors ({first_line(exc)}); the file "
                              f"is probably truncated") from None
    return tensors, meta


def _open(path):
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        from freebind.util.errors import BundleMissing

        raise BundleMissing(f"{path}: no such bundle file")
    if path.is_dir():
        from freebind.util.errors import BundleMissing

        raise BundleMissing(f"{path}: is a folder, not a bundle file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or n > size - 8:
            raise ValueError("bad header length")
        handle = safe_open(str(path), framework="numpy")
    except Exception as exc:
        reason = "truncated" if size > 8 and _looks_like_safetensors(path) else \
            "not a safetensors file"
        raise BundleError(f"{path}: {reason} ({first_line(exc)})") from None
    raw = (handle.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise BundleError(f"{path}: a safetensors file but not a freebind bundle (no "
                          f"'{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: bundle metadata is not valid JSON ({exc})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version}; this freebind reads "
                          f"version {FORMAT_VERSION}")
    return handle, meta


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def weights_fingerprint(expression: str, arrays: Mapping[str, object]) -> str:
    """The identity of a bundle's weights (what
    :attr:`~freebind.fusion.fused.FusedSpace.weights_fingerprint` gives), kept in its header
    so that a result or preset can say which weights it was measured on."""
    import hashlib

    h = hashlib.sha256(expression.encode())
    for name, value in sorted(arrays.items()):
        h.update(name.encode())
        h.update(_to_numpy(value).tobytes())
    return h.hexdigest()[:16]


# --- what a user stored in a bundle: presets, their tuning records, evaluation results -----

#: ``metadata["tuning"]["format"]`` of per-preset tuning records.
TUNING_FORMAT = 2


def tuning_records(meta: Mapping) -> dict[str, dict]:
    """``{preset: record}``: how each preset ``freebind tune`` stored was tuned (its suites
    with their data folder, fingerprint and item counts, the grid, the scores it was chosen
    for, the weights it was measured on). A bundle tuned before records were kept per preset
    (one ``tuning`` entry for its last run) gives that run's record to each of its presets,
    marked ``"legacy": true`` (its data folders were not recorded)."""
    tuning = dict(meta.get("tuning") or {})
    if tuning.get("format") == TUNING_FORMAT:
        return {k: dict(v) for k, v in (tuning.get("presets") or {}).items()}
    out = {}
    best = tuning.get("best") or {}
    for name in tuning.get("presets") or {}:
        scores = dict(tuning.get("versatile") or {}) if name.endswith("-versatile") else \
            {t: v for t, v in best.items() if name.endswith(_task_suffix(t))}
        out[name] = {"suites": {s: {} for s in tuning.get("suites", [])},
                     "grid": dict(tuning.get("grid") or {}),
                     "coarse_choice": list(tuning.get("coarse_choice") or []),
                     "scores": scores, "base": dict(tuning.get("base") or {}),
                     "legacy": True}
    return out


def _task_suffix(task: str) -> str:
    """``-audiocaps-t2a`` for ``audiocaps:t2a_R@1``, ``-esc50`` for ``esc50:acc1`` (the end
    of the preset name tune gives a task)."""
    suite, _, metric = task.partition(":")
    return f"-{suite}" + (f"-{metric.split('_')[0]}" if "_" in metric else "")


def store_presets(path: str | os.PathLike, presets: Mapping[str, list[str]],
                  records: Mapping[str, dict] | None = None) -> dict[str, dict]:
    """Add (or replace) named presets in a bundle file, atomically, each with its tuning
    ``records[name]`` (a preset stored without one loses the record of the preset it
    replaces). Every preset must resolve on the bundle (checked before writing). Returns
    what was replaced: ``{name: {"factors": old overrides, "record": old record or None}}``."""
    from freebind.fusion.factors import resolve

    tensors, meta = load(path)
    old = dict(meta.get("presets") or {})
    merged = {**old, **{k: list(v) for k, v in presets.items()}}
    graph = meta["plan"]["graph"]
    for name in presets:                     # every preset must resolve on this bundle
        resolve(graph, (), merged, name)
    kept = tuning_records(meta)
    replaced = {name: {"factors": list(old[name]), "record": kept.get(name)}
                for name in presets if name in old}
    for name in presets:
        kept.pop(name, None)
    kept.update({k: dict(v) for k, v in (records or {}).items() if k in presets})
    meta["presets"] = merged
    meta["tuning"] = {"format": TUNING_FORMAT, "presets": kept}
    if not kept:
        meta.pop("tuning")
    save(path, tensors, meta)
    return replaced


def user_made(meta: Mapping) -> dict[str, list[str]]:
    """What a user added to a bundle after its build: ``{"presets": names (tuned or stored;
    the expression's own presets are not counted), "evaluation": datasets recorded by
    ``eval --record``}``."""
    from freebind.fusion.factors import paper_presets

    graph = (meta.get("plan") or {}).get("graph")
    own = paper_presets(graph) if graph else {}
    presets = [k for k, v in (meta.get("presets") or {}).items() if own.get(k) != list(v)]
    return {"presets": presets, "evaluation": sorted(meta.get("evaluation") or {})}


def carried(meta: Mapping, previous: Mapping) -> dict:
    """``meta`` (a new build's metadata) with what a user made in the ``previous`` bundle of
    the same graph: its presets, their tuning records and its recorded evaluation, each
    record stamped with the weights it was measured on (the previous bundle's, when it did
    not say), so that ``freebind info`` can tell them from results on the new weights."""
    out = dict(meta)
    weights = previous.get("weights_fingerprint")
    out["presets"] = {**(meta.get("presets") or {}), **(previous.get("presets") or {})}
    records = tuning_records(previous)
    for rec in records.values():
        rec.setdefault("weights", weights)
    if records:
        out["tuning"] = {"format": TUNING_FORMAT, "presets": records}
    evaluation = {ds: {k: {**e, "weights": e.get("weights", weights)} for k, e in s.items()}
                  for ds, s in (previous.get("evaluation") or {}).items()}
    if evaluation:
        out["evaluation"] = evaluation
    return out
