"""ImageBind-huge's architecture in plain PyTorch, loading the released ``imagebind_huge.pth``
state dict unchanged (same keys, same shapes).

Six towers share one layout: a modality stem turns the input into tokens, a class token is
prepended and a learned position embedding added, a trunk of pre-LN transformer blocks
(``x + attn(LN(x))``, ``x + mlp(LN(x))``; LayerNorm eps 1e-6, GELU MLP of ratio 4) runs over
them, a head (LayerNorm then a bias-free linear map to the shared width) reads one token,
and a postprocessor L2-normalises it and multiplies by the tower's logit scale.

* vision (images and videos): RGB clips of 2 frames, patch embedding by a bias-free Conv3d
  with kernel = stride = (2, 14, 14); an image is repeated to 2 frames first, so its patch
  embedding is the 2-D convolution with the kernel summed over time. LayerNorm before the
  first block. 1280 wide, 32 blocks, 16 heads (huge); 257 tokens.
* text: CLIP BPE ids (77 tokens), token + position embeddings, causal attention, the
  end-of-text token (the highest id of a row) read by the head; logit scale learned
  (initialised at 1/0.07, capped at 100). 1024 wide, 24 blocks, 16 heads.
* audio: a ``[1, 128, 204]`` log-mel clip, Conv2d kernel 16 stride 10 (12×19 patches),
  LayerNorm (eps 1e-5) on the patch tokens. 768 wide, 12 blocks, 12 heads; scale 20.
* depth, thermal: ``[1, 224, 224]``, Conv2d kernel = stride = 16 (14×14 patches), LayerNorm
  (eps 1e-5). Depth 384 wide, 12 blocks, 8 heads, scale 5; thermal 768, 12, 12, scale 10.
* imu: ``[6, 2000]`` cut into 250 windows of 8 samples (48 values each), a bias-free linear
  map and LayerNorm (eps 1e-5). 512 wide, 6 blocks, 8 heads; scale 5.

The audio, depth, thermal and IMU trunks' attention has one learned extra key/value pair
(``bias_k``/``bias_v``) appended to every sequence. Inputs with 5 or more dimensions are
several clips per item (``[N, S, ...]``); their S outputs are averaged. Drop path and
dropout exist only in training and are absent here (inference only).

Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` in batch-first
layout. Two shortcuts leave the outputs unchanged: the last block computes only the token
its head reads (every other token's output is discarded by the head), and text stops at the
batch's last end-of-text position (causal attention: later positions never reach earlier
ones).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: Constructor arguments of the released ImageBind-huge.
HUGE = dict(vision_embed_dim=1280, vision_num_blocks=32, vision_num_heads=16,
            text_embed_dim=1024, text_num_blocks=24, text_num_heads=16, out_embed_dim=1024,
            audio_drop_path=0.1, imu_drop_path=0.7)

TOWERS = ("vision", "text", "audio", "depth", "thermal", "imu")


def arch(dim: int, blocks: int, heads: int, out_dim: int, **towers) -> dict:
    """Constructor arguments with every tower ``dim`` wide, ``blocks`` deep and ``heads``
    heads (smaller test and benchmark configurations); ``towers`` overrides single keys
    (``depth_embed_dim=32``, …)."""
    out = {"out_embed_dim": out_dim}
    for t in TOWERS:
        out.update({f"{t}_embed_dim": dim, f"{t}_num_blocks": blocks, f"{t}_num_heads": heads})
    return {**out, **towers}
TEXT_CONTEXT, TEXT_VOCAB = 77, 49408
#: Fixed (not learned) logit scales of the postprocessors; text's is learned.
LOGIT_SCALES = {"audio": 20.0, "depth": 5.0, "thermal": 10.0, "imu": 5.0}
MAX_LOGIT_SCALE = 100.0


def _onednn_linear_ok(x) -> bool:
    return (x.device.type == "cpu" and not torch.is_grad_enabled()
            and x.dtype in (torch.float32, torch.bfloat16) and _ONEDNN[0])


def _onednn_available() -> bool:
    try:
        op = torch.ops.mkldnn._linear_pointwise
        x = torch.ones(2, 3)
        with torch.no_grad():
            y = op(x, torch.ones(4, 3), torch.zeros(4), "gelu", [], "none")
        return torch.backends.mkldnn.is_available() and bool((y - F.gelu(x @ torch.ones(3, 4)))
                                                             .abs().max() < 1e-6)
    except (AttributeError, RuntimeError):
        return False


class _Lazy(list):
    def __getitem__(self, i):
        if not len(self):
            self.append(_onednn_available())
        return list.__getitem__(self, i)


#: whether oneDNN's linear with a fused bias and GELU runs here (CPU inference)
_ONEDNN = _Lazy()


def linear(x, weight, bias=None, gelu: bool = False):
    """``F.linear`` (then exact GELU); on the CPU without autograd, oneDNN's inner product
    with the bias and the GELU applied in the same pass (no separate passes over the
    output, float32 sums as before: the same values up to summation order)."""
    if _onednn_linear_ok(x) and weight.dtype == x.dtype:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu" if gelu else "none",
                                                  [], "none" if gelu else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed input projection (``in_proj_weight`` holds
    the query, key and value maps), optionally one learned key/value pair appended to every
    sequence (``bias_k``/``bias_v``), and an output projection."""

    def __init__(self, dim: int, heads: int, bias_kv: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.dim, self.heads = dim, heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        if bias_kv:
            self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
            self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)
        if bias_kv:
            nn.init.xavier_normal_(self.bias_k)
            nn.init.xavier_normal_(self.bias_v)

    def _split(self, x):  # [B, L, D] -> [B, H, L, D/H]
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.dim // self.heads).transpose(1, 2)

    def forward(self, x, causal: bool = False, query=None, key_mask=None, slot: bool = False):
        """``x`` ``[B, L, D]`` (already normalised). ``query`` ``[B, Q, D]``: only those
        positions' outputs (keys and values still come from all of ``x``); ``key_mask``
        ``[B, L]`` bool: keys each row may attend to. ``slot``: the last position of ``x``
        is a placeholder whose key and value become ``bias_k``/``bias_v`` (written in place
        of a concatenation per block; its own output is never read)."""
        d = self.dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is None:
            qkv = linear(x, w, b)
            if slot:
                qkv[:, -1, d:2 * d] = self.bias_k[0, 0]
                qkv[:, -1, 2 * d:] = self.bias_v[0, 0]
            q, k, v = qkv.chunk(3, dim=-1)
        else:
            q = linear(query, w[:d], b[:d])
            kv = linear(x, w[d:], b[d:])
            if slot:
                kv[:, -1, :d] = self.bias_k[0, 0]
                kv[:, -1, d:] = self.bias_v[0, 0]
            k, v = kv.chunk(2, dim=-1)
        if self.bias_k is not None and not slot:
            n = x.shape[0]
            k = torch.cat([k, self.bias_k.expand(n, 1, d)], dim=1)
            v = torch.cat([v, self.bias_v.expand(n, 1, d)], dim=1)
            if key_mask is not None:
                key_mask = F.pad(key_mask, (0, 1), value=True)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v),
                                             attn_mask=mask, is_causal=causal and mask is None)
        out = out.transpose(1, 2).reshape(q.shape)
        return linear(out, self.out_proj.weight, self.out_proj.bias)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        h = linear(x, self.fc1.weight, self.fc1.bias, gelu=True)
        return linear(h, self.fc2.weight, self.fc2.bias)


