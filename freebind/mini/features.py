"""Preprocessing of the mini spaces: log-mel features (computed here with torch.stft and a
mel filterbank built in numpy; no torchaudio), image tensors, and a word tokenizer over the
generator's vocabulary.

:data:`PREPROCESS_VERSION` enters every mini space's fingerprint: change it whenever these
functions would map the same file to different numbers.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from freebind.mini.captions import tokenize
from freebind.mini.render import CLIP_SAMPLES, IMAGE_SIZE, SAMPLE_RATE

PREPROCESS_VERSION = "mini-pre-1 (16 kHz, 1 s centre-crop/pad, 512-pt STFT hop 256, 48 mel, " \
                     "log; 40 px RGB; word tokens max 32)"
N_FFT = 512
HOP = 256
N_MELS = 48
F_MIN, F_MAX = 30.0, 8000.0
MAX_TOKENS = 32
PAD, UNK = 0, 1


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=None)
def mel_filterbank(n_fft: int = N_FFT, n_mels: int = N_MELS, rate: int = SAMPLE_RATE,
                   f_min: float = F_MIN, f_max: float = F_MAX) -> np.ndarray:
    """Triangular HTK-mel filters, shape [n_fft // 2 + 1, n_mels], float32."""
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    fb = np.zeros((freqs.size, n_mels))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
    return fb.astype(np.float32)


def log_mel(waves):
    """Log-mel features [B, N_MELS, frames] of mono 16 kHz clips [B, CLIP_SAMPLES].

    No per-clip normalisation: loudness is information (a fixed affine map scales values to
    roughly unit range)."""
    import torch

    x = torch.as_tensor(np.asarray(waves, dtype=np.float32))
    if x.ndim == 1:
        x = x[None]
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)
    spec = torch.stft(x, N_FFT, hop_length=HOP, window=window, center=True,
                      pad_mode="constant", return_complex=True)
    power = spec.real ** 2 + spec.imag ** 2                      # [B, F, T]
    fb = torch.from_numpy(mel_filterbank())
    mel = torch.einsum("bft,fm->bmt", power, fb)
    return (torch.log(mel + 1e-6) + 4.0) / 4.0


def load_waves(paths: Sequence) -> np.ndarray:
    """Decode audio files (any rate, any channels) to [N, CLIP_SAMPLES] float32 at 16 kHz
    (centre-crop long clips, zero-pad short ones)."""
    from freebind.data.media import fit_length, load_audio

    out = np.zeros((len(paths), CLIP_SAMPLES), dtype=np.float32)
    for i, p in enumerate(paths):
        out[i] = fit_length(load_audio(p, SAMPLE_RATE, length=CLIP_SAMPLES), CLIP_SAMPLES)
    return out


def load_pixels(paths: Sequence) -> np.ndarray:
    """Decode images to [N, IMAGE_SIZE, IMAGE_SIZE, 3] uint8 (other sizes: bilinear resize
    of the centre square crop)."""
    from PIL import Image

    from freebind.data.media import load_image

    out = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        img = load_image(p)
        if img.size != (IMAGE_SIZE, IMAGE_SIZE):
            w, h = img.size
            s = min(w, h)
            img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        out[i] = np.asarray(img, dtype=np.uint8)
    return out


def image_tensor(pixels):
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W], fixed affine normalisation."""
    import torch

    x = torch.from_numpy(np.array(pixels, dtype=np.uint8)).permute(0, 3, 1, 2).float()
    return (x / 255.0 - 0.5) / 0.25


class Tokenizer:
    """Word tokenizer over a fixed vocabulary: ids start at 2 (0 = padding, 1 = unknown)."""

    def __init__(self, vocab: Sequence[str]):
        self.vocab = tuple(vocab)
        self.index = {w: i + 2 for i, w in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab) + 2

    def ids(self, text: str) -> list[int]:
        ids = [self.index.get(w, UNK) for w in tokenize(text)][:MAX_TOKENS]
        return ids or [UNK]

    def __call__(self, texts: Sequence[str]):
        """LongTensor [B, L] padded with 0 (L = longest text, at most MAX_TOKENS)."""
        import torch

        rows = [self.ids(t) for t in texts]
        width = max(len(r) for r in rows) if rows else 1
        out = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        return out
