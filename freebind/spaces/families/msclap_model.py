"""MS-CLAP's own modules (imported when a release is loaded; the rest of the model is
transformers'): its projection, and CNN14 (PANNs), the 2022 audio tower, on a log mel
spectrogram computed outside it: six conv blocks (two 3×3 conv–BN–ReLU, then 2×2 average
pooling, the last block 1×1), mean over frequency, max + mean over time, ``relu(fc1)``.
Key layout as the released checkpoint (``bn0``, ``conv_block{1..6}.conv1/conv2/bn1/bn2``,
``fc1``)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CHANNELS = (64, 128, 256, 512, 1024, 2048)


class Projection(nn.Module):
    """MS-CLAP's projection: ``LayerNorm(l1(x) + l2(gelu(l1(x))))``, no biases (its dropout
    is inactive at inference)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed1 = self.linear1(x)
        return self.layer_norm(embed1 + self.linear2(F.gelu(embed1)))


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x, pool: int):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(nn.Module):
    def __init__(self, out_emb: int = 2048, mel_bins: int = 64):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(mel_bins)
        ins = (1,) + CHANNELS[:-1]
        for i, (c_in, c_out) in enumerate(zip(ins, CHANNELS), start=1):
            setattr(self, f"conv_block{i}", ConvBlock(c_in, c_out))
        self.fc1 = nn.Linear(CHANNELS[-1], out_emb, bias=True)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``mel [B, 1, frames, mels]`` → the embedding ``[B, out_emb]``."""
        x = self.bn0(mel.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, pool=2 if i < 6 else 1)
        x = torch.mean(x, dim=3)
        x = torch.max(x, dim=2).values + torch.mean(x, dim=2)
        return F.relu(self.fc1(x))