class Block(nn.Module):
    """Pre-LN transformer block."""

    def __init__(self, dim: int, heads: int, bias_kv: bool, mlp_ratio: int = 4):
        super().__init__()
        self.attn = SelfAttention(dim, heads, bias_kv)
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, causal: bool = False, inplace: bool = False, slot: bool = False):
        """``inplace``: add the residuals into ``x`` (inference: saves two allocations);
        ``slot``: ``x``'s last position is the attention's key/value placeholder."""
        if inplace:
            x.add_(self.attn(self.norm_1(x), causal, slot=slot))
            return x.add_(self.mlp(self.norm_2(x)))
        x = x + self.attn(self.norm_1(x), causal, slot=slot)
        return x + self.mlp(self.norm_2(x))

    def forward_one(self, x, index, causal: bool = False, slot: bool = False):
        """The block's output at one position per row (``index`` ``[B]``), ``[B, D]``."""
        rows = torch.arange(x.shape[0], device=x.device)
        h = self.norm_1(x)
        key_mask = None
        if causal:
            key_mask = torch.arange(x.shape[1], device=x.device)[None, :] <= index[:, None]
        y = x[rows, index][:, None] + self.attn(h, query=h[rows, index][:, None],
                                                key_mask=key_mask, slot=slot)
        y = y + self.mlp(self.norm_2(y))
        return y[:, 0]


