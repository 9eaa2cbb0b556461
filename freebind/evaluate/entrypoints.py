"""The evaluation and tuning APIs: :func:`evaluate` (targets × suites → result records) and
:func:`tune` (a bundle's coarse-to-fine customised inference → :class:`TuneResult`, with
its heatmap, ``tune.json`` and presets stored in the bundle). ``freebind eval`` and
``freebind tune`` are argument parsing and printing over these two.

Both embed through the embedding cache (for a bundle: its base spaces' embeddings), so
evaluating other factors or presets, or sweeping a grid, re-encodes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from freebind.util.errors import UsageError


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def pair_data(suites: Sequence[str], data: Sequence) -> list[tuple[str, Path]]:
    """``(suite, folder)`` pairs: one folder per suite, or one root holding a folder per
    suite (the mini world's layout; a root without that folder is used as is)."""
    suites, data = [str(s) for s in suites], [Path(d) for d in data]
    if not suites:
        raise UsageError("suites: give at least one suite name")
    if not data:
        raise UsageError("data: give the dataset folder")
    if len(data) == len(suites):
        return list(zip(suites, data))
    if len(data) == 1:
        root = data[0]
        return [(s, root / s if (root / s).is_dir() else root) for s in suites]
    raise UsageError(f"{len(suites)} suites but {len(data)} data folders: give one folder "
                     "per suite, or one root with a folder per suite")


def default_targets(targets) -> list:
    """``targets`` as given, or the default bundle (:mod:`freebind.run.implicit`) when none is."""
    targets = _as_list(targets)
    if targets:
        return targets
    from freebind.run.implicit import default_target

    return [default_target().value]


def default_data(suites, data, targets, store=None, cache_dir=None,
                 progress: bool = False) -> list:
    """``data`` as given, or each suite's default folder
    (:func:`freebind.evaluate.suite_data.suite_data`: ``$FREEBIND_DATA/<suite>``, or the mini
    evaluation sets for mini targets)."""
    data = _as_list(data)
    if data:
        return data
    from freebind.evaluate.suite_data import suite_data

    if store is not None:
        cache_dir = store.root
    return [suite_data(str(s), targets, cache_dir=cache_dir, progress=progress).value
            for s in _as_list(suites)]


def split_suite_options(pairs: Sequence[tuple[str, Path]], options: Mapping[str, Any] | None,
                        what: str = "suite_options") -> list[dict]:
    """Each suite's share of ``options``; an option no chosen suite takes is an error."""
    from freebind.evaluate.suites import info

    options = dict(options or {})
    accepted = [info(s).options for s, _ in pairs]
    unused = [k for k in options if not any(k in acc for acc in accepted)]
    if unused:
        raise UsageError(f"{what} {unused[0]}: no chosen suite takes it")
    return [{k: v for k, v in options.items() if k in acc} for acc in accepted]


def _store(store, cache_dir):
    if store is not None:
        return store
    from freebind.data.store import EmbeddingStore

    return EmbeddingStore(cache_dir)


def evaluate(targets, suites, data, *, factors: Sequence[str] | str = (),
             preset: str | None = None, suite_options: Mapping[str, Any] | None = None,
             output: str | None = None, record: bool = False, store=None, cache_dir=None,
             batch_size: int = 64, progress: bool = True,
             space_options: Mapping[str, Any] | None = None, device: str | None = None,
             precision: str | None = None,
             warn: Callable[[str], None] | None = None, block_rows: int | None = None,
             budget_bytes: int | None = None) -> list[dict[str, Any]]:
    """Evaluate every target (space references, bundles, ``bundle@preset``, or targets from
    :func:`freebind.open`) on every suite; one result record per (target, suite), in suite
    order then target order.

    ``data`` is one folder per suite or one root with a folder per suite; ``factors`` and
    ``preset`` apply to the bundles; ``suite_options`` go to the suite loaders that take
    them (``split``, ``templates``, ``manifest``, …); ``output`` is a file template
    (``{dataset}``, ``{model}``, ``{task}``, ``{preset}``) each record is written to (its
    ``path``); ``record=True`` also keeps each bundle's results in its metadata. ``warn``
    receives a line for every suite whose listed files are partly missing.

    Memory is bounded by blocks, not by a suite: embeddings are read memory-mapped from
    the cache, a bundle fuses chunk by chunk, and the metrics score ``block_rows`` ×
    ``block_rows`` similarities at a time (default from ``budget_bytes``, 256 MiB)."""
    from freebind.evaluate.runner import (
        evaluate as evaluate_one, output_path, record_evaluation, write_json,
    )
    from freebind.evaluate.suites import load_suite
    from freebind.run.targets import open as open_target
    from freebind.util.vocab import merge_space_options

    if int(batch_size) < 1:
        raise UsageError(f"batch_size={batch_size}: must be at least 1")
    if block_rows is not None and int(block_rows) < 1:
        raise UsageError(f"block_rows={block_rows}: must be at least 1")
    if budget_bytes is not None and int(budget_bytes) < 1:
        raise UsageError(f"budget_bytes={budget_bytes}: must be positive")
    targets = default_targets(targets)
    if record:
        for t in targets:
            _check_writable(t, "record results")
    if isinstance(factors, str):
        factors = [factors]
    options = merge_space_options(space_options, device=device, precision=precision)
    # targets (their presets and factors) are checked before any suite data is written
    loaded = [open_target(t, list(factors), preset, space_options=options) for t in targets]
    pairs = pair_data(_as_list(suites), default_data(suites, data, targets, store, cache_dir,
                                                     progress))
    per_suite = split_suite_options(pairs, suite_options)
    store = _store(store, cache_dir)
    records = []
    for (name, folder), opts in zip(pairs, per_suite):
        evalset = load_suite(name, folder, **opts)
        if evalset.missing and warn is not None:
            warn(f"{name}: {len(evalset.missing)} of {evalset.listed} listed files missing "
                 f"(e.g. {evalset.missing[0]})")
        for target in loaded:
            rec = evaluate_one(target, evalset, store=store, batch_size=batch_size,
                               progress=progress, block_rows=block_rows,
                               budget_bytes=budget_bytes)
            if output:
                rec["path"] = str(write_json(output_path(output, rec), rec))
            if record and target.is_bundle:
                record_evaluation(target.path, rec)
            records.append(rec)
    return records


def parse_grids(grids) -> list[tuple[str, list[float]]]:
    """Grids as ``"a=0:1:0.1"`` / ``"t=0,0.5,1"`` strings, ``(key, values)`` pairs or a
    ``{key: values}`` mapping → ``[(key, values)]``; a key given twice is an error."""
    from freebind.evaluate.tuning import parse_grid

    if isinstance(grids, Mapping):
        grids = list(grids.items())
    out = []
    for g in _as_list(grids):
        if isinstance(g, str):
            out.append(parse_grid(g))
        else:
            key, values = g
            spec = f"{key}={','.join(str(float(v)) for v in values)}"
            out.append(parse_grid(spec))
    if len({k for k, _ in out}) != len(out):
        raise UsageError("grids: a key is given twice")
    return out


def tune(bundle, suites, data, grids=(), *, suite_options: Mapping[str, Any] | None = None,
         out=None, name: str = "tuned", save: bool = True, store=None, cache_dir=None,
         batch_size: int = 64, progress: bool = True,
         space_options: Mapping[str, Any] | None = None, device: str | None = None,
         precision: str | None = None):
    """Tune a bundle's factors on suites, the paper's coarse-to-fine way: switch bonds on and
    off (coarse), sweep ``grids`` (fine: at most two keys draw a heatmap), and name the best
    factors per task and a versatile set.

    Writes ``out/factor_analysis.png`` and ``out/tune.json`` (``out`` defaults to ``tune/<bundle
    name>``) and, with ``save``, stores the presets (``<name>-…``) in the bundle (only when
    ``bundle`` is given: a default bundle is never written), each with the record of what it
    was tuned on (suites' data folders, fingerprints and item counts, the grid, its measured
    row, the weights). Presets of other names stay; those of the same names are replaced
    and listed in ``result.replaced`` (and ``replaced`` in tune.json). A bundle opened as
    ``bundle@preset`` is measured on top of that preset, and the stored presets reproduce
    the measured rows on their own. Returns the
    :class:`~freebind.evaluate.tuning.TuneResult` with ``summary`` (what tune.json holds),
    ``figure`` and ``path`` set."""
    from freebind.evaluate.heatmap import draw
    from freebind.evaluate.runner import tune_target, write_json
    from freebind.evaluate.tuning import data_record
    from freebind.run.targets import open as open_target
    from freebind.util.vocab import merge_space_options

    if int(batch_size) < 1:
        raise UsageError(f"batch_size={batch_size}: must be at least 1")
    from freebind.util.optional import require

    parsed = parse_grids(grids)
    require("matplotlib", "the factor-analysis figure of tune")  # before any work
    # presets are written only into a bundle the caller named, never into a default one
    save = bool(save) and bool(_as_list(bundle))
    bundle = default_targets(bundle)[0]
    if save:
        _check_writable(bundle, "store tuned presets")
    pairs = pair_data(_as_list(suites), default_data(suites, data, [bundle], store, cache_dir,
                                                     progress))
    per_suite = split_suite_options(pairs, suite_options)
    triples = [(s, folder, opts) for (s, folder), opts in zip(pairs, per_suite)]
    options = merge_space_options(space_options, device=device, precision=precision)
    target = open_target(bundle, space_options=options)
    if not target.is_bundle:
        raise UsageError(f"{target.ref}: tune needs a bundle (.safetensors), not a plain space")
    path = target.path
    t0 = time.perf_counter()
    result, embedded = tune_target(target, triples, parsed, store=_store(store, cache_dir),
                                   prefix=name, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    out = Path(out) if out is not None else Path("tune") / path.stem
    figure = draw(result, out / "factor_analysis.png",
                  title=f"{target.fused.name}: change vs {target.base_ref}")
    data = {s: data_record(embedded[s].evalset) for s, _, _ in triples}
    summary = {"bundle": str(bundle), "expression": target.fused.name,
               "suites": {s: str(f) for s, f, _ in triples}, "data": data,
               "seconds": round(seconds, 2),
               "points": len(result.coarse) + len(result.fine), "figure": str(figure),
               **result.to_dict()}
    if save:
        result.replaced = _store_tuned(result, target, data)
        summary["replaced"] = {k: {"factors": v["factors"], "record": v["record"]}
                               for k, v in result.replaced.items()}
    result.path = write_json(out / "tune.json", summary)
    result.summary, result.figure, result.saved = summary, Path(figure), bool(save)
    return result


def _store_tuned(result, target, data: dict) -> dict[str, dict]:
    """Store the presets in the bundle file, each with its record (the data it was tuned
    on, the grid, its measured row, the weights); presets of other names are kept, those
    of the same names are replaced and returned (:func:`freebind.fusion.bundle.store_presets`)."""
    from freebind.evaluate.tuning import preset_records
    from freebind.fusion.bundle import store_presets
    from freebind.util.version import __version__

    fused = target.fused
    opened = {"preset": fused.preset, "factors": list(target.factors)}
    records = preset_records(result, data, measured_on=opened,
                             weights=fused.weights_fingerprint, freebind_version=__version__)
    return store_presets(target.path, result.presets, records)


def _check_writable(target, what: str) -> None:
    """A bundle named by a hub reference is huggingface_hub's cached copy: never rewritten
    (it would no longer be the revision it names). Checked before any work."""
    ref = str(getattr(target, "ref", target))
    if ref.startswith("hf:"):
        raise UsageError(f"{ref}: cannot {what} into a bundle in the Hugging Face cache; "
                         f"copy the bundle to a file of your own and use that file")
