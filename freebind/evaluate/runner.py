"""Evaluate spaces and bundles on suites: embed (through the embedding cache), fuse, score.

A *target* is a space reference (``mini:bind``, ``IB``, ``open_clip:…``) or a bundle file
(``fused.safetensors``, optionally ``fused.safetensors@preset``). For a bundle the cache holds
the *base* spaces' embeddings and the fused ones are computed from them with the factors of
the call (:meth:`FusedSpace.fuse`): evaluating other factors re-encodes nothing.

Results follow CLIP_benchmark's flat JSON (``dataset``, ``model``, ``task``, ``metrics``),
plus freebind's ``protocol``, ``factors``, ``preset`` and ``missing`` counts.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from freebind.util.errors import UsageError
from freebind.evaluate.suites import EvalSet, info as suite_info, load_suite
from freebind.evaluate.suites.tasks import select_rows
from freebind.run.targets import Target, is_bundle_ref, open as open_target  # noqa: F401


def load_target(ref: str, factors: Sequence[str] = (), preset: str | None = None, *,
                space_options: Mapping[str, Any] | None = None) -> Target:
    """Resolve ``ref`` (:func:`freebind.run.targets.open`); a bundle may carry a preset as
    ``path@preset``. ``space_options`` go to every ``spaces.get`` of the target."""
    return open_target(ref, factors, preset, space_options=space_options)


def _store(store):
    if store is not None and not isinstance(store, (str, Path)):
        return store
    from freebind.data.store import EmbeddingStore

    return EmbeddingStore(store)


@dataclass
class Embedded:
    """A suite's inputs embedded by a target's spaces: ``rows[ref][modality]`` (memory-mapped
    store views, or arrays) aligned with ``items[modality]`` (only items every space could
    decode); ``scratch`` is where fused rows too large for memory go (next to the cache)."""

    evalset: EvalSet
    items: dict[str, list[Any]]
    rows: dict[str, dict[str, np.ndarray]]
    encoded: int = 0
    scratch: Path | None = None


#: Fused rows of a suite up to this size stay in memory; larger ones are written, chunk by
#: chunk, to a temporary memory-mapped file (:func:`scratch_array`).
IN_MEMORY_BYTES = 16 << 20


def scratch_array(n: int, dim: int, folder: str | Path | None = None) -> np.ndarray:
    """A float32 ``[n, dim]`` array to fill block by block: in memory up to
    :data:`IN_MEMORY_BYTES`, else an ``np.lib.format.open_memmap`` file in ``folder`` (the
    system's temporary folder when None) whose name is removed at once, so the file goes
    when the array does."""
    import os
    import tempfile

    if n * dim * 4 <= IN_MEMORY_BYTES:
        return np.empty((n, dim), dtype=np.float32)
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(suffix=".npy", prefix="fused-", dir=folder)
    os.close(fd)
    arr = np.lib.format.open_memmap(name, mode="w+", dtype=np.float32, shape=(n, dim))
    try:
        os.unlink(name)          # the mapping keeps the data until the array is dropped
    except OSError:              # pragma: no cover - platforms that keep open files
        import weakref

        weakref.finalize(arr, lambda p=name: Path(p).unlink(missing_ok=True))
    return arr


def collect_blocks(blocks, n_rows: Mapping[str, int],
                   folder: str | Path | None = None) -> dict[str, np.ndarray]:
    """``{modality: float32 rows}`` from ``(modality, start, block)`` chunks (as
    :meth:`FusedSpace.fuse_blocks` yields them), each modality's rows in one
    :func:`scratch_array`: what is held in memory is one chunk."""
    out: dict[str, np.ndarray] = {}
    for m, a, block in blocks:
        arr = block.detach().to("cpu").float().numpy() if hasattr(block, "detach") \
            else np.asarray(block, dtype=np.float32)
        if m not in out:
            out[m] = scratch_array(int(n_rows[m]), arr.shape[1], folder)
        out[m][a:a + arr.shape[0]] = arr
    return out


def embed_suite(target: Target, evalset: EvalSet, store=None, batch_size: int = 64,
                progress: bool = True) -> Embedded:
    """Embed every input of ``evalset`` with the target's (base) spaces, through the cache.
    Undecodable items are dropped from the set and reported in its ``missing`` list."""
    from freebind.data.align import encode_aligned

    store = _store(store)
    before = getattr(store, "encoded", 0)
    needed = evalset.inputs()
    lacking = [m for m in needed if m not in target.modalities]
    if lacking:
        raise UsageError(f"{target.label} has no {', '.join(lacking)} modality; suite "
                         f"{evalset.suite} needs {', '.join(needed)}")
    per_space: dict[str, dict[str, tuple[list, np.ndarray]]] = {}
    failed: dict[str, set] = {}
    for m, items in needed.items():
        got = encode_aligned([(ref, target.base_space(ref), m) for ref in target.leaf_refs(m)],
                             items, store=store, batch_size=batch_size, progress=progress,
                             lazy=_lazy(store))
        kept_items = [items[i] for i in got.kept]
        for ref, arr in got.rows.items():
            per_space.setdefault(ref, {})[m] = (kept_items, arr)
        failed.setdefault(m, set()).update(items[f.index] for _, f in got.all_failures)
    for m, bad in failed.items():
        evalset = evalset.drop_failed(m, bad)
    items = evalset.inputs()
    rows: dict[str, dict[str, np.ndarray]] = {}
    for ref, mods in per_space.items():
        for m, (kept_items, arr) in mods.items():
            pos = {x: i for i, x in enumerate(kept_items)}
            rows.setdefault(ref, {})[m] = select_rows(arr, [pos[x] for x in items[m]])
    root = getattr(store, "root", None)
    return Embedded(evalset, items, rows, getattr(store, "encoded", 0) - before,
                    Path(root) / "scratch" if root is not None else None)


def _lazy(store) -> bool:
    """Whether ``store`` hands out memory-mapped views (an EmbeddingStore does)."""
    import inspect

    try:
        return "lazy" in inspect.signature(store.embed).parameters
    except (TypeError, ValueError):
        return False


def target_embeddings(target: Target, emb: Embedded, factors: Sequence[str] = (),
                      preset: str | None = None) -> dict[str, tuple[list, np.ndarray]]:
    """``{modality: (items, array)}`` in the target's space with these factors."""
    if not target.is_bundle:
        return {m: (emb.items[m], emb.rows[target.ref][m]) for m in emb.items}
    fused = fuse_suite(target.fused, emb, factors, preset)
    return {m: (emb.items[m], fused[m]) for m in emb.items}


def fuse_suite(fused, emb: Embedded, factors: Sequence[str] = (), preset: str | None = None,
               chunk_rows: int | None = None) -> dict[str, np.ndarray]:
    """The bundle's fused rows of every modality of the suite, fused chunk by chunk
    (:meth:`FusedSpace.fuse_blocks`) into :func:`scratch_array` s."""
    blocks = fused.fuse_blocks(emb.rows, factors=list(factors) or None, preset=preset,
                               modalities=list(emb.items), chunk_rows=chunk_rows)
    return collect_blocks(blocks, {m: len(v) for m, v in emb.items.items()}, emb.scratch)


def base_embeddings(target: Target, emb: Embedded) -> dict[str, tuple[list, np.ndarray]]:
    """The bundle's base space alone (the reference of the paper's factor analysis)."""
    ref = target.base_ref
    return {m: (emb.items[m], emb.rows[ref][m]) for m in emb.items}


def result_record(target: Target, evalset: EvalSet, metrics: Mapping[str, float],
                  factors: Sequence[str] = (), preset: str | None = None,
                  seconds: float | None = None) -> dict[str, Any]:
    from freebind.util.version import __version__

    tasks = sorted({t.kind for t in evalset.tasks})
    rec: dict[str, Any] = {
        "dataset": evalset.suite,
        "model": target.label,
        "pretrained": str(Path(target.ref.split("@", 1)[0]).resolve()) if target.is_bundle
        else target.ref,
        "task": tasks[0] if len(tasks) == 1 else tasks,
        "metrics": dict(metrics),
        "language": "en",
        "target": target.ref,
        "expression": target.fused.name if target.is_bundle else target.ref,
        "preset": preset if preset is not None else target.preset,
        "factor_overrides": list(target.factors) + list(factors),
        "factors": target.describe_factors(factors, preset),
        "protocol": evalset.protocol(),
        "data": str(evalset.root),
        "freebind_version": __version__,
    }
    if seconds is not None:
        rec["seconds"] = round(seconds, 3)
    return rec


def evaluate(target: Target | str, suite: str | EvalSet, data: str | Path | None = None, *,
             factors: Sequence[str] = (), preset: str | None = None, store=None,
             suite_options: Mapping | None = None, batch_size: int = 64,
             progress: bool = True, space_options: Mapping | None = None,
             block_rows: int | None = None,
             budget_bytes: int | None = None) -> dict[str, Any]:
    """Evaluate one target on one suite (a name with its ``data`` folder, or a loaded
    :class:`EvalSet`); returns the result record. ``space_options`` (device, precision, …)
    apply when ``target`` is a reference to load; a loaded Target keeps its own.
    ``block_rows``/``budget_bytes`` size the metrics' blocks (see
    :func:`freebind.evaluate.metrics.retrieval.block_rows_for`)."""
    t0 = time.perf_counter()
    if isinstance(target, str):
        target = load_target(target, space_options=space_options)
    evalset = suite if isinstance(suite, EvalSet) else \
        load_suite(suite, data, **dict(suite_options or {}))
    emb = embed_suite(target, evalset, store=store, batch_size=batch_size, progress=progress)
    metrics = emb.evalset.score(target_embeddings(target, emb, factors, preset),
                                block_rows=block_rows, budget_bytes=budget_bytes)
    rec = result_record(target, emb.evalset, metrics, factors, preset,
                        time.perf_counter() - t0)
    rec["encoded"] = emb.encoded
    return rec


def headline(suite: str, metrics: Mapping[str, float]) -> list[str]:
    """The metrics a summary shows for ``suite`` (all R@1 / acc1 / mAP when not declared)."""
    declared = [m for m in suite_info(suite).headline if m in metrics]
    if declared:
        return declared
    return [k for k in metrics if k.endswith("_R@1") or k in ("acc1", "mAP")]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+@-]+", "_", text).strip("_") or "target"


