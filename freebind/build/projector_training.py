"""Training a bond's projector group on pseudo tuples (docs/architecture.md,
"Training a bond", steps 3–5).

A group holds one projector per data mode (``mix``, ``A``, ``T``, ``V``, ``AT``, ``AV``,
``TV`` for three query modalities): projector k sees only tuples whose query modality is in
mode k. All K projectors train as ONE batched computation: each step draws a batch of B
tuples per projector, stacks them to ``[K, B, d_in]`` and runs the group's batched forward
(``torch.bmm``); the losses of the K projectors are summed, so their gradients stay
independent.

Loss: symmetric InfoNCE between projected source embeddings and target embeddings, dense
over every (source modality, target modality) pair present in the tuples (both spaces'
modalities). Adam. A held-out split of the tuples (per query modality) gives each
projector a validation loss every epoch; each projector keeps its best weights, and training
stops when no projector has improved for ``patience`` epochs.

Deterministic: the seed drives initialisation, the split and the batch order, so the same
seed gives bitwise-identical weights on CPU.

On a device (``device="cuda"``) the group, the loss and the tuples live there: tuples that
fit the memory budget are gathered once and moved to the device; larger sets (or pools
read memory-mapped from the store) are gathered batch by batch on the host into pinned
memory and copied asynchronously. ``amp="bf16"`` runs the forward and the loss under bf16
autocast (weights, optimiser state and BatchNorm statistics stay float32). The CPU path
without autocast gives bit-identical weights for a seed, run to run.

The step is fused where it is memory-bound: the group's training forward runs each
BatchNorm (and the ReLU after the first) as one autograd function with one-pass statistics
and a closed-form backward (:mod:`freebind.fusion.projector`), and Adam is the fused kernel.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from freebind.util.errors import FreebindError
from freebind.util.progress import bar
from freebind.algebra.keywords import DEFAULT_HYPER, MINI_HYPER
from freebind.build.pseudo_tuples import PseudoTuples, mode_modalities

#: The plan's defaults (``freebind plan`` shows them per job) plus knobs of the loop itself.
DEFAULTS = {
    **DEFAULT_HYPER,
    "weight_decay": 0.0,
    "val_frac": 0.1,
    "min_delta": 1e-4,
    "max_steps_per_epoch": 0,   # 0: one pass over the largest data mode
    "threads": 0,               # torch CPU threads while training; 0: leave as set
}
#: Mini spaces (tens of dimensions, a few thousand pool items): small, fast, one thread.
MINI_DEFAULTS = {**DEFAULTS, **MINI_HYPER, "threads": 1}
#: Tuples materialised in memory up to this many bytes; beyond, batches are gathered lazily
#: (the same batches, the same group: a chunk's worth, not a pool's, whatever the pools).
MATERIALISE_BYTES = 256 << 20


class TrainingError(FreebindError):
    """A projector group cannot be trained (no tuples for a data mode, no modality pair, …)."""


def defaults_for(families: Sequence[str]) -> dict:
    """Mini defaults when every space involved is a mini space, else the paper's."""
    from freebind.util.vocab import is_mini_only

    return dict(MINI_DEFAULTS if is_mini_only(families) else DEFAULTS)


@dataclass
class TrainResult:
    group: object                       # ProjectorGroup, eval mode, best weights per projector
    modes: list[str]
    tuples: int
    train_tuples: int
    val_tuples: int
    epochs: int                         # epochs run
    best_epoch: list[int]               # per projector, 1-based
    val_loss: list[float]               # best validation loss per projector
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    pairs: list[tuple[str, str]] = field(default_factory=list)
    batch: int = 0                      # tuples per projector per step
    steps: int = 0                      # steps per epoch
    val_batch: int = 0
    val_batches: int = 0                # validation batches per epoch

    @property
    def final_val_loss(self) -> float:
        return float(np.mean(self.val_loss))

    def summary(self) -> dict:
        return {"tuples": self.tuples, "train_tuples": self.train_tuples,
                "val_tuples": self.val_tuples, "epochs": self.epochs,
                "best_epoch": self.best_epoch, "val_loss": [round(v, 6) for v in self.val_loss],
                "final_val_loss": round(self.final_val_loss, 6), "modes": self.modes,
                "pairs": [f"{a}->{b}" for a, b in self.pairs]}


