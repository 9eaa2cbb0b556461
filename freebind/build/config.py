"""Configuration shared across the build: the training defaults every job starts from, and
:class:`BuildConfig`, everything a build takes besides its expression.

The expression compiler copies the training defaults into each job of a plan (so
``freebind plan`` shows them, and bond options override them); the trainer adds the knobs
of its own loop (:data:`freebind.train.DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

#: pseudo-tuple defaults (neighbours aggregated per slot, softmax temperature); the one
#: place they are set: :mod:`freebind.pseudo` and the training defaults both read them
DEFAULT_TOPK = 5
DEFAULT_TAU = 0.05
#: training defaults for real spaces (the paper's recipe)
DEFAULT_HYPER = {"hidden": 2048, "temp": 0.05, "epochs": 40, "patience": 5, "lr": 1e-3,
                 "batch": 4096, "topk": DEFAULT_TOPK, "tau": DEFAULT_TAU, "seed": 0}
#: mini plans train fast: the quick start finishes in about a minute (measured by
#: examples/measure_bonds.py; temperature 0.02 and 15 epochs gave the best held-out R@1)
MINI_HYPER = {"hidden": 256, "epochs": 15, "batch": 256, "patience": 3, "temp": 0.02}
#: default mini pool size (items per modality) when a mini build is given no pools
MINI_POOL_SIZE = 2000


@dataclass
class BuildConfig:
    """Everything :func:`freebind.builder.build` takes besides the expression.

    Pools: ``audio``/``image`` folders (or lists of paths), ``text`` a file with one text
    per line (or a list of strings), ``pools`` a pools file; ``output`` the bundle path;
    ``hyper`` overrides training defaults for every job; ``seed`` the training seed;
    ``threads`` torch's CPU threads for the build; ``space_options`` go to every
    ``spaces.get``; ``log`` receives progress lines; ``save=False`` keeps the bundle in
    memory; ``store_dtype="fp16"`` keeps new cache entries as float16; ``chunk_rows`` the
    rows fused at once when the space built so far is computed (default from
    :data:`FUSE_BUDGET_BYTES`). Pools larger than a few tens of MB are read memory-mapped
    from the store whatever the dtype (:data:`freebind.builder.RESIDENT_POOL_BYTES`)."""

    audio: Any = None
    image: Any = None
    text: Any = None
    pools: Any = None
    output: Any = None
    cache_dir: Any = None
    seed: int | None = None
    hyper: Mapping | None = None
    batch_size: int = 64
    mini_pool_size: int = MINI_POOL_SIZE
    progress: bool = True
    log: Callable[[str], None] | None = None
    save: bool = True
    threads: int | None = None
    space_options: Mapping[str, Any] = field(default_factory=dict)
    store_dtype: str | None = None   # "fp16": new cache entries float16
    #: rows of the space built so far fused at once (None: from FUSE_BUDGET_BYTES)
    chunk_rows: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

#: Memory one chunk of fusion may take for the projectors' activations (bytes): fusion,
#: the space built so far, embed partitions, index builds and eval read their inputs in
#: chunks of :func:`freebind.graph.fusion_chunk_rows` rows under this budget (256 MiB: about
#: 1,400 rows for the paper's K=7, H=2048 groups). ``FREEBIND_FUSE_BUDGET_MB`` overrides it.
FUSE_BUDGET_BYTES = int(float(__import__("os").environ.get("FREEBIND_FUSE_BUDGET_MB", 256))
                        * 2**20)
