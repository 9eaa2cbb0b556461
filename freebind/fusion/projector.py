"""Projector groups: a mixture of K projectors evaluated as one batched computation.

Each projector k is Linear(in, H) - BatchNorm(H) - ReLU - Linear(H, out) - BatchNorm(out),
followed by L2 normalisation. The K projectors of a group are stored stacked, so a group is
one set of tensors (the bundle's layout, per job ``<job>``)::

    <job>.w1 [K, in, H]   <job>.b1 [K, H]
    <job>.bn1.weight/.bias/.running_mean/.running_var [K, H]
    <job>.w2 [K, H, out]  <job>.b2 [K, out]
    <job>.bn2.weight/.bias/.running_mean/.running_var [K, out]

The mixture is m(x) = mean_k n(P_k(x)); the group's projection is P(x) = n(m(x)).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-5
PARAM_NAMES = ("w1", "b1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
               "w2", "b2", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var")


def param_shapes(k: int, d_in: int, hidden: int, d_out: int) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor of a group, by name (without the job prefix)."""
    shapes = {"w1": (k, d_in, hidden), "b1": (k, hidden), "w2": (k, hidden, d_out),
              "b2": (k, d_out)}
    for bn, width in (("bn1", hidden), ("bn2", d_out)):
        for stat in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{stat}"] = (k, width)
    return shapes


def _batch_norm(x, mean, var, weight, bias, training, momentum, eps=BN_EPS):
    """Batched BatchNorm over x [K, N, C] with per-projector statistics [K, C].

    In training mode the batch statistics are used and the running ones updated in place
    (PyTorch's convention: the running variance is unbiased)."""
    if training:
        batch_mean = x.mean(dim=1)
        batch_var = x.var(dim=1, unbiased=False)
        n = x.shape[1]
        with torch.no_grad():
            mean.mul_(1 - momentum).add_(momentum * batch_mean)
            var.mul_(1 - momentum).add_(momentum * batch_var * n / max(n - 1, 1))
        m, v = batch_mean, batch_var
    else:
        m, v = mean, var
    return (x - m[:, None, :]) * torch.rsqrt(v[:, None, :] + eps) * weight[:, None, :] \
        + bias[:, None, :]


