"""Uni3D's point-cloud encoder, written here in plain torch (no compiled extensions), with
the module names of the released checkpoints, so they load key for key.

The architecture (Uni3D, Zhou et al. 2023): farthest-point sampling picks ``num_group``
centres, each gathers its ``group_size`` nearest neighbours (xyz relative to the centre,
plus colour); a per-group point network (1x1 convolutions, max pooling, the global feature
concatenated back, again) gives one token per group; a linear map to the transformer width,
a class token, a learned position embedding of the centres (MLP 3 -> 128 -> width); the
transformer blocks of an EVA / EVA-02 ViT (timm's ``Eva`` layout: pre-norm blocks, fused or
separate q/k/v with q and v biases, a GELU MLP or a SwiGLU MLP, optional layer scale; no
rotary embedding: Uni3D calls the blocks without one); the class token through the ViT's
final norm(s); a linear projection to the CLIP space.

Farthest-point sampling follows the CUDA kernel the released models ran with
(``pointnet2_ops``): it starts at point 0, and points within ``sqrt(1e-3)`` of the origin are
never chosen as later centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: timm's LayerNorm epsilon for EVA models
LN_EPS = 1e-6


@dataclass(frozen=True)
class Uni3DConfig:
    width: int = 1408             # pc_feat_dim: the ViT's width
    depth: int = 40
    heads: int = 16
    mlp_hidden: int = 6144        # hidden width of the MLP (of each half for SwiGLU)
    mlp: str = "gelu"             # gelu | glu (packed SwiGLU, fc1 -> 2 x hidden) | swiglu
    mlp_norm: bool = False        # scale_mlp: a LayerNorm inside the MLP (swiglu only)
    qkv_fused: bool = True
    qkv_bias: bool = True
    layer_scale: bool = False
    final_norm: str = "fc_norm"   # which of the ViT's norm / fc_norm is a LayerNorm
    encoder_dim: int = 512        # pc_encoder_dim: the per-group point network's output
    embed_dim: int = 1024         # the CLIP space (EVA02-E-14-plus: 1024)
    num_group: int = 512
    group_size: int = 64
    npoints: int = 10_000


#: the released models (scripts/inference.sh of the Uni3D repository and timm's model
#: definitions of the ViTs they start from)
PRESETS = {
    "giant": dict(width=1408, depth=40, heads=16, mlp_hidden=6144, mlp="gelu"),
    "large": dict(width=1024, depth=24, heads=16, mlp_hidden=2730, mlp="swiglu",
                  mlp_norm=True, qkv_fused=False),
    "base": dict(width=768, depth=12, heads=12, mlp_hidden=2048, mlp="swiglu", mlp_norm=True,
                 qkv_fused=False),
    "small": dict(width=384, depth=12, heads=6, mlp_hidden=1024, mlp="glu"),
    "tiny": dict(width=192, depth=12, heads=3, mlp_hidden=512, mlp="glu"),
}
HEADS_BY_WIDTH = {p["width"]: p["heads"] for p in PRESETS.values()}


# --- grouping: pure torch, any device --------------------------------------------------

def farthest_point_sample(xyz: torch.Tensor, n: int, skip_origin: bool = True) -> torch.Tensor:
    """Indices ``[B, n]`` of farthest-point sampling on ``xyz [B, N, 3]`` from point 0; each
    next index maximises the distance to those chosen (first index on ties). With
    ``skip_origin`` points with ``|p|^2 <= 1e-3`` are never chosen after the first (the
    CUDA kernel's rule)."""
    b, total, _ = xyz.shape
    xyz = xyz.float()
    dist = torch.full((b, total), 1e10, device=xyz.device)
    valid = ((xyz ** 2).sum(-1) > 1e-3) if skip_origin else torch.ones_like(dist, dtype=bool)
    rows = torch.arange(b, device=xyz.device)
    far = torch.zeros(b, dtype=torch.long, device=xyz.device)
    out = torch.empty((b, n), dtype=torch.long, device=xyz.device)
    for i in range(n):
        out[:, i] = far
        centre = xyz[rows, far].unsqueeze(1)
        dist = torch.minimum(dist, ((xyz - centre) ** 2).sum(-1))
        far = torch.where(valid, dist, torch.full_like(dist, -1.0)).argmax(-1)
    return out


def square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``[B, N, M]`` squared distances, as |s|^2 + |d|^2 - 2 s.d (the form Uni3D uses)."""
    dist = -2 * torch.matmul(src, dst.transpose(1, 2))
    dist = dist + (src ** 2).sum(-1).unsqueeze(-1)
    return dist + (dst ** 2).sum(-1).unsqueeze(1)


def group(xyz: torch.Tensor, colour: torch.Tensor, num_group: int, group_size: int):
    """``(centres [B, G, 3], features [B, G, M, 6])``: each centre's ``group_size`` nearest
    points, xyz relative to the centre, then their colours."""
    b = xyz.shape[0]
    centre_idx = farthest_point_sample(xyz, num_group)
    rows = torch.arange(b, device=xyz.device).unsqueeze(1)
    centres = xyz[rows, centre_idx]
    idx = square_distance(centres, xyz).topk(group_size, dim=-1, largest=False).indices
    rows = rows.unsqueeze(-1)
    near = xyz[rows, idx] - centres.unsqueeze(2)
    return centres, torch.cat([near, colour[rows, idx]], dim=-1)


# --- modules (names are the checkpoints') ---------------------------------------------

class PointGroupEncoder(nn.Module):
    """The per-group point network: ``[B, G, M, 6] -> [B, G, encoder_dim]``."""

    def __init__(self, encoder_dim: int):
        super().__init__()
        self.encoder_dim = encoder_dim
        self.first_conv = nn.Sequential(nn.Conv1d(6, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512),
                                         nn.ReLU(), nn.Conv1d(512, encoder_dim, 1))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        b, g, m, c = groups.shape
        f = self.first_conv(groups.reshape(b * g, m, c).transpose(1, 2))
        f = torch.cat([f.amax(dim=2, keepdim=True).expand(-1, -1, m), f], dim=1)
        f = self.second_conv(f).amax(dim=2)
        return f.reshape(b, g, self.encoder_dim)


class Attention(nn.Module):
    def __init__(self, cfg: Uni3DConfig):
        super().__init__()
        w, self.heads = cfg.width, cfg.heads
        if cfg.qkv_fused:
            self.qkv = nn.Linear(w, 3 * w, bias=False)
            if cfg.qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(w))
                self.v_bias = nn.Parameter(torch.zeros(w))
        else:
            self.q_proj = nn.Linear(w, w, bias=cfg.qkv_bias)
            self.k_proj = nn.Linear(w, w, bias=False)
            self.v_proj = nn.Linear(w, w, bias=cfg.qkv_bias)
        self.fused, self.biased = cfg.qkv_fused, cfg.qkv_bias
        self.proj = nn.Linear(w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        if self.fused:
            bias = None
            if self.biased:
                bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            q, k, v = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, -1
                                                                  ).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = (p(x).reshape(b, n, self.heads, -1).transpose(1, 2)
                       for p in (self.q_proj, self.k_proj, self.v_proj))
        scale = q.shape[-1] ** -0.5
        attn = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, w))


class Mlp(nn.Module):
    def __init__(self, cfg: Uni3DConfig):
        super().__init__()
        w, h, self.kind = cfg.width, cfg.mlp_hidden, cfg.mlp
        if self.kind == "swiglu":
            self.fc1_g = nn.Linear(w, h)
            self.fc1_x = nn.Linear(w, h)
            self.norm = nn.LayerNorm(h, eps=LN_EPS) if cfg.mlp_norm else nn.Identity()
        else:
            self.fc1 = nn.Linear(w, 2 * h if self.kind == "glu" else h)
        self.fc2 = nn.Linear(h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.fc2(self.norm(F.silu(self.fc1_g(x)) * self.fc1_x(x)))
        if self.kind == "glu":
            gate, value = self.fc1(x).chunk(2, dim=-1)
            return self.fc2(F.silu(gate) * value)
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: Uni3DConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.mlp = Mlp(cfg)
        if cfg.layer_scale:
            self.gamma_1 = nn.Parameter(torch.ones(cfg.width))
            self.gamma_2 = nn.Parameter(torch.ones(cfg.width))
        self.scaled = cfg.layer_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.norm1(x))
        x = x + (self.gamma_1 * a if self.scaled else a)
        m = self.mlp(self.norm2(x))
        return x + (self.gamma_2 * m if self.scaled else m)


class Visual(nn.Module):
    """The ViT parts Uni3D uses: its blocks and its final norm(s)."""

    def __init__(self, cfg: Uni3DConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        ln = nn.LayerNorm(cfg.width, eps=LN_EPS)
        self.norm = ln if cfg.final_norm == "norm" else nn.Identity()
        self.fc_norm = ln if cfg.final_norm == "fc_norm" else nn.Identity()


class PointEncoder(nn.Module):
    """Uni3D's point encoder: ``(xyz [B, N, 3], colour [B, N, 3]) -> [B, embed_dim]``."""

    def __init__(self, cfg: Uni3DConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = PointGroupEncoder(cfg.encoder_dim)
        self.encoder2trans = nn.Linear(cfg.encoder_dim, cfg.width)
        self.trans2embed = nn.Linear(cfg.width, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, cfg.width))
        self.visual = Visual(cfg)

    def forward(self, xyz: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        centres, features = group(xyz, colour, self.cfg.num_group, self.cfg.group_size)
        tokens = self.encoder2trans(self.encoder(features))
        b = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        x = x + torch.cat([self.cls_pos.expand(b, -1, -1), self.pos_embed(centres)], dim=1)
        for blk in self.visual.blocks:
            x = blk(x)
        x = self.visual.fc_norm(self.visual.norm(x[:, 0]))
        return self.trans2embed(x)


class Uni3D(nn.Module):
    """The checkpoint's top level: ``logit_scale`` and ``point_encoder``."""

    def __init__(self, cfg: Uni3DConfig):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.point_encoder = PointEncoder(cfg)

    def encode_pc(self, pc: torch.Tensor) -> torch.Tensor:
        """``pc [B, N, 6]`` (xyz, rgb) -> ``[B, embed_dim]`` (not normalised)."""
        return self.point_encoder(pc[..., :3].contiguous(), pc[..., 3:].contiguous())


#: checkpoint keys of the ViT that Uni3D never runs (its patch embedding, its own class
#: token and position embedding, its classifier head, rotary tables): accepted, not loaded
UNUSED_PREFIXES = ("point_encoder.visual.patch_embed.", "point_encoder.visual.head.",
                   "point_encoder.visual.rope.")
UNUSED_KEYS = ("point_encoder.visual.cls_token", "point_encoder.visual.pos_embed")


def config_from_state(state: dict, heads: int | None = None, **sizes) -> Uni3DConfig:
    """The architecture a checkpoint's keys and shapes describe. The number of heads is not
    in the weights: ``heads``, else the released model of that width's."""
    from freebind.util.errors import SpaceError

    p = "point_encoder."
    try:
        width = int(state[p + "cls_token"].shape[-1])
        depth = 1 + max(int(k.split(".")[3]) for k in state if k.startswith(p + "visual.blocks."))
        b0 = p + "visual.blocks.0."
        if b0 + "mlp.fc1_g.weight" in state:
            mlp, hidden = "swiglu", int(state[b0 + "mlp.fc1_g.weight"].shape[0])
        else:
            fc1, fc2 = state[b0 + "mlp.fc1.weight"].shape[0], state[b0 + "mlp.fc2.weight"].shape[1]
            mlp, hidden = ("glu", int(fc2)) if fc1 == 2 * fc2 else ("gelu", int(fc1))
        cfg = dict(
            width=width, depth=depth, mlp=mlp, mlp_hidden=hidden,
            mlp_norm=b0 + "mlp.norm.weight" in state,
            qkv_fused=b0 + "attn.qkv.weight" in state,
            qkv_bias=(b0 + "attn.q_bias") in state or (b0 + "attn.q_proj.bias") in state,
            layer_scale=b0 + "gamma_1" in state,
            final_norm="fc_norm" if p + "visual.fc_norm.weight" in state else "norm",
            encoder_dim=int(state[p + "encoder.second_conv.3.weight"].shape[0]),
            embed_dim=int(state[p + "trans2embed.weight"].shape[0]))
    except (KeyError, ValueError) as exc:
        raise SpaceError(f"not a Uni3D checkpoint (no {exc} key)") from None
    cfg["heads"] = int(heads or HEADS_BY_WIDTH.get(width, 0))
    if not cfg["heads"] or width % cfg["heads"]:
        raise SpaceError(f"Uni3D checkpoint of width {width}: pass heads=N (no released "
                         f"model has this width)")
    return Uni3DConfig(**cfg, **sizes)
