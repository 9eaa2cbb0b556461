"""The mini spaces' encoders: one small tower per modality, each ending in a linear map to
the space's dimension (outputs are L2-normalised by the caller).

* :class:`ImageTower` — a strided CNN on 40 px RGB images, mean+max pooled.
* :class:`AudioTower` — 1-D convolutions over time on log-mel frames, mean+max pooled.
* :class:`TextTower` — word embeddings, masked mean+max pooled, then an MLP.
* :class:`PointTower` — a PointNet on ``[N, 6]`` clouds (xyz, rgb): a shared per-point MLP,
  its max over the cloud concatenated back to every point, a second MLP, mean+max pooled.
"""

from __future__ import annotations

import torch
from torch import nn

from freebind.mini.features import N_MELS, PAD


def _head(width_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, width_in // 2), nn.ReLU(),
                         nn.Linear(width_in // 2, dim))


class ImageTower(nn.Module):
    """Strided CNN: 40 px -> 20 (4x4 stem, stride 2) -> 10 -> 5, mean+max pooled."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        w = width

        def block(i, o, k=3, stride=1, pad=1):
            return [nn.Conv2d(i, o, k, stride=stride, padding=pad, bias=False),
                    nn.BatchNorm2d(o), nn.ReLU()]

        self.features = nn.Sequential(*block(3, w, 4, 2, 1), *block(w, 2 * w, 3, 2, 1),
                                      *block(2 * w, 2 * w), nn.MaxPool2d(2),
                                      *block(2 * w, 4 * w))
        self.head = _head(8 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return self.head(pooled)


class AudioTower(nn.Module):
    def __init__(self, width: int, dim: int, n_mels: int = N_MELS):
        super().__init__()
        w = width

        def block(i, o, k, stride=1):
            return [nn.Conv1d(i, o, k, stride=stride, padding=k // 2, bias=False),
                    nn.BatchNorm1d(o), nn.ReLU()]

        self.features = nn.Sequential(*block(n_mels, w, 5, stride=2),
                                      *block(w, 2 * w, 5, stride=2), *block(2 * w, 2 * w, 3))
        self.head = _head(4 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=2), f.amax(dim=2)], dim=1)
        return self.head(pooled)


class TextTower(nn.Module):
    def __init__(self, vocab_size: int, width: int, dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD)
        self.mix = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.ReLU())
        self.head = _head(2 * width, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD).unsqueeze(-1).float()
        e = self.embed(ids)
        mean = (e * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        mx = (e + (mask - 1.0) * 1e4).amax(dim=1)
        return self.head(self.mix(torch.cat([mean, mx], dim=1)))


class PointTower(nn.Module):
    def __init__(self, width: int, dim: int):
        super().__init__()
        w = width

        def block(i, o):
            return [nn.Conv1d(i, o, 1, bias=False), nn.BatchNorm1d(o), nn.ReLU()]

        self.local = nn.Sequential(*block(6, w), *block(w, 2 * w))
        self.features = nn.Sequential(*block(4 * w, 4 * w), *block(4 * w, 4 * w))
        self.head = _head(8 * w, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.local(x.transpose(1, 2))
        f = self.features(torch.cat([f, f.amax(dim=2, keepdim=True).expand_as(f)], dim=1))
        return self.head(torch.cat([f.mean(dim=2), f.amax(dim=2)], dim=1))


def build_towers(config: dict) -> nn.ModuleDict:
    """Towers from a config: {"dim": D, "vocab_size": V, "audio": w, "image": w, "text": w}
    (a modality absent from the config has no tower)."""
    dim = int(config["dim"])
    towers = nn.ModuleDict()
    if "audio" in config:
        towers["audio"] = AudioTower(int(config["audio"]), dim)
    if "image" in config:
        towers["image"] = ImageTower(int(config["image"]), dim)
    if "text" in config:
        towers["text"] = TextTower(int(config["vocab_size"]), int(config["text"]), dim)
    if "point" in config:
        towers["point"] = PointTower(int(config["point"]), dim)
    return towers