class _Tuples:
    """Every tuple of every query modality, concatenated, as tensors per space and modality.

    Global tuple id t runs over query modalities in order; ``ids_of(q)`` gives q's range."""

    def __init__(self, tuples: PseudoTuples, source, target, src_mods, tgt_mods, lazy: bool,
                 device=None):
        import torch

        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.tuples, self.source, self.target = tuples, source, target
        self.src_mods, self.tgt_mods = list(src_mods), list(tgt_mods)
        self.offsets, start = {}, 0
        for q in tuples.modalities:
            self.offsets[q] = (start, start + tuples.size(q))
            start += tuples.size(q)
        self.n = start
        self.lazy = lazy
        if not lazy:
            self.src = {m: torch.cat([tuples.gather(source, q, modalities=[m])[m]
                                      for q in tuples.modalities]) for m in self.src_mods}
            self.tgt = {m: torch.cat([tuples.gather(target, q, modalities=[m])[m]
                                      for q in tuples.modalities]) for m in self.tgt_mods}
            if self.device.type != "cpu":
                self.src = {m: t.to(self.device) for m, t in self.src.items()}
                self.tgt = {m: t.to(self.device) for m, t in self.tgt.items()}

    def ids_of(self, q: str) -> np.ndarray:
        a, b = self.offsets[q]
        return np.arange(a, b)

    def batch(self, ids: np.ndarray):
        """``ids [K, B]`` -> (src {m: [K, B, d_in]}, tgt {m: [K, B, d_out]})."""
        import torch

        if not self.lazy:
            flat = torch.from_numpy(ids.reshape(-1))
            if self.device.type != "cpu":
                flat = flat.to(self.device)
            shape = ids.shape
            src = {m: t[flat].reshape(*shape, -1) for m, t in self.src.items()}
            tgt = {m: t[flat].reshape(*shape, -1) for m, t in self.tgt.items()}
            return src, tgt
        flat = ids.reshape(-1)
        src = {m: [] for m in self.src_mods}
        tgt = {m: [] for m in self.tgt_mods}
        order = []
        for q in self.tuples.modalities:
            a, b = self.offsets[q]
            sel = np.nonzero((flat >= a) & (flat < b))[0]
            if sel.size == 0:
                continue
            order.append(sel)
            gs = self.tuples.gather(self.source, q, flat[sel] - a, modalities=self.src_mods)
            gt = self.tuples.gather(self.target, q, flat[sel] - a, modalities=self.tgt_mods)
            for m in self.src_mods:
                src[m].append(gs[m])
            for m in self.tgt_mods:
                tgt[m].append(gt[m])
        inverse = torch.from_numpy(np.argsort(np.concatenate(order), kind="stable"))
        src = {m: torch.cat(v)[inverse].reshape(*ids.shape, -1) for m, v in src.items()}
        tgt = {m: torch.cat(v)[inverse].reshape(*ids.shape, -1) for m, v in tgt.items()}
        if self.device.type != "cpu":   # pinned host memory, asynchronous copies
            src = {m: _to_device(t, self.device) for m, t in src.items()}
            tgt = {m: _to_device(t, self.device) for m, t in tgt.items()}
        return src, tgt


