"""Helpers shared by the real-space tests: tiny architectures, toy media, a toy tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from freebind.spaces.imagebind_model import arch

#: A tiny ImageBindModel (same code, small widths) for fast round trips.
TINY_IB = arch(32, 1, 2, 16)

BPE_MERGES = ("Ġ d", "o g", "Ġd og", "a r", "Ġ b", "Ġ c", "Ġc ar", "Ġ r", "a i", "Ġr ai")


def bytes_to_unicode() -> list[str]:
    """GPT-2's byte → printable-character table (the byte-level BPE alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_bpe_tokenizer(folder, merges=BPE_MERGES, degenerate: bool = False) -> int:
    """A RoBERTa-style tokenizer folder (vocab.json + merges.txt); returns its size."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    if not degenerate:
        for ch in bytes_to_unicode():
            vocab.setdefault(ch, len(vocab))
        for m in merges:
            vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    body = "" if degenerate else "\n".join(merges) + "\n"
    (folder / "merges.txt").write_text("#version: 0.2\n" + body, encoding="utf-8")
    return len(vocab)


def write_wav(path, seconds: float, rate: int, seed: int = 0, channels: int = 1) -> Path:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * seed) * t)
    wave = (tone + 0.05 * rng.standard_normal(n)).astype(np.float32)
    if channels > 1:
        wave = np.stack([wave, 0.5 * wave], axis=1)
    sf.write(str(path), wave, rate)
    return Path(path)


def write_png(path, seed: int = 0, size=(180, 240)) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((*size, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return Path(path)


def require_packages(*names: str) -> None:
    """Skip the calling test module unless every package is installed (found, not imported:
    some packages' ``__init__`` imports things freebind deliberately avoids). In CI
    (``CI=true``) a missing package FAILS the module instead: a reference library that
    scripts/setup.sh did not install must never pass unseen."""
    import importlib.util
    import os

    import pytest

    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        message = f"not installed: {', '.join(missing)}"
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"{message} (CI=true: scripts/setup.sh must install every test "
                        f"reference)", pytrace=False)
        pytest.skip(message, allow_module_level=True)


def reference_imagebind():
    """The reference implementation, ``imagebind.models.imagebind_model`` of the
    ``imagebind-unofficial`` package (installed ``--no-deps``; needs timm, einops, iopath, ftfy,
    regex), imported without the package's ``__init__`` (which imports torchaudio,
    pytorchvideo and decord). Tests only: freebind's own code never imports it."""
    from freebind.spaces import compat

    return compat.import_bare("imagebind", "imagebind.models.imagebind_model", "imagebind",
                              "imagebind-unofficial")


def reference_tokenizer():
    """The reference package's CLIP tokenizer over its own vocabulary file."""
    from freebind.spaces import compat

    mp = compat.import_bare("imagebind", "imagebind.models.multimodal_preprocessors",
                            "imagebind", "imagebind-unofficial")
    bpe = Path(mp.__file__).resolve().parent.parent / "bpe" / "bpe_simple_vocab_16e6.txt.gz"
    return mp.SimpleTokenizer(bpe_path=str(bpe))


def save_tiny_imagebind(root, name: str = "tiny_ib.pth"):
    """A seeded random-weight :data:`TINY_IB` reference ImageBindModel and its checkpoint,
    saved under ``root`` with the ``module.`` prefix of the released file:
    ``(model, checkpoint path)``."""
    import torch

    ib = reference_imagebind()
    torch.manual_seed(0)
    model = ib.ImageBindModel(**TINY_IB).eval()
    ckpt = Path(root) / name
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, ckpt)
    return model, ckpt


def write_video(path, n_frames: int, fps: int, size=(48, 64)) -> Path:
    """An MPEG-4 clip: frame i is a flat grey of level 3·i with a bright bar that moves."""
    from fractions import Fraction

    import av

    h, w = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qscale": "2"}
        for i in range(n_frames):
            img = np.full((h, w, 3), 3 * i, np.uint8)
            img[:, (4 * i) % (w - 8):(4 * i) % (w - 8) + 8] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Path(path)


def all_video_frames(path) -> np.ndarray:
    """Every frame of a video, decoded with PyAV directly (a test reference)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
