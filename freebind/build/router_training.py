"""Training a learned router (``route=learned``; the router itself:
:mod:`freebind.fusion.router`).

Training (after the bond's projector groups, which stay frozen) runs on the bond's own pseudo
tuples: every tuple is fused in each of its modalities and a symmetric InfoNCE pulls the fused
modalities of one tuple together (audio–text, audio–image, image–text as present), plus ``reg``
· mean (logit deviation)², which keeps the weights near the fixed factors where the tuples carry
no signal. A held-out split early-stops training and keeps the best weights. By default the
router learns σ only (``router_experts=learned`` learns the expert weights too: on the mini
world it preferred the weaker expert and lowered every suite's mean; docs/routers.md).
Deterministic: the seed drives initialisation, split and batch order (bitwise-identical on CPU).
See docs/routers.md.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Callable, Mapping

import numpy as np
import torch
from torch.nn import functional as F

from freebind.fusion.router import (CHOICES, FORMAT, ROUTER_DEFAULTS, BondRouter, mix,
                                    router_key, router_spec)
from freebind.util.errors import FreebindError, UsageError
from freebind.util.progress import bar


def _infonce(a, b, temp):
    logits = a @ b.T / temp
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class _Data:
    """Per tuple and modality: the base embedding u, the experts' mixtures, and the fixed
    fusion of modalities the router does not weigh."""

    def __init__(self, u: dict, mixtures: dict, fixed: dict, query=None):
        self.u, self.mixtures, self.fixed = u, mixtures, fixed
        self.n = next(iter({**u, **fixed}.values())).shape[0]
        #: per tuple, its query modality (the real pool item; the others are filled)
        self.query = query if query is not None else np.array([""] * self.n)

    def rows(self, idx):
        t = torch.from_numpy(np.asarray(idx))
        if self.u or self.fixed:
            t = t.to(next(iter({**self.u, **self.fixed}.values())).device)
        return (_Data({m: x[t] for m, x in self.u.items()},
                      {m: [y[t] for y in ys] for m, ys in self.mixtures.items()},
                      {m: x[t] for m, x in self.fixed.items()}, self.query[idx]))


def _loss(router: BondRouter, data: _Data, temp: float, reg: float, pairs: str = "all",
          fills: str = "routed", experts: str = "learned"):
    """Σ over modality pairs of the symmetric InfoNCE between the tuples' fused embeddings
    (``pairs="query"``: only pairs holding the tuple's real item, its query modality) plus
    ``reg`` · mean z² (the deviation from the fixed factors' logits). ``fills="fixed"``
    fuses filled modalities with the fixed factors (the router weighs real items only)."""
    fused = dict(data.fixed)
    penalty = 0.0
    for m in router.spec:
        mixtures = data.mixtures[m]
        projections = [F.normalize(x, dim=-1) for x in mixtures]
        z = router.logits(m, data.u[m], projections)
        if experts == "fixed" and z.shape[1] > 1:
            z = torch.cat([z[:, :1], torch.zeros_like(z[:, 1:])], dim=1)
        sigma, w = router.from_logits(m, z)
        if fills == "fixed":
            is_q = torch.from_numpy(data.query == m).to(z.device)
            z = torch.where(is_q[:, None], z, torch.zeros_like(z))
            sigma, w = router.from_logits(m, z)
        fused[m] = mix(data.u[m], mixtures, sigma, w)
        penalty = penalty + (z ** 2).mean()
    mods = sorted(fused)
    loss = 0.0
    for i, a in enumerate(mods):
        for b in mods[i + 1:]:
            if a not in router.spec and b not in router.spec:
                continue
            if pairs == "query":
                sel = torch.from_numpy((data.query == a) | (data.query == b)) \
                    .to(fused[a].device)
                if int(sel.sum()) < 2:
                    continue
                loss = loss + _infonce(fused[a][sel], fused[b][sel], temp)
            else:
                loss = loss + _infonce(fused[a], fused[b], temp)
    return loss + reg * penalty


def train_router(bond: dict, data, hyper: Mapping, temp: float, seed: int,
                 progress: bool = False, desc: str = "router", device=None
                 ) -> tuple[BondRouter, dict]:
    """Train a bond's router on tuple data (a :class:`_Data` in memory, or
    :class:`TupleBatches` that computes each batch from the pools) on ``device``; returns
    (router in eval mode, summary). The held-out loss is the mean over held-out batches of
    ``val_batch`` tuples (one batch when the held-out split is smaller)."""
    h = {**ROUTER_DEFAULTS, **dict(hyper)}
    temp = float(h["temp"]) or temp
    seed = int(h["seed"]) if int(h["seed"]) >= 0 else int(seed)
    gen = torch.Generator().manual_seed(int(seed))
    router = BondRouter(bond, int(h["hidden"]), generator=gen)
    if device is not None:
        router.to(device)
    if not router.spec:
        raise FreebindError(f"bond {bond['id']}: route=learned needs a modality in both the "
                            f"base and an expert")
    rng = np.random.default_rng(int(seed))
    order = rng.permutation(data.n)
    n_val = max(1, int(round(data.n * float(h["val_frac"]))))
    val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
    vb = max(1, int(h["val_batch"]))
    val_parts = [val_idx[i:i + vb] for i in range(0, len(val_idx), vb)]
    fit = _RouterFit(router, data, h, temp, val_parts)
    fit.run(train_idx, rng, progress, desc)
    router.load_state_dict(fit.best_state)
    router.eval()
    stats = weight_stats(router, data, val_parts)
    router.cpu()
    summary = {"kind": "router", "bond": bond["id"], "tuples": int(data.n),
               "val_tuples": int(n_val), "epochs": fit.epochs, "best_epoch": fit.best_epoch,
               "initial_val_loss": round(fit.initial, 6), "final_val_loss": round(fit.best, 6),
               "history": fit.history, "hyper": {**h, "temp": temp, "seed": int(seed)},
               "modalities": router.modalities, "weights": stats}
    return router, summary


class _RouterFit:
    """A router's training loop (Adam, batches of ``h["batch"]`` shuffled tuples an epoch)
    and its early stopping on the held-out loss: the best loss, epoch and weights."""

    def __init__(self, router: BondRouter, data, h: Mapping, temp: float, val_parts: list):
        self.router, self.data, self.h, self.temp, self.val_parts = \
            router, data, h, temp, val_parts
        self.opt = torch.optim.Adam(router.parameters(), lr=float(h["lr"]),
                                    weight_decay=float(h["weight_decay"]))
        self.best_epoch, self.epochs, self.history = 0, 0, []

    def loss_of(self, rows):
        h = self.h
        return _loss(self.router, rows, self.temp, float(h["reg"]), str(h["pairs"]),
                     str(h["fills"]), str(h["experts"]))

    def val_loss(self) -> float:
        with torch.no_grad():
            return float(np.mean([float(self.loss_of(self.data.rows(part)))
                                  for part in self.val_parts]))

    def run(self, train_idx: np.ndarray, rng: np.random.Generator, progress: bool,
            desc: str) -> None:
        """Epochs until ``h["epochs"]``, or more than ``h["patience"]`` without a better
        held-out loss."""
        router, h = self.router, self.h
        with torch.no_grad():
            router.eval()
            self.best = self.val_loss()
        self.initial = self.best
        self.best_state = {k: v.clone() for k, v in router.state_dict().items()}
        stale = 0
        with bar(total=int(h["epochs"]), desc=desc, unit="epoch",
                 disable=not progress) as pbar:
            for epoch in range(1, int(h["epochs"]) + 1):
                self.epochs = epoch
                router.train()
                self.epoch(train_idx[rng.permutation(len(train_idx))])
                router.eval()
                v = self.val_loss()
                self.history.append(round(v, 6))
                pbar.update()
                pbar.set_postfix(val=f"{v:.4f}")
                if v < self.best - 1e-5:
                    self.best, self.best_epoch, stale = v, epoch, 0
                    self.best_state = {k: t.clone() for k, t in router.state_dict().items()}
                else:
                    stale += 1
                    if stale > int(h["patience"]):
                        break

    def epoch(self, perm: np.ndarray) -> None:
        """One pass over the shuffled training tuples ``perm`` (the last partial batch
        dropped, unless there is only one)."""
        batch = int(self.h["batch"])
        for start in range(0, len(perm) - batch + 1 if len(perm) >= batch else 1, batch):
            rows = self.data.rows(np.sort(perm[start:start + batch]))
            loss = self.loss_of(rows)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()


def weight_stats(router: BondRouter, data, parts=None) -> dict:
    """Mean, spread and range of the routed σ (and mean expert weights) per modality, over
    the tuples ``parts`` (lists of tuple rows; default: every tuple of an in-memory
    :class:`_Data`), read part by part."""
    if parts is None:
        parts = [np.arange(data.n)]
    sigmas: dict[str, list] = {m: [] for m in router.spec}
    ws: dict[str, list] = {m: [] for m in router.spec}
    with torch.no_grad():
        for part in parts:
            rows = data.rows(part)
            for m in router.spec:
                projections = [F.normalize(x, dim=-1) for x in rows.mixtures[m]]
                sigma, w = router.weights(m, rows.u[m], projections)
                sigmas[m].append(sigma.cpu())
                ws[m].append(w.cpu())
    out = {}
    for m in router.spec:
        sigma, w = torch.cat(sigmas[m]), torch.cat(ws[m])
        out[m] = {"sigma_mean": round(float(sigma.mean()), 4),
                  "sigma_std": round(float(sigma.std()) if len(sigma) > 1 else 0.0, 4),
                  "sigma_min": round(float(sigma.min()), 4),
                  "sigma_max": round(float(sigma.max()), 4),
                  "w_mean": [round(float(x), 4) for x in w.mean(dim=0)]}
    return out


class TupleBatches:
    """The tuples of a bond (every expert job's, concatenated) read batch by batch: for
    tuple rows ``idx``, the base rows u, the frozen experts' mixtures m_i(e_i) and the fixed
    fusion of the modalities the router does not weigh (only in the base: u; only in experts:
    the fixed projection), gathered from the (memory-mapped) pools and projected on
    ``device``. Nothing pool-sized is held: the tuples' indices and weights, one batch."""

    def __init__(self, bond: dict, tuples_list, base_emb: Mapping, expert_embs: list[Mapping],
                 projectors: list, device=None):
        from freebind.fusion.devices import module_on

        self.bond, self.spec = bond, router_spec(bond)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.base, self.experts = base_emb, expert_embs
        self.projectors = [module_on(p, self.device) for p in projectors]
        self.parts = []         # (tuples, query modality, first row, end row)
        start = 0
        for tuples in tuples_list:
            for q in tuples.modalities:
                self.parts.append((tuples, q, start, start + tuples.size(q)))
                start += tuples.size(q)
        self.n = start
        self.all_mods = sorted({m for t in tuples_list for m in t.modalities})
        # modalities of the fixed fusion every tuple has (as the whole-set concatenation)
        self.fixed_mods = [m for m in self.all_mods if m not in self.spec and all(
            m in t.modalities and (m in base_emb or any(
                m in e and w > 0 for e, w in zip(expert_embs, bond["weights"])))
            for t, _, _, _ in self.parts)]
        self.query_names = np.array(sorted({q for _, q, _, _ in self.parts}))
        self._query_code = {q: i for i, q in enumerate(self.query_names)}

    @property
    def query(self) -> np.ndarray:
        codes = np.empty(self.n, dtype=np.int8)
        for _, q, a, b in self.parts:
            codes[a:b] = self._query_code[q]
        return self.query_names[codes]

    def rows(self, idx) -> _Data:
        idx = np.asarray(idx, dtype=np.int64)
        u: dict[str, list] = {}
        mixtures: dict[str, list[list]] = {}
        fixed: dict[str, list] = {}
        order, query = [], []
        with torch.no_grad():
            for tuples, q, a, b in self.parts:
                sel = np.nonzero((idx >= a) & (idx < b))[0]
                if sel.size == 0:
                    continue
                order.append(sel)
                query += [q] * sel.size
                local = idx[sel] - a
                base = {m: x.to(self.device) for m, x in
                        tuples.gather(self.base, q, local).items()}
                mix_of = {}
                for i, e in enumerate(self.experts):
                    for m, x in tuples.gather(e, q, local).items():
                        mix_of[(i, m)] = self.projectors[i].mixture(x.to(self.device))
                for m in self.all_mods:
                    if m in self.spec:
                        u.setdefault(m, []).append(base[m])
                        slot = mixtures.setdefault(m, [[] for _ in self.spec[m]["experts"]])
                        for j, i in enumerate(self.spec[m]["experts"]):
                            slot[j].append(mix_of[(i, m)])
                    elif m in self.fixed_mods:
                        if m in base:
                            fixed.setdefault(m, []).append(base[m])
                            continue
                        total = None
                        for i, w in enumerate(self.bond["weights"]):
                            if (i, m) in mix_of and w > 0:
                                t = w * mix_of[(i, m)]
                                total = t if total is None else total + t
                        fixed.setdefault(m, []).append(F.normalize(total, dim=-1))
        perm = np.argsort(np.concatenate(order), kind="stable")
        inverse = torch.from_numpy(perm).to(self.device)

        def cat(parts):
            return torch.cat(parts)[inverse]

        return _Data({m: cat(v) for m, v in u.items()},
                     {m: [cat(x) for x in v] for m, v in mixtures.items()},
                     {m: cat(v) for m, v in fixed.items()},
                     np.array(query)[perm])


def tuple_data(bond: dict, tuples_list, base_emb: Mapping, expert_embs: list[Mapping],
               projectors: list, device=None) -> TupleBatches:
    """The bond's tuple data, read batch by batch (:class:`TupleBatches`)."""
    return TupleBatches(bond, tuples_list, base_emb, expert_embs, projectors, device)


# ------------------------------------------------------------------------------ build step

def _cache_path(root, key: str):
    from pathlib import Path

    return Path(root) / "jobs" / f"router-{key}.safetensors"


def router_hyper(hyper: Mapping) -> dict:
    """Router settings given as ``router_<name>`` hyper-parameters (``router_reg=0.1``)."""
    out = {}
    for k, v in hyper.items():
        if k.startswith("router_"):
            name = k[len("router_"):]
            if name not in ROUTER_DEFAULTS:
                raise UsageError(f"unknown router setting {k!r}; known: "
                                    + ", ".join(f"router_{n}" for n in ROUTER_DEFAULTS))
            try:
                out[name] = type(ROUTER_DEFAULTS[name])(v)
            except (TypeError, ValueError):
                raise UsageError(f"router setting {k}={v!r} is not a "
                                    f"{type(ROUTER_DEFAULTS[name]).__name__}") from None
            if name in CHOICES and out[name] not in CHOICES[name]:
                raise UsageError(f"router setting {k}={v!r}: one of "
                                    + ", ".join(CHOICES[name]))
    return out


def router_cache_key(bond: dict, job_keys: list[str], hyper: Mapping) -> str:
    """A router's identity: its bond, the keys of the bond's projector jobs (which carry the
    embeddings, tuples and projector weights it trains on) and its hyper-parameters."""
    spec = {"bond": {k: bond[k] for k in ("id", "kind", "weights", "factors", "shared")},
            "jobs": list(job_keys), "hyper": {k: hyper[k] for k in sorted(hyper)},
            "format": FORMAT}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()) \
        .hexdigest()[:32]


def build_step(plan, job, projectors: dict, training: dict, embeddings_of: Callable,
               job_hyper: Mapping, job_keys: Mapping[str, str], cache_root, make_tuples,
               progress: bool = False, log: Callable[[str], None] | None = None,
               device=None):
    """After ``job``: when it is the last job of a ``route=learned`` bond, train (or load
    from the cache) that bond's router and add it to ``projectors`` and ``training``.

    ``embeddings_of(text)`` gives pool embeddings of a (sub-)space (memory-mapped views
    or arrays); ``make_tuples(job, source, target)`` the job's pseudo tuples (the very ones
    its projectors trained on). Training runs on ``device``, batch by batch."""
    from freebind.fusion import bundle as bundle_io
    from freebind.algebra.compile import bond_nodes

    bond = next(b for b in bond_nodes(plan.graph) if b["id"] == job.bond)
    if bond.get("route") != "learned" or bond["jobs"][-1] != job.id:
        return None
    t0 = time.perf_counter()
    hyper = {**ROUTER_DEFAULTS, **router_hyper(job_hyper)}
    temp = float(hyper["temp"]) or float(job_hyper["temp"])
    seed = int(hyper["seed"]) if int(hyper["seed"]) >= 0 else int(job_hyper["seed"])
    key = router_cache_key(bond, [job_keys[j] for j in bond["jobs"]],
                           {**hyper, "temp": temp, "seed": seed})
    path = _cache_path(cache_root, key)
    router = summary = None
    if path.is_file():
        try:
            arrays, meta = bundle_io.load(path)
            router = BondRouter.from_tensors({k: torch.from_numpy(v.copy())
                                              for k, v in arrays.items()}, bond)
            summary = meta["summary"]
        except Exception:           # a corrupt cache entry is trained again
            router = None
    cached = router is not None
    if router is None:
        jobs = [plan.job(j) for j in bond["jobs"]]
        base = embeddings_of(jobs[0].target)
        experts = [embeddings_of(j.source) for j in jobs]
        tuples = [make_tuples(j, experts[i], base) for i, j in enumerate(jobs)]
        data = tuple_data(bond, tuples, base, experts, [projectors[j.id] for j in jobs],
                          device)
        router, summary = train_router(bond, data, hyper, temp, seed, progress=progress,
                                       desc=f"{bond['id']} router", device=device)
        try:
            bundle_io.save(path, router.tensors(),
                           {"kind": "freebind-router", "summary": summary})
        except OSError:
            pass
    projectors[router_key(bond["id"])] = router
    training[router_key(bond["id"])] = summary
    if log is not None:
        w = summary["weights"]
        spread = ", ".join(f"{m} σ {s['sigma_mean']:.2f}±{s['sigma_std']:.2f}"
                           for m, s in w.items())
        log(f"{bond['id']} router: val loss {summary['initial_val_loss']:.4f} → "
            f"{summary['final_val_loss']:.4f}, {spread}, "
            f"{time.perf_counter() - t0:.1f} s" + (" (trained before: reused)" if cached
                                                     else ""))
    return summary