def _to_device(t, device):
    """A host tensor to ``device`` through pinned memory (asynchronous on CUDA)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _infonce(group, src, tgt, pairs, temp, amp=None):
    """Per-projector symmetric InfoNCE [K], averaged over modality pairs."""
    import torch
    from torch.nn import functional as F

    if amp:
        x0 = next(iter(src.values()))
        with torch.autocast(x0.device.type, dtype=_AMP[amp]):
            return _infonce(group, src, tgt, pairs, temp).float()
    mods = sorted({a for a, _ in pairs})
    k, b = next(iter(src.values())).shape[:2]
    x = torch.cat([src[m] for m in mods], dim=1)          # one batched forward for all
    y = group(x)                                           # [K, |mods|·B, out]
    proj = dict(zip(mods, y.split(b, dim=1)))   # one gradient concatenation, no zero fills
    labels = torch.arange(b).repeat(k)
    if x.device.type != "cpu":
        labels = labels.to(x.device)
    total = 0.0
    for a, t in pairs:
        logits = torch.bmm(proj[a], tgt[t].transpose(1, 2)) / temp   # [K, B, B]
        flat = logits.reshape(k * b, b)
        l1 = F.cross_entropy(flat, labels, reduction="none").reshape(k, b).mean(1)
        l2 = F.cross_entropy(logits.transpose(1, 2).reshape(k * b, b), labels,
                             reduction="none").reshape(k, b).mean(1)
        total = total + 0.5 * (l1 + l2)
    return total / len(pairs)


def _amp_dtypes():
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}


class _AmpTable(dict):
    def __missing__(self, key):
        self.update(_amp_dtypes())
        return dict.__getitem__(self, key)


_AMP = _AmpTable()
AMP_CHOICES = ("bf16", "fp16")


def train_group(tuples: PseudoTuples, source: Mapping[str, object],
                target: Mapping[str, object], modes: Sequence[str], hyper: Mapping | None = None,
                progress: bool = False, desc: str = "train", device=None,
                materialise_bytes: int | None = None) -> TrainResult:
    """Train one projector group ``source → target`` on ``tuples``.

    ``source`` / ``target`` map modalities to pool embeddings ``[N_modality, dim]`` of the
    source and the target space (numpy, torch or memory-mapped
    :class:`~freebind.data.store.PoolView`; the tuples index into them); ``modes`` are the data
    modes, one projector each. ``device`` is where the group trains (default the CPU);
    ``hyper["amp"] = "bf16"`` turns on bf16 autocast. Tuples are gathered into memory up
    to ``materialise_bytes`` (default 256 MiB), beyond that batch by batch. The returned group
    is on the CPU."""
    import torch

    h = dict(DEFAULTS)
    h.update({k: v for k, v in (hyper or {}).items() if v is not None})
    amp = h.get("amp")
    if amp in ("", "none", "off", "fp32", False):
        amp = None
    if amp is not None and amp not in AMP_CHOICES:
        raise TrainingError(f"amp {amp!r}: expected bf16, fp16 or none")
    h["_amp"], h["_device"] = amp, device
    h["_materialise"] = MATERIALISE_BYTES if materialise_bytes is None \
        else int(materialise_bytes)
    threads = int(h.get("threads") or 0)
    previous = torch.get_num_threads()
    if threads > 0:  # small groups run faster on one thread (and never oversubscribe)
        torch.set_num_threads(threads)
    try:
        return _train_group(tuples, source, target, modes, h, progress, desc)
    finally:
        if threads > 0:
            torch.set_num_threads(previous)


def _train_group(tuples, source, target, modes, h, progress, desc) -> TrainResult:
    import torch

    from freebind.fusion.projector import ProjectorGroup

    t0 = time.perf_counter()
    modes = list(modes)
    if not modes:
        raise TrainingError("a projector group needs at least one data mode")
    src_mods, tgt_mods, pairs = _modality_pairs(tuples, source, target)
    d_in = int(next(iter(source.values())).shape[1])
    d_out = int(next(iter(target.values())).shape[1])

    per_tuple = 4 * (len(src_mods) * d_in + len(tgt_mods) * d_out)
    dev = torch.device(h["_device"]) if h["_device"] is not None else torch.device("cpu")
    data = _Tuples(tuples, source, target, src_mods, tgt_mods,
                   lazy=len(tuples) * per_tuple > h["_materialise"], device=dev)

    rng = np.random.default_rng(int(h["seed"]))
    split = _Split(data, tuples.modalities, modes, float(h["val_frac"]), rng)
    batch, vbatch, steps = _batch_sizes(split, modes, h)

    gen = torch.Generator().manual_seed(int(h["seed"]))
    group = ProjectorGroup(len(modes), d_in, d_out, hidden=int(h["hidden"]), generator=gen)
    if dev.type != "cpu":
        group = group.to(dev)
    opt = _adam(group.parameters(), lr=float(h["lr"]), weight_decay=float(h["weight_decay"]))
    samplers = [_Sampler(ids, batch, rng) for ids in split.mode_train]
    val_batches = _val_batches(split.mode_val, vbatch) if vbatch else []

    best = _Best(group, len(modes))
    loop = _Loop(group, opt, data, samplers, val_batches, pairs, float(h["temp"]), h["_amp"],
                 steps)
    epochs_run, history = loop.run(best, h, progress, desc)
    best.restore(group)
    if dev.type != "cpu":
        group = group.cpu()
    group.eval()
    return TrainResult(group=group, modes=modes, tuples=len(tuples),
                       train_tuples=split.size(split.train_ids),
                       val_tuples=split.size(split.val_ids), epochs=epochs_run,
                       best_epoch=best.epoch, val_loss=[float(v) for v in best.loss],
                       history=history, seconds=time.perf_counter() - t0, pairs=pairs,
                       batch=batch, steps=steps, val_batch=vbatch,
                       val_batches=len(val_batches))


def _modality_pairs(tuples, source, target):
    """The source and target modalities the tuples have, and every (source, target) pair
    of them the loss covers."""
    src_mods = [m for m in tuples.modalities if m in source]
    tgt_mods = [m for m in tuples.modalities if m in target]
    pairs = [(a, b) for a in src_mods for b in tgt_mods]
    if not pairs:
        raise TrainingError(f"no modality pair to train on: source has {list(source)}, "
                            f"target has {list(target)}, tuples have {list(tuples.modalities)}")
    return src_mods, tgt_mods, pairs


class _Split:
    """The held-out split per query modality (``val_frac`` of each, none under four tuples),
    and each data mode's training and held-out tuple ids."""

    def __init__(self, data: _Tuples, modalities, modes, val_frac: float,
                 rng: np.random.Generator):
        self.train_ids, self.val_ids = {}, {}
        for q in modalities:
            ids = data.ids_of(q)
            perm = rng.permutation(ids)
            n_val = int(math.ceil(len(ids) * val_frac)) if len(ids) >= 4 else 0
            self.val_ids[q], self.train_ids[q] = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        self.mode_train, self.mode_val = [], []
        for mode in modes:
            qs = mode_modalities(mode, modalities)
            self.mode_train.append(np.concatenate([self.train_ids[q] for q in qs]))
            self.mode_val.append(np.concatenate([self.val_ids[q] for q in qs]))

    @staticmethod
    def size(ids: dict) -> int:
        return int(sum(len(v) for v in ids.values()))