class Trunk(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, bias_kv: bool, pre_ln: bool):
        super().__init__()
        if depth < 1:
            raise ValueError(f"a trunk needs at least one block, got {depth}")
        # index 0 of the release's pre-transformer step (a layout change followed it)
        self.pre_transformer_layer = (nn.Sequential(nn.LayerNorm(dim, eps=1e-6)) if pre_ln
                                      else None)
        self.blocks = nn.ModuleList(Block(dim, heads, bias_kv) for _ in range(depth))

    def forward(self, tokens, index, causal: bool = False):
        """The last block's output at position ``index[b]`` of each row ``b``: ``[B, D]``."""
        inplace = not torch.is_grad_enabled() and len(self.blocks) > 1
        # a trunk with a learned extra key/value pair: one placeholder position appended
        # once, whose key and value each block overwrites (no concatenation per block)
        slot = self.blocks[0].attn.bias_k is not None and not causal
        if self.pre_transformer_layer is not None:
            tokens = self.pre_transformer_layer(tokens)
        elif inplace and not slot:
            tokens = tokens.clone()  # the caller's tensor stays as it was
        if slot:
            tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])],
                               dim=1)
        for block in self.blocks[:-1]:
            tokens = block(tokens, causal, inplace, slot)
        return self.blocks[-1].forward_one(tokens, index, causal, slot)


class PosEmbedding(nn.Module):
    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * dim ** -0.5)


def _conv_out(n: int, kernel: int, stride: int) -> int:
    return (n - kernel) // stride + 1


def _patchify(x, kernel):
    """Non-overlapping patches of ``x`` ``[N, C, *S]`` (kernel = stride, trailing remainder
    dropped as a convolution would): ``[N, P, C·prod(kernel)]``, flattened like a Conv
    weight ``[D, C, *kernel]``."""
    n, c, *sizes = x.shape
    grid = [s // k for s, k in zip(sizes, kernel)]
    x = x[(slice(None), slice(None), *(slice(0, g * k) for g, k in zip(grid, kernel)))]
    shape = [n, c]
    for g, k in zip(grid, kernel):
        shape += [g, k]
    x = x.reshape(shape)
    dims = len(kernel)
    order = [0, *(2 + 2 * i for i in range(dims)), 1, *(3 + 2 * i for i in range(dims))]
    return x.permute(order).reshape(n, math.prod(grid), c * math.prod(kernel))


class PatchStem(nn.Module):
    """A bias-free convolution stem (``proj``), then optionally LayerNorm (``norm_layer``).
    When stride equals kernel the convolution runs as one matrix product over patches."""

    def __init__(self, conv: nn.Module, dim: int | None):
        super().__init__()
        self.proj = conv
        self.norm_layer = nn.LayerNorm(dim) if dim else None

    def _conv(self):
        return self.proj

    def forward(self, x):
        conv = self._conv()
        if tuple(conv.stride) == tuple(conv.kernel_size):
            w = conv.weight
            tokens = _patchify(x, conv.kernel_size) @ w.reshape(w.shape[0], -1).T
        else:
            tokens = conv(x).flatten(2).transpose(1, 2)
        return tokens if self.norm_layer is None else self.norm_layer(tokens)


class VisionStem(PatchStem):
    """Patch embedding of 2-frame RGB clips; images (``[N, 3, H, W]`` or one frame) are
    repeated to the clip length first."""

    def __init__(self, dim: int, kernel, frames: int):
        # index 0 of the release's stem was the parameter-free image -> clip repetition
        super().__init__(nn.Sequential(nn.Identity(), nn.Conv3d(3, dim, kernel, stride=kernel,
                                                                bias=False)), None)
        self.frames = frames

    def _conv(self):
        return self.proj[1]

    def forward(self, x):
        conv = self._conv()
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            kt = conv.kernel_size[0]
            if kt == self.frames:  # repeated frames: one 2-D patch product, kernel summed
                w = conv.weight.sum(2)
                return _patchify(x[:, :, 0], conv.kernel_size[1:]) @ w.reshape(w.shape[0], -1).T
            x = x.expand(-1, -1, self.frames, -1, -1)
        return super().forward(x)


class TokenPreprocessor(nn.Module):
    """A stem's patch tokens behind a class token, plus learned positions."""

    def __init__(self, stem_name: str, stem: nn.Module, tokens: int, dim: int):
        super().__init__()
        self.stem_name = stem_name
        self.add_module(stem_name, stem)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.pos_embedding_helper = PosEmbedding(tokens, dim)

    def forward(self, x):
        tokens = getattr(self, self.stem_name)(x)
        pos = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] + 1 != pos.shape[1]:
            raise ValueError(f"input of shape {tuple(x.shape)} gives {tokens.shape[1]} patches; "
                             f"the model was built for {pos.shape[1] - 1}")
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + pos


