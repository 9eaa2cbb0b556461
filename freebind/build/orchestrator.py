"""Building a fused space: Plan → embed pools with every space → pseudo tuples → train jobs in
dependency order → a :class:`~freebind.fusion.fused.FusedSpace` bundle (docs/architecture.md, "The data path").

    fused = freebind.build("mini:bind + d(mini:vl) + c(mini:clap)")      # default mini pools
    fused = freebind.build("IB + d(InternVL)", audio="pools/audio", image="pools/image",
                           text="pools/texts.txt", output="ib_vl.safetensors")

Pool items are embedded once per space through the content-addressed
:class:`~freebind.data.store.EmbeddingStore`, so rebuilding, or building another expression over
the same spaces and pools, re-encodes nothing. Jobs run in the plan's dependency order: a
sequential bond trains on the embeddings of the space built so far (the plan's sub-graph
evaluated with the projectors trained before it); parallel experts train one group each.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from freebind.data.align import align
from freebind.build.config import MINI_POOL_SIZE, BuildConfig
from freebind.util.errors import UsageError
from freebind.run.preflight import PreflightError
from freebind.util.vocab import POOL_MODALITIES, is_mini_only

MINI_POOL_SEED = 0
# Training defaults (the paper's, and faster ones for mini-only plans) live in
# freebind.build.config; they sit under ``hyper=`` and under bond options of the expression.


class PoolError(UsageError):
    """Pools are missing, empty or malformed."""


class BuildPreflightError(PreflightError, PoolError):
    """The pre-flight of a build failed (:mod:`freebind.run.preflight`); a PoolError too."""


# ------------------------------------------------------------------------------ pools

@dataclass
class Pools:
    """Unpaired unimodal pools: audio and image file paths, text strings."""

    items: dict[str, list]
    origin: dict[str, str] = field(default_factory=dict)
    #: what the readers could not use (a truncated shard, null cells), as report entries
    problems: list[dict] = field(default_factory=list)

    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in POOL_MODALITIES if self.items.get(m))

    def counts(self) -> dict[str, int]:
        return {m: len(self.items.get(m, [])) for m in POOL_MODALITIES if self.items.get(m)}


def _files_of(modality: str, spec) -> tuple[list[Path], str]:
    from freebind.data.media import discover

    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.exists():
            raise PoolError(f"{path}: no such {modality} folder or file")
        found = discover([path])[modality]
        if not found:
            raise PoolError(f"{path}: no {modality} files found (by extension)")
        return found, str(path)
    # items that carry their own content key (archive members, table rows) stay as they are
    paths = [p if hasattr(p, "content_key") else Path(p) for p in spec]
    return paths, f"{len(paths)} {modality} paths"


def _texts_of(spec) -> tuple[list[str], str]:
    from freebind.data.media import read_texts

    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise PoolError(f"{path}: no such text file (one text per line)")
        texts = read_texts(path)
        if not texts:
            raise PoolError(f"{path}: the text pool is empty")
        return texts, str(path)
    texts = [str(t) for t in spec]
    return texts, f"{len(texts)} texts"


def read_pools_file(path: str | os.PathLike) -> dict[str, str]:
    """A pools file is JSON ``{"audio": DIR, "image": DIR, "text": FILE}`` (paths relative
    to the file), as ``freebind mini pools`` writes; a folder holding ``pools.json`` works."""
    path = Path(path)
    if path.is_dir():
        path = path / "pools.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PoolError(f"{path}: no such pools file") from None
    except (OSError, ValueError) as exc:
        raise PoolError(f"{path}: not a JSON pools file ({exc})") from None
    if not isinstance(data, dict) or not any(m in data for m in POOL_MODALITIES):
        raise PoolError(f"{path}: a pools file maps audio/image/text to paths")
    out = {}
    for m in POOL_MODALITIES:
        v = data.get(m)
        if isinstance(v, dict):   # {"path": TABLE, "column": NAME}
            if not v.get("path"):
                raise PoolError(f"{path}: {m}: an object needs a \"path\"")
            out[m] = {**v, "path": str(path.parent / v["path"])}
        elif v:
            out[m] = str(path.parent / v)
    return out


def resolve_pools(audio=None, image=None, text=None, pools=None) -> Pools:
    """Pools from flags (folders, a text file, or lists) and/or a pools file. A flag may
    also name tar shards, a table or a datasets folder, or be ``{"path", "column"}``
    (:func:`freebind.data.readers.read_pool`)."""
    from freebind.data.readers import read_pool

    spec: dict[str, object] = {}
    if pools is not None:
        spec.update(read_pools_file(pools))
    for m, v in (("audio", audio), ("image", image), ("text", text)):
        if v is not None:
            spec[m] = v
    items, origin, problems = {}, {}, []
    for m, v in spec.items():
        got = read_pool(m, v) if isinstance(v, (str, os.PathLike, Mapping)) else None
        if got is not None:
            items[m], origin[m] = got.items[m], got.origin
            problems += [{**p, "modality": m} for p in got.problems]
            continue
        if isinstance(v, Mapping):
            v = v["path"]
        if m == "text":
            items[m], origin[m] = _texts_of(v)
        else:
            items[m], origin[m] = _files_of(m, v)
    return Pools(items, origin, problems)


def default_mini_pools(root: Path, n: int = MINI_POOL_SIZE, seed: int = MINI_POOL_SEED,
                       progress: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Write (once) the default mini pools under ``root``; returns the pools file. ``log``
    hears one line when they are generated (not when they are reused)."""
    from freebind.mini import GENERATOR_VERSION, write_pools

    folder = root / f"mini-pools-g{GENERATOR_VERSION}-s{seed}-n{n}"
    marker = folder / "pools.json"
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
            if data.get("counts") == {"audio": n, "image": n, "text": n}:
                return marker
        except ValueError:
            pass
    if log is not None:
        log("generating the default mini pools (once; cached)")
    write_pools(folder, n_audio=n, n_image=n, n_text=n, seed=seed, progress=progress)
    return marker


