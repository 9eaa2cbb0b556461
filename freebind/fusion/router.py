"""Learned routers: per-item mixing weights for combination bonds (``route=learned``).

A combination bond ``X + c(E1, …, Ek)`` fuses modality m of an item as

    n((1 − σ)·u + σ·n(Σ_i w_i·m_i(e_i)))

with u the item's embedding in X, m_i the mixture of expert i's projector group and (σ, w)
the bond's fixed factor and expert weights. A router replaces (σ, w) by the item's own:
one small MLP per mixed modality reads ``[u, P_1(e_1), …, P_k(e_k)]`` (P_i = n(m_i)) and
outputs

    σ = sigmoid(logit(σ₀) + z₀),   w = softmax(log w₀ + z₁…ₖ)

where σ₀, w₀ are the bond's fixed factor and weights, so a router whose last layer is zero
(its initialisation) reproduces the fixed fusion exactly. The formula is unchanged; only its
weights become per item.

Training is a build stage: :mod:`freebind.build.router_training`. Tensors live in the bundle
next to the projectors, as ``router.<bond>.<modality>.{w1,b1,w2,b2}``; the structure (which
experts each modality weighs, σ₀, w₀) follows from the plan.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from freebind.util.errors import FreebindError

#: Router training defaults (the bond's ``seed`` and ``temp`` are used as well).
ROUTER_DEFAULTS = {"hidden": 64, "epochs": 30, "patience": 4, "lr": 3e-3, "batch": 512,
                   "reg": 0.01, "val_frac": 0.1, "weight_decay": 0.0, "pairs": "all",
                   "fills": "routed", "temp": 0.05, "seed": -1,
                   "experts": "fixed", "val_batch": 4096}
CHOICES = {"pairs": ("all", "query"), "fills": ("routed", "fixed"),
           "experts": ("learned", "fixed")}
#: σ₀ is clipped into [EPS, 1 − EPS] for its logit.
EPS = 1e-3
PARAMS = ("w1", "b1", "w2", "b2")
FORMAT = 1


def router_key(bond_id: str) -> str:
    """The key of a bond's router in a projector mapping (and its tensors' prefix)."""
    return f"router.{bond_id}"


def router_spec(bond: dict) -> dict[str, dict]:
    """``{modality: {"experts": [i, …], "sigma0": σ₀, "w0": [w, …]}}`` for every modality the
    bond mixes (present in its base and in an expert of non-zero weight)."""
    spec = {}
    for m in bond["shared"]:
        experts = [i for i, (e, w) in enumerate(zip(bond["experts"], bond["weights"]))
                   if m in e["modalities"] and w > 0]
        if not experts:
            continue
        w0 = [bond["weights"][i] for i in experts]
        total = sum(w0)
        spec[m] = {"experts": experts, "sigma0": float(bond["factors"][m]),
                   "w0": [w / total for w in w0]}
    return spec


class BondRouter(nn.Module):
    """The routers of one bond: ``weights(modality, u, projections) -> (σ [N], w [N, k])``."""

    def __init__(self, bond: dict, hidden: int = ROUTER_DEFAULTS["hidden"],
                 generator: torch.Generator | None = None, init: bool = True):
        super().__init__()
        self.bond_id = bond["id"]
        self.spec = router_spec(bond)
        self.dim = int(bond["dim_in"])
        self.hidden = int(hidden)
        self.nets = nn.ModuleDict()
        for m, s in self.spec.items():
            k = len(s["experts"])
            self.nets[m] = _MLP(self.dim * (1 + k), self.hidden, 1 + (k if k > 1 else 0))
        if init:   # ``init=False``: storage only, for weights about to be overwritten
            self.reset_parameters(generator)

    def reset_parameters(self, generator=None) -> None:
        """First layer: nn.Linear's initialisation; last layer zero (the fixed factors)."""
        with torch.no_grad():
            for m in self.spec:
                net = self.nets[m]
                bound = 1.0 / math.sqrt(net.w1.shape[0])
                net.w1.uniform_(-bound, bound, generator=generator)
                net.b1.uniform_(-bound, bound, generator=generator)
                net.w2.zero_()
                net.b2.zero_()

    @property
    def modalities(self) -> list[str]:
        return list(self.spec)

    def logits(self, modality: str, u, projections):
        """Deviations z [N, 1 + k'] from the fixed factors' logits."""
        x = torch.cat([u, *projections], dim=-1)
        return self.nets[modality](x)

    def weights(self, modality: str, u, projections):
        """Per-item σ [N] and expert weights w [N, k] (k = the experts of this modality)."""
        return self.from_logits(modality, self.logits(modality, u, projections))

    def from_logits(self, modality: str, z):
        s = self.spec[modality]
        sigma0 = min(max(s["sigma0"], EPS), 1.0 - EPS)
        sigma = torch.sigmoid(math.log(sigma0 / (1.0 - sigma0)) + z[:, 0])
        k = len(s["experts"])
        if k == 1:
            w = torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)
        else:
            prior = torch.log(torch.tensor(s["w0"], dtype=z.dtype, device=z.device)
                              .clamp_min(1e-12))
            w = torch.softmax(prior + z[:, 1:], dim=-1)
        return sigma, w

    # --- the bundle's flat layout ------------------------------------------------------
    def tensors(self, prefix: str | None = None) -> dict[str, torch.Tensor]:
        prefix = prefix or router_key(self.bond_id)
        out = {}
        for m in self.spec:
            for name in PARAMS:
                out[f"{prefix}.{m}.{name}"] = getattr(self.nets[m], name).detach() \
                    .contiguous().clone()
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], bond: dict) -> "BondRouter":
        prefix = router_key(bond["id"])
        spec = router_spec(bond)
        if not spec:
            raise FreebindError(f"bond {bond['id']} mixes no modality a router could weigh")
        first = next(iter(spec))
        hidden = int(tensors[f"{prefix}.{first}.w1"].shape[1])
        router = cls(bond, hidden, init=False)   # no draw from the caller's RNG
        with torch.no_grad():
            for m in spec:
                for name in PARAMS:
                    src = torch.as_tensor(tensors[f"{prefix}.{m}.{name}"])
                    dst = getattr(router.nets[m], name)
                    if tuple(src.shape) != tuple(dst.shape):
                        raise FreebindError(f"router {prefix}.{m}.{name} has shape "
                                            f"{tuple(src.shape)}, the plan needs "
                                            f"{tuple(dst.shape)}")
                    dst.copy_(src)
        return router.eval()


def required_tensors(bond: dict) -> list[str]:
    prefix = router_key(bond["id"])
    return [f"{prefix}.{m}.{name}" for m in router_spec(bond) for name in PARAMS]


class _MLP(nn.Module):
    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(d_in, hidden))
        self.b1 = nn.Parameter(torch.empty(hidden))
        self.w2 = nn.Parameter(torch.zeros(hidden, d_out))
        self.b2 = nn.Parameter(torch.zeros(d_out))

    def forward(self, x):
        return F.relu(x @ self.w1 + self.b1) @ self.w2 + self.b2


def mix(u, mixtures, sigma, w):
    """The fusion with per-item weights: n((1 − σ)·u + σ·n(Σ_i w_i·m_i)).

    ``u [N, d]``, ``mixtures`` k tensors [N, d] (unnormalised projector mixtures), ``sigma
    [N]``, ``w [N, k]``."""
    total = None
    for i, m in enumerate(mixtures):
        term = w[:, i:i + 1] * m
        total = term if total is None else total + term
    proj = F.normalize(total, dim=-1)
    s = sigma[:, None]
    return F.normalize((1.0 - s) * u + s * proj, dim=-1)


# ------------------------------------------------------------------------------ training
