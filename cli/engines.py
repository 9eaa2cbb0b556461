"""The engine flags ``embed`` and ``build`` share (:class:`EngineFlags`: ``--engine``,
``--workers``, ``--cpus-per-worker``, ``--gpus-per-worker``, ``--ray-address``, ``--shard
I/N``) and the per-worker table of an engine's report."""

from __future__ import annotations

import dataclasses
from typing import Optional

from freebind_cli.options import FlagGroup, flag


@dataclasses.dataclass(frozen=True)
class EngineFlags(FlagGroup):
    """Where the encoders run and which slice of the work this run does."""

    engine: str = flag("local", "--engine", metavar="local|ray",
                       help="Where the encoders run: in this process (local) or on Ray "
                            "Data (ray; pip install 'freebind[ray]'). See docs/scale-out.md.")
    workers: Optional[int] = flag(None, "--workers", min=1,
                                  help="Encoder workers of the ray engine (actors: one per "
                                       "GPU or CPU slot; default 1).")
    cpus_per_worker: Optional[float] = flag(None, "--cpus-per-worker", min=0.0,
                                            help="CPUs Ray gives each encoder worker "
                                                 "(default 1).")
    gpus_per_worker: Optional[float] = flag(None, "--gpus-per-worker", min=0.0,
                                            help="GPUs Ray gives each encoder worker (default "
                                                 "0; use 1 with --device cuda on GPU nodes).")
    ray_address: Optional[str] = flag(None, "--ray-address", metavar="ADDRESS",
                                      help="Join this Ray cluster (default $RAY_ADDRESS; with "
                                           "neither, a local Ray is started for the run and "
                                           "stopped after it).")
    shard: Optional[str] = flag(None, "--shard", metavar="I/N",
                                help="Run only slice I of N (0 <= I < N) of the work: SLURM "
                                     "job arrays, several machines on one file system. A "
                                     "final run without --shard finishes the job.")

    def kwargs(self) -> dict:
        """Keyword arguments for ``freebind.build.orchestrator.build`` / the embed API
        (validated): none when every engine flag is left at its default (the plain local
        call)."""
        from freebind.run.engines import engine_options, parse_shard

        given = {"workers": self.workers, "cpus_per_worker": self.cpus_per_worker,
                 "gpus_per_worker": self.gpus_per_worker, "ray_address": self.ray_address}
        opts = engine_options(self.engine.lower(), **given)
        shard = parse_shard(self.shard)
        if opts.engine == "local" and shard is None and all(v is None for v in given.values()):
            return {}
        return {"engine": opts, "shard": shard}


def print_workers(report: Optional[dict], out) -> None:
    """The per-worker table of an engine's work (nothing when no engine work was done)."""
    if not report or not report.get("workers"):
        return
    from freebind.run.engines import worker_table

    title = f"{report['engine']} engine: {report['written']} store shard(s) written"
    if report.get("done_before"):
        title += f", {report['done_before']} done before"
    if report.get("startup_seconds"):
        title += f"; start-up {report['startup_seconds']:.1f} s"
    from freebind_cli.common import print_table

    print_table(out, worker_table(report["workers"], title=title))
