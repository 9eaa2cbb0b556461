"""A build's projector jobs: a job's key (spec, settings, training embeddings), groups
trained before reused under it, pseudo tuples and training (:func:`train_job`), what the
jobs trained so far leave for later ones (:class:`TrainedJobs`) and a learned bond's
router step."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from freebind.build.pools import PoolError
from freebind.util.errors import UsageError


def fit_modalities(job, source: Mapping, target: Mapping, available) -> None:
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


#: knobs of the training loop a build may override besides the bond options
#: (:data:`freebind.algebra.keywords.OPTIONS`): name -> (kind, lower, inclusive, upper)
LOOP_OPTIONS = {
    "weight_decay": ("float", 0.0, True, None),
    "val_frac": ("float", 0.0, False, 1.0),
    "min_delta": ("float", 0.0, True, None),
    "max_steps_per_epoch": ("int", 0, True, None),
    "threads": ("int", 0, True, None),
    # pseudo-tuple queries drawn per modality (None: every item of the pool is a query)
    "max_queries": ("int", 1, True, None),
}


def check_hyper(overrides: Mapping) -> dict:
    """The training settings every job reads, checked before any work: each name known
    (a did-you-mean otherwise), each number a number within its bounds (``epochs=0``,
    ``lr=-1`` and ``epochs=abc`` are refused). Returns them with numbers as numbers."""
    from freebind.build.pseudo_tuples import SIM_PRECISIONS
    from freebind.build.projector_training import AMP_CHOICES

    if "sim" in overrides and overrides["sim"] not in SIM_PRECISIONS:
        raise UsageError(f"hyper sim={overrides['sim']!r}: expected one of "
                         f"{', '.join(SIM_PRECISIONS)}")
    if overrides.get("amp") not in (None, "none", *AMP_CHOICES):
        raise UsageError(f"hyper amp={overrides['amp']!r}: expected bf16, fp16 or none")
    return {k: v if k in ("sim", "amp") or k.startswith("router_") else _hyper_number(k, v)
            for k, v in overrides.items()}


def _hyper_number(key: str, value):
    from freebind.algebra.keywords import OPTIONS

    numeric = {k: (kind, low, inc, None) for k, (kind, low, inc, _) in OPTIONS.items()
               if kind in ("int", "float")}
    known = {**numeric, **LOOP_OPTIONS}
    if key not in known:
        import difflib

        if key in OPTIONS:
            raise UsageError(f"hyper {key}={value}: {key} is set per bond, in the expression "
                             f"(e.g. c(A, B, {key}=…))")
        close = difflib.get_close_matches(key, [*known, "sim", "amp"], n=1, cutoff=0.6)
        guess = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"hyper {key}={value}: unknown training option{guess} (known: "
                         f"{', '.join([*known, 'sim', 'amp', 'router_…'])})")
    kind, low, inclusive, high = known[key]
    try:
        number = float(value)
        if isinstance(value, bool) or number != number:
            raise ValueError
    except (TypeError, ValueError):
        raise UsageError(f"hyper {key}={value}: expected a number") from None
    if kind == "int":
        if not number.is_integer():
            raise UsageError(f"hyper {key}={value}: expected a whole number")
        number = int(number)
    if number < low or (number == low and not inclusive) or (
            high is not None and number >= high):
        bound = f"at least {low}" if inclusive else f"greater than {low}"
        bound += f" and less than {high}" if high is not None else ""
        raise UsageError(f"hyper {key}={value}: must be {bound}")
    return number


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


@dataclass
class TrainedJobs:
    """What the jobs trained so far leave for later ones: their projector groups, training
    summaries and keys, and the pseudo tuples a ``route=learned`` bond's router still needs
    (``routed``: such a bond's jobs)."""

    routed: dict
    projectors: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    keys: dict = field(default_factory=dict)
    tuples: dict = field(default_factory=dict)

    @classmethod
    def of(cls, plan) -> "TrainedJobs":
        return cls({b["id"]: b["jobs"] for b in plan.bonds() if b.get("route") == "learned"})

    def add(self, job, done: JobResult) -> None:
        self.keys[job.id] = done.key
        if done.tuples is not None and job.bond in self.routed:   # kept for its router only
            self.tuples[job.id] = done.tuples
        self.projectors[job.id] = done.group
        self.training[job.id] = done.summary

    def release_tuples(self, job) -> None:
        """Drop a routed bond's tuples once its router is done with them (its last job)."""
        if job.id == self.routed.get(job.bond, [None])[-1]:
            for j in self.routed[job.bond]:
                self.tuples.pop(j, None)


def router_step(plan, job, trained: TrainedJobs, embeddings, h, root, device, progress, say):
    """A ``route=learned`` bond's router, once its last projector group exists: trained on
    the very tuples of its bond's jobs (rebuilt the same way when a job was reused), on the
    build's device, reading batches from the (memory-mapped) pools."""
    from freebind.build.router_training import build_step

    def tuples(j, source, target):
        got = trained.tuples.get(j.id)
        if got is None:
            got = make_tuples(j, source, target, {**h, **j.hyper}, device)
        return got

    build_step(plan, job, trained.projectors, trained.training, embeddings, h, trained.keys,
               root, tuples, progress=progress, log=say, device=device)