class TextPreprocessor(nn.Module):
    def __init__(self, dim: int, context: int = TEXT_CONTEXT, vocab: int = TEXT_VOCAB):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, context, dim) * 0.01)
        # the release keeps its additive causal mask in the state dict; attention here is
        # causal through scaled_dot_product_attention, the buffer only round-trips
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu_(1))
        nn.init.normal_(self.token_embedding.weight, std=0.02)

    def forward(self, ids):
        """``(tokens [B, L', D], end-of-text positions [B])``, L' = the last end + 1."""
        if ids.shape[1] != self.pos_embed.shape[1]:
            raise ValueError(f"text ids must be [N, {self.pos_embed.shape[1]}], "
                             f"got {tuple(ids.shape)}")
        end = ids.argmax(dim=-1)
        keep = int(end.max()) + 1 if ids.shape[0] else 1
        ids = ids[:, :keep]
        return self.token_embedding(ids) + self.pos_embed[:, :keep], end


class ImuPreprocessor(nn.Module):
    def __init__(self, dim: int, kernel: int = 8, channels: int = 6, length: int = 2000):
        super().__init__()
        self.kernel = kernel
        self.imu_stem = PatchStem(nn.Linear(channels * kernel, dim, bias=False), dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * dim ** -0.5)
        self.pos_embed = nn.Parameter(torch.randn(1, length // kernel + 1, dim) * 0.01)

    def forward(self, x):
        n = x.shape[0]
        windows = x.unfold(-1, self.kernel, self.kernel).permute(0, 2, 1, 3).reshape(
            n, -1, x.shape[1] * self.kernel)
        tokens = self.imu_stem.norm_layer(self.imu_stem.proj(windows))
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"IMU input of shape {tuple(x.shape)} gives {tokens.shape[1]} "
                             f"windows; the model was built for {self.pos_embed.shape[1] - 1}")
        return torch.cat([self.cls_token.expand(n, -1, -1), tokens], dim=1) + self.pos_embed


class TextHead(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, out, bias=False))

    def forward(self, x):
        return self.proj(x)


def _head(dim: int, out: int, gaps: int = 1) -> nn.Sequential:
    """LayerNorm → bias-free linear, numbered as in the release, whose parameter-free steps
    (the class-token selection, IMU's training dropout) sat in between."""
    return nn.Sequential(nn.LayerNorm(dim, eps=1e-6), *(nn.Identity() for _ in range(gaps)),
                         nn.Linear(dim, out, bias=False))


class Normalize(nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=-1)


class LogitScale(nn.Module):
    """Multiply by ``min(exp(log_logit_scale), 100)``; learned (a parameter) or fixed (a
    buffer), both stored in the state dict."""

    def __init__(self, init: float, learnable: bool):
        super().__init__()
        value = torch.tensor(math.log(init))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x):
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE) * x


