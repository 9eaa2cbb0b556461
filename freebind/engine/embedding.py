"""The engines of :func:`freebind.embed.embed`: runners ``(plan, shard=None, **options)``
→ ``([ShardResult], FillReport | None)`` over the plan's shards (partitions).

``shard=(i, n)`` keeps the partitions ``k`` with ``k % n == i``. The ray runner first fills
the embedding store for every partition still to write (see :mod:`freebind.engine`), then
writes each partition with :func:`freebind.embed.run_shard`, which finds its embeddings
cached: the partitions are the local engine's, byte for byte.
"""

from __future__ import annotations

from freebind.engine import engine_options, fill, in_slice
from freebind.engine.chunks import StoreCall


def _selected(plan, shard):
    return [s for s in plan.shards if in_slice(s.index, shard)]


def run_local(plan, shard=None, target=None, store=None, **options):
    """In process, partition by partition (the slice ``shard`` only)."""
    from freebind.embed import run_shard, shard_done

    engine_options("local", **options)
    chosen = _selected(plan, shard)
    if any(not shard_done(plan, s) for s in chosen):
        target = target if target is not None else plan.open_target()
        store = store if store is not None else plan.open_store()
    return [run_shard(plan, s, target, store) for s in chosen], None


def run_ray(plan, shard=None, target=None, store=None, **options):
    """On Ray Data: the store filled for every unfinished partition of the slice, then the
    partitions written here from the cache."""
    from freebind.embed import run_shard, shard_done

    opts = engine_options("ray", **options)
    chosen = _selected(plan, shard)
    todo = [s for s in chosen if not shard_done(plan, s)]
    report = None
    if todo:
        target = target if target is not None else plan.open_target()
        store = store if store is not None else plan.open_store()
        spaces, calls = {}, []
        for s in todo:
            for (ref, _m), space, m in target.requests(s.modality):
                spaces[ref] = space
                calls.append(StoreCall(ref, m, s.items))
        report = fill(calls, spaces, store, opts, batch_size=plan.options.batch_size,
                      progress=plan.options.progress,
                      space_options=dict(plan.options.space_options))
    return [run_shard(plan, s, target, store) for s in chosen], report
