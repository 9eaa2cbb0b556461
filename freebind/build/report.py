"""What a build reports: :class:`BuildReport` (pools, the embedding stage's encodes and
reuse, skipped items, times) with one :class:`JobReport` per trained job; a built
:class:`~freebind.fusion.fused.FusedSpace` carries it as ``.build_report``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class JobReport:
    id: str
    bond: str
    kind: str
    source: str
    target: str
    modes: list[str]
    tuples: int
    epochs: int
    val_loss: float
    seconds: float
    routes: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    @classmethod
    def of(cls, job, summary: dict, seconds: float, cached: bool) -> "JobReport":
        """The entry of a finished plan job from its training ``summary``."""
        return cls(job.id, job.bond, job.kind, job.source, job.target, list(job.data_modes),
                   summary["tuples"], summary["epochs"], round(summary["final_val_loss"], 4),
                   round(seconds, 2), summary["routes"], cached=cached)


@dataclass
class BuildReport:
    expression: str
    output: str | None
    pools: dict[str, int]
    pool_origin: dict[str, str]
    cache_dir: str
    encoded: int = 0
    reused: int = 0
    skipped: list[dict] = field(default_factory=list)
    jobs: list[JobReport] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    #: the embedding stage's engine work (freebind.run.engines.FillReport.to_dict()), if any
    engine: dict | None = None

    def skip(self, entry: dict) -> None:
        """Record an unreadable pool item (once)."""
        if entry not in self.skipped:
            self.skipped.append(entry)

    def to_dict(self) -> dict:
        return asdict(self)