def _batch_sizes(split: _Split, modes, h: Mapping) -> tuple[int, int, int]:
    """(tuples per projector per training step, per validation batch (0: no held-out
    data), steps per epoch)."""
    mode_train, mode_val = split.mode_train, split.mode_val
    if min(len(t) for t in mode_train) < 2:
        raise TrainingError(f"too few tuples to train (data modes {modes}: "
                            f"{[len(t) for t in mode_train]} training tuples)")
    batch = int(min(int(h["batch"]), min(len(t) for t in mode_train)))
    has_val = min(len(v) for v in mode_val) >= 2
    vbatch = int(min(int(h["batch"]), min(len(v) for v in mode_val))) if has_val else 0
    steps = int(math.ceil(max(len(t) for t in mode_train) / batch))
    if int(h.get("max_steps_per_epoch") or 0) > 0:
        steps = min(steps, int(h["max_steps_per_epoch"]))
    return batch, vbatch, steps


class _Best:
    """Each projector's best validation loss so far, its (1-based) epoch and its weights."""

    def __init__(self, group, k: int):
        self.loss = [math.inf] * k
        self.epoch = [0] * k
        self.state = {n: t.detach().clone() for n, t in _state(group).items()}

    def update(self, group, val: list[float], epoch: int, min_delta: float) -> bool:
        """Keep the weights of every projector that improved by ``min_delta`` (relative
        above 1); whether any did."""
        import torch

        improved = False
        with torch.no_grad():
            for k, v in enumerate(val):
                if v < self.loss[k] - min_delta * max(1.0, abs(self.loss[k])) \
                        or not math.isfinite(self.loss[k]):
                    self.loss[k], self.epoch[k], improved = v, epoch, True
                    for n, t in _state(group).items():
                        self.state[n][k].copy_(t[k])
        return improved

    def restore(self, group) -> None:
        import torch

        with torch.no_grad():
            for n, t in _state(group).items():
                t.copy_(self.state[n])


