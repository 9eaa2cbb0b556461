"""The engine options ``embed`` and ``build`` share: ``--engine``, ``--workers``,
``--cpus-per-worker``, ``--gpus-per-worker``, ``--ray-address``, ``--shard I/N``."""

from __future__ import annotations

from typing import Optional

import typer


def engine_option():
    return typer.Option("local", "--engine", metavar="local|ray",
                        help="Where the encoders run: in this process (local) or on Ray "
                             "Data (ray; pip install 'freebind[ray]'). See docs/scale-out.md.")


def workers_option():
    return typer.Option(None, "--workers", min=1,
                        help="Encoder workers of the ray engine (actors: one per GPU or "
                             "CPU slot; default 1).")


def cpus_option():
    return typer.Option(None, "--cpus-per-worker", min=0.0,
                        help="CPUs Ray gives each encoder worker (default 1).")


def gpus_option():
    return typer.Option(None, "--gpus-per-worker", min=0.0,
                        help="GPUs Ray gives each encoder worker (default 0; use 1 with "
                             "--device cuda on GPU nodes).")


def address_option():
    return typer.Option(None, "--ray-address", metavar="ADDRESS",
                        help="Join this Ray cluster (default $RAY_ADDRESS; with neither, a "
                             "local Ray is started for the run and stopped after it).")


def shard_option():
    return typer.Option(None, "--shard", metavar="I/N",
                        help="Run only slice I of N (0 <= I < N) of the work: SLURM job "
                             "arrays, several machines on one file system. A final run "
                             "without --shard finishes the job.")


def engine_kwargs(engine: str, workers: Optional[int], cpus: Optional[float],
                  gpus: Optional[float], address: Optional[str],
                  shard: Optional[str]) -> dict:
    """Keyword arguments for ``freebind.build.orchestrator.build`` / the embed API (validated):
    none when every engine flag is left at its default (the plain local call)."""
    from freebind.run.engines import engine_options, parse_shard

    given = {"workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus,
             "ray_address": address}
    opts = engine_options(engine.lower(), **given)
    shard = parse_shard(shard)
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
