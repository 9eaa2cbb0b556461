"""Engine options, slices and reports: what every engine and its callers share (the
engines themselves live in :mod:`freebind.run.engines.local` and
:mod:`freebind.run.engines.ray_engine`; :func:`freebind.run.engines.fill` runs one)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

from freebind.util.errors import UsageError

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """How to run the encoder work.

    ``workers``: encoder actors (ray) — one per GPU or per CPU slot; ``cpus_per_worker`` and
    ``gpus_per_worker`` are each actor's Ray resources; ``decode_cpus`` each read-stage
    (decoding) task's. ``ray_address`` joins a running cluster (default ``RAY_ADDRESS``;
    with neither, a local Ray is started for the run and stopped after it). ``setup``
    (``"module:function"``) runs in every Ray worker process before it opens a space: where
    spaces registered by your own code get registered there too."""

    engine: str = "local"
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    decode_cpus: float = 1.0
    ray_address: str | None = None
    setup: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def engine_options(engine: "str | EngineOptions | None" = None, **options) -> EngineOptions:
    """Validated :class:`EngineOptions` from an engine name (or options) and keywords;
    ``None`` values are left at their defaults."""
    if isinstance(engine, EngineOptions):
        base = engine.to_dict()
    else:
        base = {"engine": engine or "local"}
    base.update({k: v for k, v in options.items() if v is not None})
    unknown = set(base) - set(EngineOptions.__dataclass_fields__)
    if unknown:
        raise UsageError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
    opts = EngineOptions(**base)
    if opts.engine not in ENGINES:
        raise UsageError(f"engine {opts.engine!r}: use one of {', '.join(ENGINES)}")
    if int(opts.workers) != opts.workers or opts.workers < 1:
        raise UsageError(f"workers must be a whole number of at least 1, got {opts.workers}")
    for name in ("cpus_per_worker", "gpus_per_worker", "decode_cpus"):
        value = getattr(opts, name)
        if not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise UsageError(f"{name} must be a number >= 0, got {value!r}")
    if opts.cpus_per_worker == 0 and opts.gpus_per_worker == 0:
        raise UsageError("a worker needs some resource: cpus_per_worker or gpus_per_worker "
                         "must be above 0")
    if opts.engine == "local" and opts.workers > 1:
        raise UsageError(f"workers={opts.workers} needs engine='ray' (the local engine runs "
                         f"in this process; for several machines without Ray, use shard)")
    if opts.engine == "local" and opts.ray_address:
        raise UsageError("ray_address applies to engine='ray'")
    if opts.setup is not None and ":" not in opts.setup:
        raise UsageError(f"setup {opts.setup!r}: expected MODULE:FUNCTION")
    if opts.engine == "ray":
        require_ray()
    return opts


def require_ray() -> None:
    """Fail before any work when the ray engine is chosen and Ray is not installed."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("the ray engine needs Ray Data: pip install 'freebind[ray]' (or "
                         "pip install 'ray[data]')") from None


def parse_shard(spec: "str | Sequence[int] | None") -> tuple[int, int] | None:
    """``"I/N"`` (or ``(i, n)``) → ``(i, n)``: the i-th of n deterministic slices,
    0 <= i < n."""
    if spec is None:
        return None
    if isinstance(spec, str):
        left, sep, right = spec.partition("/")
        try:
            i, n = int(left), int(right)
        except ValueError:
            raise UsageError(f"shard {spec!r}: expected I/N, e.g. 0/4") from None
        if not sep:
            raise UsageError(f"shard {spec!r}: expected I/N, e.g. 0/4")
    else:
        try:
            i, n = (int(x) for x in spec)
        except (TypeError, ValueError):
            raise UsageError(f"shard {spec!r}: expected (i, n)") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"shard {i}/{n}: needs 0 <= I < N")
    return i, n


def in_slice(index: int, shard: tuple[int, int] | None) -> bool:
    """Whether unit ``index`` (a partition, a chunk) belongs to slice ``shard``: round robin,
    so slices are balanced and the same whatever has been done already."""
    return shard is None or index % shard[1] == shard[0]


@dataclass
class WorkerStats:
    """What one worker did: items it encoded, seconds it spent encoding, items it could
    not decode."""

    worker: str
    items: int = 0
    seconds: float = 0.0
    failures: int = 0

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"worker": self.worker, "items": self.items, "seconds": round(self.seconds, 3),
                "items_per_s": round(self.items_per_s, 1), "failures": self.failures}


@dataclass
class FillReport:
    """The encoder work an engine did: chunks (store shards) planned, skipped as done and
    written, items encoded, undecodable items, per-worker numbers, Ray's start-up seconds."""

    engine: str
    chunks: int = 0
    done_before: int = 0
    written: int = 0
    encoded: int = 0
    failures: list[dict] = field(default_factory=list)
    workers: list[WorkerStats] = field(default_factory=list)
    seconds: float = 0.0
    startup_seconds: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["workers"] = [w.to_dict() for w in self.workers]
        return d


def worker_table(workers: Sequence[WorkerStats], title: str = "workers"):
    """A rich table of per-worker numbers (worker, items, items/s, failures)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("worker", "items", "items/s", "failures"):
        table.add_column(col, justify="left" if col == "worker" else "right")
    for w in workers:
        w = w if isinstance(w, WorkerStats) else WorkerStats(**{k: w[k] for k in (
            "worker", "items", "seconds", "failures")})
        table.add_row(w.worker, str(w.items), f"{w.items_per_s:.1f}", str(w.failures))
    return table