class ImageBind(nn.Module):
    """ImageBind with the release's constructor arguments (:data:`HUGE` for the released
    checkpoint; drop-path rates are accepted and unused). ``model({tower: x})`` returns
    ``{tower: embedding}`` like the release; towers: vision, text, audio, depth, thermal, imu."""

    def __init__(self, video_frames=2, kernel_size=(2, 14, 14), audio_kernel_size=16,
                 audio_stride=10, out_embed_dim=768, vision_embed_dim=1024,
                 vision_num_blocks=24, vision_num_heads=16, audio_embed_dim=768,
                 audio_num_blocks=12, audio_num_heads=12, audio_num_mel_bins=128,
                 audio_target_len=204, audio_drop_path=0.1, text_embed_dim=768,
                 text_num_blocks=12, text_num_heads=12, depth_embed_dim=384,
                 depth_kernel_size=16, depth_num_blocks=12, depth_num_heads=8,
                 depth_drop_path=0.0, thermal_embed_dim=768, thermal_kernel_size=16,
                 thermal_num_blocks=12, thermal_num_heads=12, thermal_drop_path=0.0,
                 imu_embed_dim=512, imu_kernel_size=8, imu_num_blocks=6, imu_num_heads=8,
                 imu_drop_path=0.7):
        super().__init__()
        kt, kh, kw = kernel_size
        vision_tokens = (_conv_out(video_frames, kt, kt) * _conv_out(224, kh, kh)
                         * _conv_out(224, kw, kw) + 1)
        audio_tokens = (_conv_out(audio_num_mel_bins, audio_kernel_size, audio_stride)
                        * _conv_out(audio_target_len, audio_kernel_size, audio_stride) + 1)

        def plane(dim, k):  # depth / thermal: one channel, 224², kernel = stride = k
            stem = PatchStem(nn.Conv2d(1, dim, k, stride=k, bias=False), dim)
            return stem, _conv_out(224, k, k) ** 2 + 1

        depth_stem, depth_tokens = plane(depth_embed_dim, depth_kernel_size)
        thermal_stem, thermal_tokens = plane(thermal_embed_dim, thermal_kernel_size)
        audio_stem = PatchStem(nn.Conv2d(1, audio_embed_dim, audio_kernel_size,
                                         stride=audio_stride, bias=False), audio_embed_dim)
        # the imu stem's windows are 8 samples of 6 channels (48 values), as released
        self.modality_preprocessors = nn.ModuleDict({
            "vision": TokenPreprocessor("rgbt_stem", VisionStem(vision_embed_dim, kernel_size,
                                                                video_frames),
                                        vision_tokens, vision_embed_dim),
            "text": TextPreprocessor(text_embed_dim),
            "audio": TokenPreprocessor("rgbt_stem", audio_stem, audio_tokens, audio_embed_dim),
            "depth": TokenPreprocessor("depth_stem", depth_stem, depth_tokens, depth_embed_dim),
            "thermal": TokenPreprocessor("rgbt_stem", thermal_stem, thermal_tokens,
                                         thermal_embed_dim),
            "imu": ImuPreprocessor(imu_embed_dim, 8),
        })
        self.modality_trunks = nn.ModuleDict({
            "vision": Trunk(vision_embed_dim, vision_num_blocks, vision_num_heads, False, True),
            "text": Trunk(text_embed_dim, text_num_blocks, text_num_heads, False, False),
            "audio": Trunk(audio_embed_dim, audio_num_blocks, audio_num_heads, True, False),
            "depth": Trunk(depth_embed_dim, depth_num_blocks, depth_num_heads, True, False),
            "thermal": Trunk(thermal_embed_dim, thermal_num_blocks, thermal_num_heads, True,
                             False),
            "imu": Trunk(imu_embed_dim, imu_num_blocks, imu_num_heads, True, False),
        })
        out = out_embed_dim
        self.modality_heads = nn.ModuleDict({
            "vision": _head(vision_embed_dim, out),
            "text": TextHead(text_embed_dim, out),
            "audio": _head(audio_embed_dim, out),
            "depth": _head(depth_embed_dim, out),
            "thermal": _head(thermal_embed_dim, out),
            "imu": _head(imu_embed_dim, out, gaps=2),
        })
        post = {"vision": Normalize(),
                "text": nn.Sequential(Normalize(), LogitScale(1 / 0.07, learnable=True))}
        for tower, scale in LOGIT_SCALES.items():
            post[tower] = nn.Sequential(Normalize(), LogitScale(scale, learnable=False))
        self.modality_postprocessors = nn.ModuleDict(post)
        self.out_embed_dim = out

    def embed(self, tower: str, x):
        """One tower's embeddings ``[N, out_embed_dim]`` (normalised and scaled); inputs
        with 5 or more dimensions hold S clips per item and give the mean over clips."""
        if tower not in self.modality_trunks:
            raise KeyError(f"unknown tower {tower!r}; towers: {', '.join(TOWERS)}")
        clips = x.ndim >= 5
        if clips:
            n, s = x.shape[:2]
            x = x.reshape(n * s, *x.shape[2:])
        if tower == "text":
            tokens, index = self.modality_preprocessors["text"](x)
            causal = True
        else:
            tokens = self.modality_preprocessors[tower](x)
            index = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
            causal = False
        y = self.modality_trunks[tower](tokens, index, causal)
        y = self.modality_postprocessors[tower](self.modality_heads[tower](y))
        if clips:
            y = y.reshape(n, s, -1).mean(dim=1)
        return y

    def forward(self, inputs: dict) -> dict:
        return {tower: self.embed(tower, x) for tower, x in inputs.items() if x is not None}


def build(arch: dict | None = None, device=None) -> ImageBind:
    """An ImageBind of ``arch`` (default :data:`HUGE`); ``device="meta"`` allocates nothing
    (for loading a state dict with ``assign=True``)."""
    with torch.device(device or "cpu"):
        return ImageBind(**(HUGE if arch is None else arch))
