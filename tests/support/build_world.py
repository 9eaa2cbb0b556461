"""A tiny synthetic world for build/embed tests: real files (PNG, WAV, a text file) whose
content encodes an item id, and fake spaces registered in the registry that map ids to
latent vectors through space-specific linear maps (strong alignment inside an expert's
modalities, weak audio-text alignment in the base)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

LATENT = 8
N = 160


def _latents(modality: str) -> np.ndarray:
    seed = int(hashlib.sha256(modality.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(size=(4 * N, LATENT))


class WorldSpace:
    family = "test"

    def __init__(self, name, modalities, dim, noise):
        self.name, self.modalities, self.dim = name, tuple(modalities), dim
        self.fingerprint = f"{name}-v1"
        g = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
        self.maps = {m: g.normal(size=(LATENT, dim)) for m in ("shared",)}
        self.noise = {m: noise.get(m, 0.0) * g.normal(size=(LATENT, dim)) for m in modalities}
        self.calls = 0

    def item_id(self, modality, item) -> int:
        from freebind.util.errors import MediaError

        if modality == "text":
            return int(item.split()[-1])
        if modality == "image":
            from freebind.data.media import load_image

            px = np.asarray(load_image(item))
            return int(px[0, 0, 0]) + 256 * int(px[0, 0, 1])
        import soundfile as sf

        try:
            data, _ = sf.read(str(item), dtype="int16")
        except Exception as exc:
            raise MediaError(f"{item}: cannot decode audio ({exc})") from None
        return int(data[0])

    def encode(self, modality, items, batch_size=32):
        import os
        import time

        import torch

        self.calls += 1
        if os.environ.get("FREEBIND_TEST_DELAY"):  # slow encoder for kill-and-resume tests
            time.sleep(float(os.environ["FREEBIND_TEST_DELAY"]))
            log = os.environ.get("FREEBIND_TEST_LOG")
            if log:
                with open(log, "a") as fh:
                    fh.write(f"{len(items)}\n")
        z = _latents(modality)[[self.item_id(modality, it) for it in items]]
        e = z @ (self.maps["shared"] + self.noise[modality])
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return torch.from_numpy(e.astype(np.float32))


SPACES = {
    "test:base": (("audio", "image", "text"), 24, {"audio": 1.5, "text": 1.5}),
    "test:vl": (("image", "text"), 16, {}),
    "test:at": (("audio", "text"), 12, {}),
}


def register_world():
    from freebind import spaces
    from freebind.spaces.protocol import SpaceInfo

    for name, (mods, dim, noise) in SPACES.items():
        if spaces.is_known(name):
            continue
        spaces.register(SpaceInfo(
            name=name, family="test", modalities=mods, dim=dim, description="test world",
            loader=lambda info, _n=name, _m=mods, _d=dim, _z=noise: WorldSpace(_n, _m, _d, _z),
            checker=lambda info: (True, "")))


def write_world(root: Path, n: int = N) -> dict:
    """audio/*.wav, image/*.png, texts.txt and pools.json under root."""
    import soundfile as sf
    from PIL import Image

    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "image").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(root / "audio" / f"a{i:04d}.wav", np.full(8, i, dtype=np.int16), 16000,
                 subtype="PCM_16")
        Image.new("RGB", (4, 4), (i % 256, i // 256, 7)).save(root / "image" / f"v{i:04d}.png")
    (root / "texts.txt").write_text("".join(f"caption {i}\n" for i in range(n)))
    (root / "pools.json").write_text('{"audio": "audio", "image": "image", "text": "texts.txt"}')
    return {"audio": root / "audio", "image": root / "image", "text": root / "texts.txt"}


def world_folder(tmp_path_factory, n: int = N) -> Path:
    """A fresh folder holding a world of ``n`` items, the world's spaces registered (what a
    test module's ``world`` fixture gives)."""
    register_world()
    root = tmp_path_factory.mktemp("world")
    write_world(root, n=n)
    return root
