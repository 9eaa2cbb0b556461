"""Engines: where the encoder work of ``embed`` and ``build`` runs.

The unit of work is a *chunk*: up to ``shard_size`` distinct items of one modality for one
space, whose embeddings become one store shard (:mod:`freebind.run.engines.chunks`). Chunks are
laid out from the items alone, never from what the cache already holds, so every engine, and
every slice of a job split with ``shard=(i, n)``, agrees on them; a chunk whose items are all
cached is done and skipped.

* ``local``: chunks are encoded in this process, through the store.
* ``ray``: chunks are encoded on Ray Data (:mod:`freebind.run.engines.ray_engine`): decoding in a
  parallel read stage, one encoder loaded once per actor of an actor pool. Ray is imported
  only when this engine is chosen.

After an engine filled the store, the caller's usual local pass reads it: partitions and
bundles are written by the same code whatever the engine, so they are byte-identical.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from freebind.run.engines.options import (  # noqa: F401  (the package's API)
    ENGINES, EngineOptions, FillReport, WorkerStats, engine_options, in_slice, parse_shard,
    require_ray, worker_table,
)


def fill(calls: Iterable, spaces: Mapping[str, Any], store,
         options: EngineOptions | None = None,
         shard: tuple[int, int] | None = None, batch_size: int = 64, progress: bool = True,
         space_options: Mapping | None = None) -> FillReport:
    """Encode what the store lacks for ``calls`` (:class:`~freebind.run.engines.chunks.StoreCall`:
    a space reference, a modality, items) on the chosen engine, chunk by chunk; with
    ``shard=(i, n)`` only the chunks of slice i. ``spaces`` maps each reference to its
    opened space (for its name, fingerprint and dim; the local engine encodes with it)."""
    import time

    from freebind.run.engines.chunks import plan_chunks

    options = options or EngineOptions()
    t0 = time.perf_counter()
    chunks, key_failures = plan_chunks(store, spaces, calls)
    report = FillReport(options.engine, chunks=len(chunks))
    report.failures += key_failures
    todo = [c for c in chunks if c.todo and in_slice(c.index, shard)]
    report.done_before = sum(1 for c in chunks if not c.todo and in_slice(c.index, shard))
    if todo:
        if options.engine == "ray":
            from freebind.run.engines import ray_engine

            ray_engine.run(todo, spaces, store, options, report, batch_size=batch_size,
                           progress=progress, space_options=dict(space_options or {}))
        else:
            from freebind.run.engines import local

            local.run(todo, spaces, store, report, batch_size=batch_size, progress=progress)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
