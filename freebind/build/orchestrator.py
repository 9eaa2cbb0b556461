"""Building a fused space: Plan → embed pools with every space → pseudo tuples → train jobs in
dependency order → a :class:`~freebind.fusion.fused.FusedSpace` bundle (docs/architecture.md,
"The data path").

    fused = freebind.build("mini:bind + d(mini:vl) + c(mini:clap)")      # default mini pools
    fused = freebind.build("IB + d(InternVL)", audio="pools/audio", image="pools/image",
                           text="pools/texts.txt", output="ib_vl.safetensors")

Pool items are embedded once per space through the content-addressed
:class:`~freebind.data.store.EmbeddingStore`, so rebuilding, or building another expression over
the same spaces and pools, re-encodes nothing. Jobs run in the plan's dependency order: a
sequential bond trains on the embeddings of the space built so far (the plan's sub-graph
evaluated with the projectors trained before it); parallel experts train one group each.

This module only calls the stages: :mod:`~freebind.build.pools`,
:mod:`~freebind.build.leaf_embeddings`, :mod:`~freebind.build.space_so_far`,
:mod:`~freebind.build.jobs` and :mod:`~freebind.build.output`; the build reports
(:mod:`~freebind.build.report`).
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from freebind.build.config import MINI_POOL_SIZE, BuildConfig
from freebind.build.jobs import TrainedJobs, check_hyper, fit_modalities, router_step, train_job
from freebind.build.leaf_embeddings import LeafPools, embed_stage, fill_store, resolve_leaves
from freebind.build.output import check_output, make_bundle, previous_bundle, save_bundle
from freebind.build.pools import BuildPreflightError, build_pools
from freebind.build.report import BuildReport, JobReport
from freebind.build.space_so_far import space_so_far
from freebind.util.vocab import POOL_MODALITIES, is_mini_only


def build(expression, audio=None, image=None, text=None, pools=None, output=None,
          cache_dir=None, seed: int | None = None, hyper: Mapping | None = None,
          batch_size: int = 64, mini_pool_size: int = MINI_POOL_SIZE, progress: bool = True,
          log: Callable[[str], None] | None = None, save: bool = True,
          threads: int | None = None, space_options: Mapping | None = None,
          store_dtype: str | None = None, config: BuildConfig | None = None,
          engine=None, shard=None, chunk_rows: int | None = None, force: bool = False,
          **engine_kw):
    """Build the fused space of ``expression`` and save it as a bundle.

    Pools: ``audio``/``image`` folders (or lists of paths), ``text`` a file with one text
    per line (or a list of strings), and/or ``pools`` a pools file. When every space is a
    mini space and no pool is given, the default mini pools are generated (once) in the
    cache. ``hyper`` overrides training defaults for every job (bond options still win);
    ``seed`` is the training seed. Returns the :class:`~freebind.fusion.fused.FusedSpace`, with the
    :class:`BuildReport` as ``.build_report``. ``threads`` sets torch's CPU threads for the
    build (default: 1 when every space is a mini space — small models run fastest on one
    thread and never oversubscribe a shared machine — else torch's setting).
    ``space_options`` are passed to every ``spaces.get(ref, **space_options)`` (device,
    precision, checkpoint, workers, …; what each space's loader accepts). Its ``device``
    is also where pseudo tuples and training run (default the CPU), and ``hyper["sim"]``
    (``fp32``, ``tf32``, ``bf16``) the precision of the retrieval similarities.
    ``store_dtype="fp16"`` keeps new cache entries as float16 and reads the pools
    memory-mapped (see docs/building.md). ``chunk_rows`` bounds the rows the space built so
    far is fused at once (default: from a memory budget, :func:`freebind.fusion.graph.
    fusion_chunk_rows`); no stage holds a pool's rows beyond small pools (see
    docs/building.md, "Paper scale"). ``config`` (a
    :class:`freebind.build.config.BuildConfig`) gives all of these at once instead.

    ``engine`` (``"local"``, ``"ray"`` or :class:`freebind.run.engines.EngineOptions`, with
    ``workers=``, ``cpus_per_worker=``, ``gpus_per_worker=``, ``ray_address=``, …) runs the
    embedding stage, filling the store, on that engine; the later steps read the store.
    ``shard=(i, n)`` (or ``"i/n"``) runs only slice i of n of the embedding stage and
    returns its :class:`BuildReport` (no bundle): run every slice, then once without
    ``shard`` to train and save (see docs/scale-out.md).

    A bundle already at the output keeps what a user made in it (presets, tuning records,
    recorded results) when its graph is the same; for another graph the build stops before
    any work, saying what would be lost, unless ``force`` (:func:`freebind.build.output.
    previous_bundle`)."""
    import torch

    from freebind.run.engines import engine_options, parse_shard

    shard = parse_shard(shard)
    if engine is not None or shard is not None or engine_kw:
        engine = engine_options(engine, **engine_kw)
        if engine.engine == "local" and shard is None:
            engine = None  # the plain in-process path

    from freebind import algebra

    if config is None:
        config = BuildConfig(audio=audio, image=image, text=text, pools=pools, output=output,
                             cache_dir=cache_dir, seed=seed, hyper=hyper,
                             batch_size=batch_size, mini_pool_size=mini_pool_size,
                             progress=progress, log=log, save=save, threads=threads,
                             space_options=dict(space_options or {}), store_dtype=store_dtype,
                             chunk_rows=chunk_rows, force=force)
    check_output(config.output)
    plan = algebra.plan(expression) if isinstance(expression, str) else expression
    threads = config.threads
    if threads is None and is_mini_only(_families(plan)):
        threads = 1
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _build(expression, config, engine, shard)
    finally:
        if threads:
            torch.set_num_threads(previous)


def _families(plan) -> list[str]:
    return [s["family"] for s in plan.spaces.values()]


def _build(expression, config: BuildConfig, engine=None, shard=None):
    """The data path (docs/architecture.md): pools → embed (store) → per job: the space so
    far (store), pseudo tuples, training, router → bundle."""
    t_start = time.perf_counter()
    say = config.log or (lambda msg: None)
    space_options = dict(config.space_options or {})
    plan = _checked_plan(expression, config)
    # what a user made in the bundle this build replaces: kept, or asked about (--force)
    previous = previous_bundle(plan, config.output, config.force, say) \
        if config.save and shard is None else None
    store = _checked_store(plan, config, space_options)
    pool = build_pools(config, _families(plan), store, say)
    report = BuildReport(plan.expression, None, pool.counts(), pool.origin, str(store.root),
                         skipped=list(pool.problems))

    # 1. embed every pool item with every leaf space (cached); a space whose rows were all
    # imported is not loaded (freebind.run.importer)
    t = time.perf_counter()
    leaves = resolve_leaves(plan, pool, store, space_options)
    filled = None
    if engine is not None:
        filled = fill_store(plan, pool, store, engine, shard, config.batch_size,
                            config.progress, space_options, say, leaves)
        report.engine = filled.to_dict()
        if shard is not None:
            return _slice_report(report, filled, t)
    leaf = embed_stage(plan, pool, store, report, leaves, filled, config.batch_size,
                       config.progress, say)
    report.seconds["embed"] = round(time.perf_counter() - t, 2)
    if report.skipped:
        say(f"skipped {len(report.skipped)} unreadable pool item(s)")

    # 2-3. jobs in dependency order: the space so far, pseudo tuples, training, routers
    trained = _train_jobs(plan, leaf, store.root, config, space_options.get("device"),
                          report, say)

    # 4. the bundle (deterministic content: no times, no absolute paths)
    fused = make_bundle(plan, trained.projectors, trained.training, leaf, leaves)
    if config.save:
        report.output = str(save_bundle(fused, plan.expression, config.output, previous))
    report.seconds["total"] = round(time.perf_counter() - t_start, 2)
    fused.build_report = report
    return fused


def _checked_plan(expression, config: BuildConfig):
    """The plan with the build's training settings (``hyper``, ``seed``), every job's
    settings, router ones included, checked before any work."""
    from freebind import algebra
    from freebind.build.router_training import router_hyper

    overrides = dict(config.hyper or {})
    if config.seed is not None:
        overrides["seed"] = int(config.seed)
    overrides = check_hyper(overrides)
    plan = algebra.plan(expression, hyper=overrides) if isinstance(expression, str) \
        else expression
    for job in plan.jobs:
        router_hyper({**overrides, **job.hyper})
    return plan


def _checked_store(plan, config: BuildConfig, space_options: Mapping):
    """The embedding store, once libraries, weights, then pools pass the pre-flight: every
    failure in one message, before any work."""
    from freebind.data.store import EmbeddingStore
    from freebind.run.implicit import declared_pools
    from freebind.run.preflight import check_build

    store = EmbeddingStore(config.cache_dir, dtype=config.store_dtype or "float32")
    check_build(plan, config.audio, config.image, config.text, config.pools, space_options,
                have_default_pools=is_mini_only(_families(plan)), declared=declared_pools(),
                cls=BuildPreflightError, store=store)
    return store


def _slice_report(report: BuildReport, filled, t: float) -> BuildReport:
    """The report of one slice of the embedding stage (``shard=``): its encodes and failures."""
    report.encoded = filled.encoded
    for f in filled.failures:
        report.skip(dict(f))
    report.seconds["embed"] = report.seconds["total"] = round(time.perf_counter() - t, 2)
    return report


def _train_jobs(plan, leaf: LeafPools, root, config: BuildConfig, device, report: BuildReport,
                say) -> TrainedJobs:
    """Steps 2-3, job by job in dependency order: the space built so far on either side,
    pseudo tuples and training (or the group trained before), then the router of a
    ``route=learned`` bond once its last group exists. ``device`` is where pseudo tuples
    and training run."""
    from freebind.build.projector_training import defaults_for

    progress, families = config.progress, _families(plan)
    available = tuple(m for m in POOL_MODALITIES if m in leaf.kept)
    trained = TrainedJobs.of(plan)

    def embeddings(text):
        return space_so_far(plan, text, trained.projectors, leaf, trained.keys,
                            config.chunk_rows, device)

    for job in plan.jobs:
        t_job = time.perf_counter()
        source, target = embeddings(job.source), embeddings(job.target)
        fit_modalities(job, source, target, available)
        h = {**defaults_for(families), **job.hyper}
        done = train_job(job, source, target, h, root, device, progress)
        trained.add(job, done)
        seconds = time.perf_counter() - t_job
        report.jobs.append(JobReport.of(job, done.summary, seconds, done.cached))
        _say_job(say, job, done.summary, seconds, done.cached)
        router_step(plan, job, trained, embeddings, h, root, device, progress, say)
        trained.release_tuples(job)
        del source, target
    return trained


def _say_job(say, job, summary: Mapping, seconds: float, cached: bool) -> None:
    say(f"{job.id}: {summary['tuples']} tuples, {summary['epochs']} epochs, "
        f"val loss {summary['final_val_loss']:.4f}, {seconds:.1f} s"
        + (" (trained before: reused)" if cached else ""))