class _TrainBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm over x [K, N, C] (optionally followed by ReLU) in few passes.

    ``x`` is the linear layer's output WITHOUT its bias: a constant shift before a batch
    normalisation cancels exactly (the output and every other gradient are unchanged, the
    bias's own gradient is exactly zero), so it only enters the batch mean reported for the
    running statistics. Forward: one pass for mean and variance, one for the affine map
    (and one for ReLU, in place); backward: the closed-form gradient in four passes."""

    @staticmethod
    def forward(ctx, x, weight, bias, relu: bool):
        var, mean = torch.var_mean(x, dim=1, correction=0)
        rstd = torch.rsqrt(var + BN_EPS)
        scale = weight * rstd
        y = torch.addcmul((bias - mean * scale)[:, None, :], x, scale[:, None, :])
        if relu:
            y.clamp_(min=0)
        ctx.relu = relu
        ctx.save_for_backward(x, y if relu else None, mean, rstd, scale)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, g, _gm=None, _gv=None):
        x, y, mean, rstd, scale = ctx.saved_tensors
        if ctx.relu:
            g = torch.where(y > 0, g, 0.0)
        n = x.shape[1]
        sum_g = g.sum(dim=1)                                       # dbias
        sum_gxhat = rstd * ((g * x).sum(dim=1) - mean * sum_g)     # dweight
        c1 = -scale * rstd * sum_gxhat / n
        c0 = -scale * sum_g / n - c1 * mean
        gx = torch.addcmul(c0[:, None, :], g, scale[:, None, :])
        gx.addcmul_(x, c1[:, None, :])
        return gx, sum_gxhat, sum_g, None


def _train_batch_norm(x, b_in, bn, momentum, relu):
    """``bn(x + b_in)`` in training mode (then ReLU), updating ``bn``'s running statistics."""
    y, mean, var = _TrainBatchNorm.apply(x, bn.weight, bn.bias, relu)
    n = x.shape[1]
    with torch.no_grad():
        bn.running_mean.mul_(1 - momentum).add_(momentum * (mean + b_in))
        bn.running_var.mul_(1 - momentum).add_(momentum * var * n / max(n - 1, 1))
    return y


class ProjectorGroup(nn.Module):
    """K projectors ``in -> out`` trained and evaluated together.

    ``forward(x)`` maps ``x [N, in]`` (or ``[K, N, in]``, one input per projector) to
    ``[K, N, out]``, each row L2-normalised. ``mixture(x)`` is the unnormalised mean over K;
    ``project(x)`` is its normalisation, P(x)."""

    def __init__(self, k: int, d_in: int, d_out: int, hidden: int = 2048,
                 momentum: float = 0.1, generator: torch.Generator | None = None,
                 init: bool = True):
        super().__init__()
        self.k, self.d_in, self.d_out, self.hidden = k, d_in, d_out, hidden
        self.momentum = momentum
        self.w1 = nn.Parameter(torch.empty(k, d_in, hidden))
        self.b1 = nn.Parameter(torch.empty(k, hidden))
        self.w2 = nn.Parameter(torch.empty(k, hidden, d_out))
        self.b2 = nn.Parameter(torch.empty(k, d_out))
        self.bn1 = _BatchNormParams(k, hidden)
        self.bn2 = _BatchNormParams(k, d_out)
        if init:   # ``init=False``: storage only, for weights about to be overwritten
            self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """nn.Linear's default initialisation, per projector, from ``generator``."""
        with torch.no_grad():
            for w, b, fan_in in ((self.w1, self.b1, self.d_in), (self.w2, self.b2, self.hidden)):
                bound = 1.0 / math.sqrt(fan_in)
                w.uniform_(-bound, bound, generator=generator)
                b.uniform_(-bound, bound, generator=generator)
            self.bn1.reset()
            self.bn2.reset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            h = torch.einsum("ni,kih->knh", x, self.w1)
        else:
            h = torch.bmm(x, self.w1)
        if self.training:  # the fused training step (the same function, fewer passes)
            h = _train_batch_norm(h, self.b1.detach(), self.bn1, self.momentum, relu=True)
            y = torch.bmm(h, self.w2)
            y = _train_batch_norm(y, self.b2.detach(), self.bn2, self.momentum, relu=False)
            return F.normalize(y, dim=-1)
        h = h + self.b1[:, None, :]
        h = self.bn1(h, self.training, self.momentum)
        h = F.relu(h)
        y = torch.bmm(h, self.w2) + self.b2[:, None, :]
        y = self.bn2(y, self.training, self.momentum)
        return F.normalize(y, dim=-1)

    def mixture(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).mean(dim=0)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mixture(x), dim=-1)

    # --- the bundle's flat layout ------------------------------------------------------
    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Every tensor of the group under ``prefix.<name>`` (contiguous, detached)."""
        out = {}
        for name in PARAM_NAMES:
            out[f"{prefix}.{name}"] = self._get(name).detach().contiguous().clone()
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> "ProjectorGroup":
        w1 = tensors[f"{prefix}.w1"]
        k, d_in, hidden = w1.shape
        d_out = tensors[f"{prefix}.w2"].shape[-1]
        # no random initialisation: every tensor is overwritten below, and drawing it would
        # cost time and move the caller's global RNG
        group = cls(k, d_in, d_out, hidden, init=False)
        with torch.no_grad():
            for name in PARAM_NAMES:
                group._get(name).copy_(torch.as_tensor(tensors[f"{prefix}.{name}"]))
        return group.eval()

    def _get(self, name: str) -> torch.Tensor:
        obj = self
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj


class _BatchNormParams(nn.Module):
    def __init__(self, k: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(k, width))
        self.bias = nn.Parameter(torch.zeros(k, width))
        self.register_buffer("running_mean", torch.zeros(k, width))
        self.register_buffer("running_var", torch.ones(k, width))

    def reset(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()
            self.running_mean.zero_()
            self.running_var.fill_(1.0)

    def forward(self, x, training: bool, momentum: float):
        return _batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                           training, momentum)
