"""The public embedding API, ``freebind.embed``: embed files and texts into partitions that
embedding tools read, in one call or shard by shard on any scheduler::

    freebind.embed(target, ["media/"], output="out/")          # the module is callable
    from freebind.embed import EmbedPlan, begin, finish, plan_embed, run_shard

The implementation lives in :mod:`freebind.run.partitions` (plans, shards, partitions, the
report) and :mod:`freebind.run.engines` (where chunks run); this module is the stable
import path users write."""

from freebind.run.partitions import (MANIFEST, EmbedOptions, EmbedPlan, EmbedReport, Shard,
                                     ShardResult, begin, embed, finish, plan_embed, read_shard,
                                     register_engine, run_local, run_shard, shard_done,
                                     shard_files, write_shard)
from freebind.util.callable_module import make_callable as _make_callable

__all__ = ["MANIFEST", "EmbedOptions", "EmbedPlan", "EmbedReport", "Shard", "ShardResult",
           "begin", "embed", "finish", "plan_embed", "read_shard", "register_engine",
           "run_local", "run_shard", "shard_done", "shard_files", "write_shard"]

_make_callable(__name__, "freebind.run.partitions", "embed")