@dataclass
class _Loop:
    """The training loop of one group: ``steps`` batched steps an epoch, then the held-out
    loss (the training loss when there is no held-out data)."""

    group: object
    opt: object
    data: _Tuples
    samplers: list
    val_batches: list
    pairs: list
    temp: float
    amp: object
    steps: int

    def run(self, best: _Best, h: Mapping, progress: bool, desc: str):
        """Epochs until ``h["epochs"]``, or ``h["patience"]`` epochs in which no projector
        improved; returns (epochs run, history)."""
        history, stale, epochs_run = [], 0, 0
        epochs = int(h["epochs"])
        with bar(total=epochs * self.steps, unit="step", desc=desc,
                 disable=not progress) as pbar:
            for epoch in range(1, epochs + 1):
                train_loss = self.epoch(pbar)
                epochs_run = epoch
                if self.val_batches:
                    val = _validate(self.group, self.data, self.val_batches, self.pairs,
                                    self.temp, self.amp)
                else:  # no held-out data: fall back to the training loss
                    val = [train_loss] * len(self.samplers)
                improved = best.update(self.group, val, epoch, float(h["min_delta"]))
                history.append({"epoch": epoch, "train_loss": round(train_loss, 6),
                                "val_loss": round(float(np.mean(val)), 6)})
                # the kept weights are each projector's best: the build's summary reports
                # their mean ("best val loss"), so the bar shows it beside this epoch's
                pbar.set_postfix(val=f"{np.mean(val):.4f}", best=f"{np.mean(best.loss):.4f}")
                stale = 0 if improved else stale + 1
                if stale >= int(h["patience"]):
                    break
        return epochs_run, history

    def epoch(self, pbar) -> float:
        """One epoch of training steps; the mean training loss."""
        self.group.train()
        running = 0.0
        for _ in range(self.steps):
            ids = np.stack([s.next() for s in self.samplers])        # [K, B]
            src, tgt = self.data.batch(ids)
            loss = train_step(self.group, self.opt, src, tgt, self.pairs, self.temp, self.amp)
            if self.data.device.type == "cpu":
                running += float(loss.detach().mean())
            else:   # no host sync per step on a device
                running = loss.detach().double().mean() + running
            pbar.update(1)
        return float(running) / self.steps


def train_step(group, opt, src, tgt, pairs, temp: float, amp=None):
    """One optimiser step of ``group`` on a batch (``src {m: [K, B, d_in]}``, ``tgt {m: [K,
    B, d_out]}``); returns the per-projector losses [K] (what benchmarks time)."""
    loss = _infonce(group, src, tgt, pairs, temp, amp)
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    opt.step()
    return loss


def _adam(params, **kw):
    """Adam as one fused pass per parameter (CPU and CUDA): the single-tensor loop makes ten
    passes over every weight; where the fused kernel is missing, the multi-tensor one."""
    import torch

    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, foreach=True, **kw)


def _state(group) -> dict:
    """Every parameter and BatchNorm buffer of the group (all have K as first dim)."""
    from freebind.fusion.projector import PARAM_NAMES

    return {n: group._get(n) for n in PARAM_NAMES}


class _Sampler:
    """Epoch-less stream of batches: a fresh permutation each time one is used up."""

    def __init__(self, ids: np.ndarray, batch: int, rng: np.random.Generator):
        self.ids, self.batch, self.rng = ids, batch, rng
        self.perm, self.pos = rng.permutation(ids), 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch > len(self.perm):
            self.perm, self.pos = self.rng.permutation(self.ids), 0
        out = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return out


def _val_batches(mode_val: list[np.ndarray], vbatch: int) -> list[np.ndarray]:
    """Fixed validation batches [K, vbatch]: each projector's held-out tuples in order,
    cycled so every projector gets the same number of batches (no duplicate in a batch)."""
    n_batches = max(int(math.ceil(len(v) / vbatch)) for v in mode_val)
    cols = [np.resize(v, n_batches * vbatch) for v in mode_val]
    return [np.stack([c[i * vbatch:(i + 1) * vbatch] for c in cols]) for i in range(n_batches)]


def _validate(group, data, batches, pairs, temp, amp=None) -> list[float]:
    import torch

    group.eval()
    total = None
    with torch.no_grad():
        for ids in batches:
            src, tgt = data.batch(ids)
            loss = _infonce(group, src, tgt, pairs, temp, amp)
            total = loss if total is None else total + loss
    return [float(v) for v in (total / len(batches))]