# ------------------------------------------------------------------------------ report

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

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------ build

def _slug(expression: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", expression).strip("-").lower()
    return (s[:80] or "fused") + ".safetensors"


def default_output(expression: str) -> Path:
    return Path(_slug(expression))


#: Pools (and the space built so far) up to this many bytes per (space, modality) are read
#: into memory; larger ones stay memory-mapped in the store and are read chunk by chunk.
RESIDENT_POOL_BYTES = 64 << 20


def resident(view):
    """A store view read into memory when it is small (:data:`RESIDENT_POOL_BYTES`), else
    the view itself: every later stage reads it block by block."""
    from freebind.data.store import PoolView

    if isinstance(view, PoolView) and len(view) * view.dim * 4 <= RESIDENT_POOL_BYTES:
        return np.asarray(view)
    return view


@dataclass
class LeafPools:
    """The embedding stage's result: per leaf space and modality the rows of the items
    every space decoded (memory-mapped store views, or arrays when small), aligned across
    spaces; ``kept[m]`` are those items' indices in the pool; ``pool`` the pool itself."""

    rows: dict
    kept: dict
    pool: Pools
    store: object
    _keys: dict = field(default_factory=dict)

    def keys(self, modality: str) -> np.ndarray:
        """The content keys (``S64``) of the kept items of ``modality`` (computed once)."""
        if modality not in self._keys:
            items = self.pool.items[modality]
            keys = np.zeros(len(self.kept[modality]), dtype="S64")
            for j, i in enumerate(self.kept[modality]):
                keys[j] = self.store.key(modality, items[i])
            self._keys[modality] = keys
        return self._keys[modality]


class SubSpace:
    """The identity of a space built so far (a chain of bonds) in the embedding store: its
    sub-expression, the keys of the jobs it depends on (which carry their training data and
    weights) and its factors, so a rebuild and later jobs reuse its rows."""

    def __init__(self, node: dict, job_keys: Mapping[str, str], table):
        from freebind.fusion.factors import describe

        self.name = node["text"]
        self.dim = int(node["dim"])
        self.modalities = tuple(node["modalities"])
        jobs = sorted(_jobs_under(node))
        spec = {"text": node["text"], "jobs": [job_keys[j] for j in jobs],
                "factors": describe(table), "format": 1}
        self.fingerprint = "space-so-far:" + hashlib.sha256(
            json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _jobs_under(node: dict) -> set[str]:
    if node["op"] == "space":
        return set()
    out = _jobs_under(node["base"])
    for bond in node["bonds"]:
        out.update(bond["jobs"])
        for expert in bond["experts"]:
            out |= _jobs_under(expert)
    return out


def space_so_far(plan, text: str, projectors, leaf: LeafPools, job_keys: Mapping[str, str],
                 chunk_rows: int | None = None, device=None, progress: bool = False) -> dict:
    """Pool embeddings of a (sub-)space of the plan: a leaf space's rows, or a chain
    evaluated with the projectors trained so far and the expression's own factors,
    computed chunk by chunk into the embedding store (in the store's dtype) and read back
    memory-mapped (or into memory when small). A rebuild, or a later job over the same
    sub-space, reads what the store holds."""
    if text in leaf.rows:
        return dict(leaf.rows[text])
    from freebind.fusion.factors import resolve
    from freebind.fusion.graph import find_node, fuse_blocks, output_modalities

    node = find_node(plan.graph, text)
    if node["op"] == "space":
        return dict(leaf.rows[node["ref"]])
    table = resolve(node)
    space = SubSpace(node, job_keys, table)
    store = leaf.store
    mods = [m for m in output_modalities(node, table) if m in leaf.kept
            and _inputs_present(node, m, table, leaf.rows)]
    out = {}
    for m in mods:
        keys = leaf.keys(m)
        todo = store.index(space, m).find(keys) < 0
        if todo.any():
            for _, a, block in fuse_blocks(node, projectors, leaf.rows, table=table,
                                           modalities=[m], chunk_rows=chunk_rows,
                                           device=device):
                b = a + block.shape[0]
                if todo[a:b].any():
                    store.put(space, m, keys[a:b], block.detach().cpu().float().numpy())
        out[m] = resident(store.view(space, m, keys))
    return out


def _inputs_present(node, modality, table, rows) -> bool:
    from freebind.fusion.graph import inputs_needed

    need = inputs_needed(node, modality, table)
    return all(m in rows.get(ref, {}) for ref, ms in need.items() for m in ms)


def _job_key(job, hyper: Mapping, source: Mapping, target: Mapping, device=None) -> str:
    """Identity of a training job: its spec, hyper-parameters and the exact embeddings it
    trains on (which carry every earlier job's weights). Training is deterministic, so a
    job with the same key gives the same weights: a rebuild (or a build resumed after a
    kill) reuses finished jobs."""
    import torch

    h = hashlib.sha256()
    spec = {"kind": job.kind, "source": job.source, "target": job.target,
            "modalities": list(job.modalities), "data_modes": list(job.data_modes),
            "hyper": {k: hyper[k] for k in sorted(hyper)
                      if k != "threads" and not k.startswith("router_")},
            "format": 1}
    if device is not None and torch.device(device).type != "cpu":
        spec["device"] = str(device)     # weights trained elsewhere differ in the last bits
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    from freebind.data.store import PoolView

    for side in (source, target):
        for m in sorted(side):
            arr = side[m]
            if isinstance(arr, PoolView):   # hashed block by block: same digest as loaded
                h.update(f"{m}:{arr.shape}".encode())
                for _, blk in arr.blocks(1 << 14):
                    h.update(np.ascontiguousarray(blk).tobytes())
                continue
            arr = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else arr
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            h.update(f"{m}:{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()[:32]


def _job_path(root: Path, key: str) -> Path:
    return Path(root) / "jobs" / f"{key}.safetensors"


def _save_job(root: Path, key: str, group, summary: dict) -> None:
    from freebind.fusion import bundle as bundle_io

    try:
        bundle_io.save(_job_path(root, key), group.tensors("group"),
                       {"kind": "freebind-job", "summary": summary})
    except OSError:  # a read-only cache only loses the reuse
        pass


def _load_job(root: Path, key: str):
    from freebind.fusion import bundle as bundle_io
    from freebind.util.errors import BundleError
    from freebind.fusion.projector import ProjectorGroup

    path = _job_path(root, key)
    if not path.is_file():
        return None
    try:
        import torch

        arrays, meta = bundle_io.load(path)
        tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
        return ProjectorGroup.from_tensors(tensors, "group"), meta["summary"]
    except (BundleError, KeyError, OSError, ValueError):
        return None


def make_tuples(job, source: Mapping, target: Mapping, h: Mapping, device=None,
                progress: bool = False):
    """A job's pseudo tuples: retrieval on ``device`` at the job's ``sim`` precision, over
    pools that may be memory-mapped (:func:`freebind.build.pseudo_tuples.build`)."""
    from freebind.build.pseudo_tuples import build as build_tuples

    expert, base = (job.source, job.target) if job.kind == "c" else (job.target, job.source)
    return build_tuples({job.source: source, job.target: target}, expert=expert, base=base,
                        modalities=job.modalities, topk=int(h["topk"]), tau=float(h["tau"]),
                        seed=int(h["seed"]), max_queries=h.get("max_queries"),
                        progress=progress, desc=f"{job.id} pseudo tuples", device=device,
                        sim=str(h.get("sim", "fp32")))


@dataclass
class JobResult:
    group: object
    summary: dict
    key: str
    cached: bool
    #: the job's pseudo tuples when they were built in this run (a router reuses them)
    tuples: object = None


def train_job(job, source: Mapping, target: Mapping, h: Mapping, root: Path, device=None,
              progress: bool = False) -> JobResult:
    """One projector job: its key (spec, hyper-parameters, training embeddings), then the
    group trained before under that key, or pseudo tuples and training."""
    from freebind.build.projector_training import train_group

    key = _job_key(job, h, source, target, device)
    cached = _load_job(root, key)
    if cached is not None:
        return JobResult(cached[0], cached[1], key, True)
    tuples = make_tuples(job, source, target, h, device, progress)
    expert_name = job.source if job.kind == "c" else job.target
    result = train_group(tuples, source, target, job.data_modes, h, progress=progress,
                         device=device, desc=f"{job.id} train {job.kind}({expert_name})")
    summary = {**result.summary(), "hyper": dict(h), "routes": tuples.routes()}
    _save_job(root, key, result.group, summary)
    return JobResult(result.group, summary, key, False, tuples)


def _router_step(plan, job, projectors, training, embeddings, h, job_keys, tuples_of, root,
                 device, progress, say):
    """A ``route=learned`` bond's router, once its last projector group exists: trained on
    the very tuples of its bond's jobs (rebuilt the same way when a job was reused), on the
    build's device, reading batches from the (memory-mapped) pools."""
    from freebind.build.router_training import build_step

    def tuples(j, source, target):
        got = tuples_of.get(j.id)
        if got is None:
            got = make_tuples(j, source, target, {**h, **j.hyper}, device)
        return got

    build_step(plan, job, projectors, training, embeddings, h, job_keys, root, tuples,
               progress=progress, log=say, device=device)


def build(expression, audio=None, image=None, text=None, pools=None, output=None,
          cache_dir=None, seed: int | None = None, hyper: Mapping | None = None,
          batch_size: int = 64, mini_pool_size: int = MINI_POOL_SIZE, progress: bool = True,
          log: Callable[[str], None] | None = None, save: bool = True,
          threads: int | None = None, space_options: Mapping | None = None,
          store_dtype: str | None = None, config: BuildConfig | None = None,
          engine=None, shard=None, chunk_rows: int | None = None, **engine_kw):
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
    ``shard`` to train and save (see docs/scale-out.md)."""
    import torch

    from freebind.run.engines import engine_options, parse_shard

    shard = parse_shard(shard)
    if engine is not None or shard is not None or engine_kw:
        engine = engine_options(engine, **engine_kw)
        if engine.engine == "local" and shard is None:
            engine = None  # the plain in-process path

    from freebind import algebra

    if config is None:
        config = BuildConfig(audio, image, text, pools, output, cache_dir, seed, hyper,
                             batch_size, mini_pool_size, progress, log, save, threads,
                             dict(space_options or {}), store_dtype, chunk_rows)
    plan = algebra.plan(expression) if isinstance(expression, str) else expression
    threads = config.threads
    if threads is None and is_mini_only([s["family"] for s in plan.spaces.values()]):
        threads = 1
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _build(expression, config, engine, shard)
    finally:
        if threads:
            torch.set_num_threads(previous)


def _fill_store(plan, pool, store, engine, shard, batch_size, progress, space_options, say,
                leaves):
    """The embedding stage on an engine: every (space, modality) store call of step 1
    (none for a space whose rows were all imported)."""
    from freebind.run.engines import fill
    from freebind.run.engines.chunks import StoreCall

    opened = {ref: leaf.space for ref, leaf in leaves.items() if leaf.rows != "imported"}
    calls = [StoreCall(ref, m, pool.items[m]) for ref, sp in opened.items()
             for m in pool.modalities() if m in sp.modalities]
    where = f" (slice {shard[0]}/{shard[1]})" if shard else ""
    say(f"embedding stage on the {engine.engine} engine{where}")
    return fill(calls, opened, store, engine, shard=shard, batch_size=batch_size,
                progress=progress, space_options=space_options)


def embed_pools(plan, pool: Pools, store, report: BuildReport, batch_size: int = 64,
                progress: bool = False, leaves: Mapping | None = None) -> LeafPools:
    """Step 1: every pool item embedded with every leaf space through the store (cached,
    resumable; rows imported for a space are read from their own identity, and a space
    whose rows were all imported is never loaded: ``leaves`` from
    :func:`freebind.run.importer.resolve_leaf`), read back as memory-mapped views (arrays when
    small), only the items every space decoded, rows aligned across spaces. Failures go
    into ``report.skipped``."""
    leaf_raw: dict[str, dict[str, tuple]] = {}
    for ref in plan.spaces:
        space, fallback = leaves[ref].space, leaves[ref].fallback
        for m in pool.modalities():
            if m not in space.modalities:
                continue
            before = store.encoded
            view, idx, failures = store.embed(space, m, pool.items[m], batch_size=batch_size,
                                              progress=progress, on_error="skip", lazy=True,
                                              fallback=fallback)
            encoded = store.encoded - before
            report.encoded += encoded
            report.reused += len(idx) - encoded
            for f in failures:
                entry = {"path": f.item, "reason": f.reason, "modality": m}
                if entry not in report.skipped:
                    report.skipped.append(entry)
            leaf_raw.setdefault(ref, {})[m] = (view, idx)
    rows: dict[str, dict] = {ref: {} for ref in leaf_raw}
    kept: dict[str, np.ndarray] = {}
    modalities = {m for mods in leaf_raw.values() for m in mods}
    for m in sorted(modalities):  # only the items every space decoded, rows aligned
        aligned, kept[m] = align({ref: mods[m] for ref, mods in leaf_raw.items()
                                  if m in mods})
        for ref, view in aligned.items():
            rows[ref][m] = resident(view)
        if len(kept[m]) == 0:
            raise PoolError(f"no {m} pool item could be decoded")
    return LeafPools(rows, kept, pool, store)


def _fit_modalities(job, source: Mapping, target: Mapping, available) -> None:
    """Narrow a job to the modalities its pools and spaces have (its data modes follow)."""
    from freebind.algebra import data_modes as modes_of

    mods = tuple(m for m in job.modalities if m in available
                 and (m in source or m in target))
    if not [m for m in mods if m in source and m in target]:
        raise PoolError(f"job {job.id} ({job.source} → {job.target}) needs a pool of a "
                        f"modality both spaces have ({', '.join(job.modalities)}); "
                        f"pools given: {', '.join(available)}")
    if tuple(job.modalities) != mods:
        job.modalities = mods
        job.data_modes = modes_of(mods)


def _check_hyper(overrides: Mapping) -> None:
    from freebind.build.pseudo_tuples import SIM_PRECISIONS
    from freebind.build.projector_training import AMP_CHOICES

    if "sim" in overrides and overrides["sim"] not in SIM_PRECISIONS:
        raise UsageError(f"hyper sim={overrides['sim']!r}: expected one of "
                         f"{', '.join(SIM_PRECISIONS)}")
    if overrides.get("amp") not in (None, "none", *AMP_CHOICES):
        raise UsageError(f"hyper amp={overrides['amp']!r}: expected bf16, fp16 or none")


def build_pools(config: BuildConfig, families, store, say) -> Pools:
    """The pools of a build: given ones, else the default mini pools (every space a mini
    space), else those declared in ``$FREEBIND_HOME/pools.json``."""
    audio, image, text, pools = config.audio, config.image, config.text, config.pools
    if all(v is None for v in (audio, image, text, pools)):
        from freebind.run.implicit import POOLS_FILE, declared_pools
        from freebind.spaces.weights import freebind_home

        if is_mini_only(families):
            pools = default_mini_pools(store.root, config.mini_pool_size,
                                       progress=config.progress, log=say)
        elif declared_pools() is not None:
            pools = declared_pools()
            say(f"pools: {pools}")
        else:
            raise PoolError(f"no pools given: pass audio (a folder), image (a folder), text "
                            f"(a file) or pools (a pools file), or "
                            f"declare them once in {freebind_home() / POOLS_FILE} "
                            f'({{"audio": DIR, "image": DIR, "text": FILE}}); default pools '
                            f"exist only when every space is a mini space")
    pool = resolve_pools(audio, image, text, pools)
    if not pool.modalities():
        raise PoolError("every pool is empty")
    return pool


def _build(expression, config: BuildConfig, engine=None, shard=None):
    """The data path (docs/architecture.md): pools → embed (store) → per job: the space so
    far (store), pseudo tuples, training, router → bundle."""
    import torch

    from freebind import algebra

    from freebind import spaces
    from freebind.build.router_training import router_hyper
    from freebind.data.store import EmbeddingStore
    from freebind.build.projector_training import defaults_for

    batch_size, progress = config.batch_size, config.progress
    space_options = dict(config.space_options or {})
    say = config.log or (lambda msg: None)
    t_start = time.perf_counter()
    overrides = dict(config.hyper or {})
    if config.seed is not None:
        overrides["seed"] = int(config.seed)
    _check_hyper(overrides)
    plan = algebra.plan(expression, hyper=overrides) if isinstance(expression, str) \
        else expression
    families = [s["family"] for s in plan.spaces.values()]
    for job in plan.jobs:  # router settings are checked before any work
        router_hyper({**overrides, **job.hyper})
    store = EmbeddingStore(config.cache_dir, dtype=config.store_dtype or "float32")
    from freebind.run.implicit import declared_pools
    from freebind.run.preflight import check_build

    # libraries, weights, then pools: every failure in one message, before any work
    check_build(plan, config.audio, config.image, config.text, config.pools, space_options,
                have_default_pools=is_mini_only(families), declared=declared_pools(),
                cls=BuildPreflightError, store=store)
    device = space_options.get("device")  # also where pseudo tuples and training run
    pool = build_pools(config, families, store, say)
    report = BuildReport(plan.expression, None, pool.counts(), pool.origin, str(store.root),
                         skipped=list(pool.problems))

    # 1. embed every pool item with every leaf space (cached); a space whose rows were all
    # imported is not loaded (freebind.run.importer)
    t = time.perf_counter()
    from freebind.run.importer import resolve_leaf

    items = {m: pool.items[m] for m in pool.modalities()}
    leaves = {ref: resolve_leaf(store, ref, items, lambda r: spaces.get(r, **space_options))
              for ref in plan.spaces}
    filled = None
    if engine is not None:
        filled = _fill_store(plan, pool, store, engine, shard, batch_size, progress,
                             space_options, say, leaves)
        report.engine = filled.to_dict()
        if shard is not None:
            report.encoded = filled.encoded
            for f in filled.failures:
                if dict(f) not in report.skipped:
                    report.skipped.append(dict(f))
            report.seconds["embed"] = report.seconds["total"] = round(
                time.perf_counter() - t, 2)
            return report
    for ref, got in leaves.items():
        if got.rows != "encoded":
            ident = got.space if got.fallback is None else got.fallback
            say(f"{ref}: rows {got.rows} ({ident.fingerprint})")
    leaf = embed_pools(plan, pool, store, report, batch_size, progress, leaves)
    if filled is not None:  # the engine's encodes, counted as such, not as cache reuse
        report.encoded += filled.encoded
        report.reused -= filled.encoded
    kept = leaf.kept
    report.seconds["embed"] = round(time.perf_counter() - t, 2)
    available = tuple(m for m in POOL_MODALITIES if m in kept)
    if report.skipped:
        say(f"skipped {len(report.skipped)} unreadable pool item(s)")

    # 2-3. jobs in dependency order: the space so far, pseudo tuples, training, routers
    projectors: dict[str, torch.nn.Module] = {}
    training = {}
    job_keys: dict[str, str] = {}
    tuples_of: dict[str, object] = {}
    routed = {b["id"]: b["jobs"] for b in plan.bonds() if b.get("route") == "learned"}

    def embeddings(text):
        return space_so_far(plan, text, projectors, leaf, job_keys, config.chunk_rows,
                            device)

    for job in plan.jobs:
        t_job = time.perf_counter()
        source, target = embeddings(job.source), embeddings(job.target)
        _fit_modalities(job, source, target, available)
        h = {**defaults_for(families), **job.hyper}
        done = train_job(job, source, target, h, store.root, device, progress)
        job_keys[job.id] = done.key
        if done.tuples is not None and job.bond in routed:   # kept for its router only
            tuples_of[job.id] = done.tuples
        projectors[job.id] = done.group
        training[job.id] = summary = done.summary
        seconds = time.perf_counter() - t_job
        report.jobs.append(JobReport(job.id, job.bond, job.kind, job.source, job.target,
                                     list(job.data_modes), summary["tuples"],
                                     summary["epochs"], round(summary["final_val_loss"], 4),
                                     round(seconds, 2), summary["routes"],
                                     cached=done.cached))
        say(f"{job.id}: {summary['tuples']} tuples, {summary['epochs']} epochs, "
            f"val loss {summary['final_val_loss']:.4f}, {seconds:.1f} s"
            + (" (trained before: reused)" if done.cached else ""))
        _router_step(plan, job, projectors, training, embeddings, h, job_keys, tuples_of,
                     store.root, device, progress, say)
        if job.id == routed.get(job.bond, [None])[-1]:   # the router is done with them
            for j in routed[job.bond]:
                tuples_of.pop(j, None)
        del source, target

    # 4. the bundle (deterministic content: no times, no absolute paths)
    fused = make_bundle(plan, projectors, training, leaf, leaves)
    if config.save:
        out = Path(config.output) if config.output is not None \
            else default_output(plan.expression)
        fused.save(out)
        from freebind.run.implicit import record_build

        record_build(out, plan.expression)
        report.output = str(out)
    report.seconds["total"] = round(time.perf_counter() - t_start, 2)
    fused.build_report = report
    return fused


def make_bundle(plan, projectors: Mapping, training: Mapping, leaf: LeafPools,
                leaves: Mapping):
    """The :class:`~freebind.fusion.fused.FusedSpace` of a finished build: projectors, routers,
    training summaries, each space's fingerprint (and where its rows came from) and each
    pool's (items kept, content fingerprint)."""
    from freebind.fusion.fused import FusedSpace

    space_meta = {ref: {**plan.spaces[ref], "fingerprint": str(leaves[ref].space.fingerprint),
                        **leaves[ref].meta()} for ref in plan.spaces}
    data_fp = {}
    for m in POOL_MODALITIES:
        if m in leaf.kept:
            h = hashlib.sha256(m.encode())
            for k in leaf.keys(m).tolist():
                h.update(k)
            data_fp[m] = {"items": int(len(leaf.kept[m])), "fingerprint": h.hexdigest()[:16]}
    return FusedSpace.from_plan(plan, projectors, spaces=space_meta, training=training,
                                data=data_fp)
