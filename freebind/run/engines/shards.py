"""The engines of :func:`freebind.run.partitions.embed` over an embed plan's shards (partitions).

``shard=(i, n)`` keeps the partitions ``k`` with ``k % n == i``. On the ray engine the
embedding store is filled first for every partition still to write (see
:mod:`freebind.run.engines`); each partition is then written by the embed module's own
``run_shard``, which finds its embeddings cached: the partitions are the local engine's,
byte for byte. ``run_shard`` and ``shard_done`` come from the caller (freebind.run.partitions), so
this module does not import it back.
"""

from __future__ import annotations

from freebind.run.engines.options import engine_options, in_slice
from freebind.run.engines.chunks import StoreCall


def run(plan, engine: str, run_shard, shard_done, shard=None, target=None, store=None,
        **options):
    """``([ShardResult], FillReport | None)``: the shards of slice ``shard`` of ``plan``
    run on ``engine`` (``"local"``: partition by partition in process; ``"ray"``: the
    store filled on Ray Data, then the partitions written here)."""
    from freebind.run.engines import fill

    opts = engine_options(engine, **options)
    chosen = [s for s in plan.shards if in_slice(s.index, shard)]
    todo = [s for s in chosen if not shard_done(plan, s)]
    report = None
    if todo:
        target = target if target is not None else plan.open_target()
        store = store if store is not None else plan.open_store()
    if todo and opts.engine == "ray":
        spaces, calls = {}, []
        for s in todo:
            for (ref, _m), space, m in target.requests(s.modality):
                spaces[ref] = space
                calls.append(StoreCall(ref, m, s.items))
        report = fill(calls, spaces, store, opts, batch_size=plan.options.batch_size,
                      progress=plan.options.progress,
                      space_options=dict(plan.options.space_options))
    return [run_shard(plan, s, target, store) for s in chosen], report
