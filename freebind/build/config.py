"""What a build takes besides its expression: :class:`BuildConfig`.

The training defaults every job starts from are bond options, so they live with the
expression language (:data:`freebind.algebra.keywords.DEFAULT_HYPER`): the compiler copies
them into each job of a plan (``freebind plan`` shows them, bond options override them);
the trainer adds the knobs of its own loop (:data:`freebind.build.projector_training.DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping

#: default mini pool size (items per modality) when a mini build is given no pools
MINI_POOL_SIZE = 2000


@dataclass
class BuildConfig:
    """Everything :func:`freebind.build.orchestrator.build` takes besides the expression.

    Pools: ``audio``/``image`` folders (or lists of paths), ``text`` a file with one text per
    line (or a list of strings), ``pools`` a pools file; ``output`` the bundle path; ``hyper``
    overrides training defaults for every job; ``seed`` the training seed; ``threads`` torch's
    CPU threads for the build; ``space_options`` go to every ``spaces.get``; ``log`` receives
    progress lines; ``save=False`` keeps the bundle in memory; ``store_dtype="fp16"`` keeps new
    cache entries as float16; ``chunk_rows`` the rows fused at once when the space built so far
    is computed (default from :data:`freebind.fusion.graph.FUSE_BUDGET_BYTES`). Pools are read
    into memory up to a few tens of MB in all (every space and modality together), the rest
    memory-mapped from the store whatever the dtype
    (:data:`freebind.build.leaf_embeddings.RESIDENT_POOL_BYTES`)."""

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
    #: overwrite a bundle at ``output`` whose presets or results a build of another graph
    #: would lose (without: the build stops before any work and says what)
    force: bool = False

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))
