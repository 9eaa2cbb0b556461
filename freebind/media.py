"""File discovery and decoding: audio to mono float32 at a requested rate, images to RGB.

Decoding never uses torchaudio's native library: WAV/FLAC/OGG (and MP3 where libsndfile
supports it) go through soundfile, resampling through a polyphase filter (scipy). Every
failure raises :class:`freebind.errors.MediaError` naming the file and the reason.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from freebind.errors import MediaError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TEXT_EXTENSIONS = (".txt",)


def modality_of(path: str | os.PathLike) -> str | None:
    """``audio``, ``image`` or ``text`` by file extension; None for anything else."""
    ext = Path(path).suffix.lower()
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in TEXT_EXTENSIONS:
        return "text"
    return None


def discover(paths: Iterable[str | os.PathLike]) -> dict[str, list[Path]]:
    """Walk files and folders; group media files by modality, each list sorted."""
    found: dict[str, list[Path]] = {"audio": [], "image": [], "text": []}
    for root in paths:
        root = Path(root)
        if root.is_file():
            candidates = [root]
        elif root.is_dir():
            candidates = [p for p in root.rglob("*") if p.is_file()]
        else:
            raise MediaError(f"{root}: no such file or folder")
        for p in candidates:
            m = modality_of(p)
            if m is not None:
                found[m].append(p)
    return {m: sorted(set(v)) for m, v in found.items()}


def resample(wave: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling of a 1-D signal (deterministic)."""
    if src_rate == dst_rate:
        return wave.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    ratio = Fraction(dst_rate, src_rate).limit_denominator(1000)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def load_audio(path: str | os.PathLike, rate: int) -> np.ndarray:
    """Decode ``path`` to a mono float32 signal in [-1, 1] at ``rate`` Hz.

    Stereo and multi-channel audio are averaged to mono. An empty file is an error."""
    try:
        import soundfile as sf

        data, src_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types; all mean "cannot decode"
        raise MediaError(f"{path}: cannot decode audio ({_short(exc)})") from None
    if data.shape[0] == 0:
        raise MediaError(f"{path}: audio has no samples")
    wave = data.mean(axis=1)
    if not np.isfinite(wave).all():
        raise MediaError(f"{path}: audio contains NaN or infinite samples")
    return resample(wave, int(src_rate), rate)


def load_image(path: str | os.PathLike):
    """Decode ``path`` to an RGB ``PIL.Image`` (fully loaded, so truncation is caught)."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode image ({_short(exc)})") from None


def read_texts(path: str | os.PathLike) -> list[str]:
    """One text per non-empty line (UTF-8), surrounding whitespace stripped."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{path}: cannot read texts ({_short(exc)})") from None
    return [line.strip() for line in raw.splitlines() if line.strip()]


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Deterministic length policy: centre-crop long signals, zero-pad short ones at the end."""
    n = wave.shape[0]
    if n >= length:
        start = (n - length) // 2
        return wave[start:start + length]
    return np.pad(wave, (0, length - n))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