def output_path(template: str, record: Mapping[str, Any]) -> Path:
    """Fill ``{dataset}``, ``{model}``, ``{task}``, ``{preset}``, ``{tag}`` in ``template``.
    A template with no field that does not end in ``.json`` is a folder:
    ``FOLDER/{model}/{dataset}.json``."""
    if "{" not in template and not template.endswith(".json"):
        template = str(Path(template) / "{model}" / "{dataset}.json")
    task = record["task"] if isinstance(record["task"], str) else "+".join(record["task"])
    fields = {"dataset": record["dataset"], "model": slug(record["model"]), "task": task,
              "preset": record.get("preset") or "default",
              "tag": slug(record["model"]) + "__" + record["dataset"]}
    try:
        return Path(template.format(**fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"output template {template!r}: unknown field {exc}; use {{dataset}}, "
                         "{model}, {task}, {preset}") from None


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    import json

    from freebind.util.atomic import atomic_write_text

    text = json.dumps(data, indent=2, default=lambda o: o.tolist()) + "\n"
    return atomic_write_text(path, text)


# --- tuning ---------------------------------------------------------------------------------

def tune_target(target: Target, suites: Sequence[tuple[str, Path, Mapping]],
                grids: Sequence[tuple[str, list[float]]], store=None, prefix: str = "tuned",
                batch_size: int = 64, progress: bool = True, use_fast: bool = True):
    """Coarse-to-fine customised inference of a bundle on cached embeddings (see
    :mod:`freebind.evaluate.tuning`). Returns ``(TuneResult, {suite: Embedded})``."""
    from freebind.evaluate.tuning import LastBondMixer, MemoProjectors, reproducing, tune
    from freebind.fusion.factors import resolve
    from freebind.fusion.graph import fuse_blocks

    if not target.is_bundle:
        raise UsageError(f"{target.ref}: tune needs a bundle (.safetensors), not a plain space")
    store = _store(store)
    embedded: dict[str, Embedded] = {}
    for name, folder, options in suites:
        evalset = load_suite(name, folder, **dict(options))
        embedded[name] = embed_suite(target, evalset, store=store, batch_size=batch_size,
                                     progress=progress)
    fused = target.fused
    projectors = MemoProjectors(fused.projectors)

    def table_of(overrides: list[str]):
        return resolve(fused.graph, [*fused.overrides, *overrides], fused.presets, fused.preset)

    def fuse_rows(overrides: list[str], modalities: list[str] | None = None) -> dict:
        table = table_of(overrides)
        out = {}
        for name, emb in embedded.items():
            mods = [m for m in (modalities or list(emb.items)) if m in emb.items]
            blocks = fuse_blocks(fused.graph, projectors, emb.rows, table=table,
                                 modalities=mods)
            out[name] = collect_blocks(blocks, {m: len(emb.items[m]) for m in mods},
                                       emb.scratch)
        return out

    def fuse(overrides: list[str]) -> dict:
        return {name: {m: (embedded[name].items[m], rows) for m, rows in mods.items()}
                for name, mods in fuse_rows(overrides).items()}

    def fast(points: list[list[str]]):
        if not use_fast:
            return None
        return LastBondMixer.build(fused.graph, table_of, fuse_rows, embedded, points)

    result = tune(
        fused, [(s, embedded[s]) for s, _, _ in suites], grids,
        tasks_of=headline,
        score_base=lambda s: embedded[s].evalset.score(base_embeddings(target, embedded[s])),
        score=lambda s, f: embedded[s].evalset.score(f[s]),
        fuse=fuse, prefix=prefix, progress=progress, fast=fast,
        # a bundle opened as bundle@p (or with factors) was measured on top of them: the
        # stored preset carries them, so that it reproduces the measured row on its own
        stored=lambda overrides: reproducing(fused.graph, table_of(overrides), overrides))
    return result, embedded


def record_evaluation(path: str | Path, record: Mapping[str, Any]) -> Path:
    """Keep a result in the bundle's metadata (``"evaluation"``, keyed by dataset and by the
    preset/factors it was measured with), rewriting the bundle atomically."""
    from freebind.fusion import bundle as bundle_io

    tensors, meta = bundle_io.load(path)
    setting = record.get("preset") or "default"
    if record.get("factor_overrides"):
        setting += "[" + ",".join(record["factor_overrides"]) + "]"
    entry = {"metrics": dict(record["metrics"]), "task": record["task"],
             "data": record.get("data"), "missing": record["protocol"]["missing"],
             "freebind_version": record.get("freebind_version"),
             "weights": meta.get("weights_fingerprint") or bundle_io.weights_fingerprint(
                 meta.get("expression", ""), tensors)}
    evaluation = dict(meta.get("evaluation") or {})
    evaluation.setdefault(record["dataset"], {})[setting] = entry
    meta["evaluation"] = evaluation
    return bundle_io.save(path, tensors, meta)
