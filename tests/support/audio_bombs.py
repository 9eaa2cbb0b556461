"""Crafted audio files that decode to far more than their size (decompression bombs), for the
bounded-decoding tests: high sample rate, many channels, long silence, lying headers."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _silence(path: Path, rate: int, channels: int, seconds: float, fmt: str = "FLAC",
             subtype: str = "PCM_16", middle: np.ndarray | None = None) -> Path:
    import soundfile as sf

    frames = int(rate * seconds)
    step = 1 << 16
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, format=fmt,
                      subtype=subtype) as f:
        zeros = np.zeros((step, channels), dtype=np.int16)
        written = 0
        while written < frames:
            n = min(step, frames - written)
            if middle is not None and written <= frames // 2 < written + n:
                f.write(zeros[:frames // 2 - written])
                f.write(middle)
                written = frames // 2 + len(middle)
                continue
            f.write(zeros[:n])
            written += n
    return path


def high_rate(folder: Path) -> Path:
    """20 s of 8-channel silence at 655,350 Hz (FLAC's highest rate): ~110 KB that would
    decode whole to 420 MB of float32."""
    return _silence(folder / "high_rate.flac", 655_350, 8, 20.0)


def many_channels(folder: Path) -> Path:
    """20 ms of silence in 1,024 channels at 48 kHz (a 2 MB WAV whose every second would
    decode to 196 MB of float32)."""
    return _silence(folder / "many_channels.wav", 48_000, 1024, 0.02, fmt="WAV")


def long_silence(folder: Path, seconds: float = 5 * 3600.0) -> Path:
    """Hours of mono silence at 8 kHz in a FLAC of a few hundred KB."""
    return _silence(folder / "long_silence.flac", 8_000, 1, seconds)


def unknown_length(folder: Path, seconds: float = 120.0) -> Path:
    """A FLAC whose STREAMINFO says its length is unknown (0 samples, as a live stream
    writes it) while it holds ``seconds`` of 48 kHz silence."""
    path = _silence(folder / "unknown_length.flac", 48_000, 2, seconds)
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"fLaC" and raw[4] & 0x7F == 0       # STREAMINFO first
    fields = int.from_bytes(raw[18:26], "big") & ~((1 << 36) - 1)
    raw[18:26] = fields.to_bytes(8, "big")
    path.write_bytes(bytes(raw))
    return path


def lying_wav(folder: Path, claimed_frames: int = 16_000, held_seconds: float = 60.0) -> Path:
    """A 16 kHz WAV whose data chunk says ``claimed_frames`` frames while the file holds
    ``held_seconds`` of samples after it."""
    import soundfile as sf

    path = folder / "lying.wav"
    held = int(16_000 * held_seconds)
    sf.write(str(path), np.zeros(held, dtype=np.int16), 16_000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data")
    raw[at + 4:at + 8] = (claimed_frames * 2).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    return path


def clip_in_silence(folder: Path, seconds: float = 600.0, rate: int = 16_000,
                    seed: int = 0) -> Path:
    """``seconds`` of silence with 3 s of noise at its centre (a long recording whose centre
    the mini encoders use)."""
    rng = np.random.default_rng(seed)
    middle = (rng.normal(size=(3 * rate, 1)) * 3000).astype(np.int16)
    return _silence(folder / f"clip_in_silence_{rate}.flac", rate, 1, seconds, middle=middle)


def peak_growth_mb(code: str, env: dict | None = None) -> float:
    """Peak resident memory growth (MB) of a fresh Python running ``code`` after warming up
    (imports and one small decode): the peak is reset (``/proc/self/clear_refs``), then
    ``VmHWM`` after minus ``VmRSS`` before."""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import json, sys, tempfile, numpy as np, soundfile as sf\n"
        "def kb(field):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(field + ':'):\n"
        "            return int(line.split()[1])\n"
        "from freebind.data.media import load_audio\n"
        "from freebind.data import audio_limits\n"
        "from freebind.util.errors import MediaError\n"
        "p = tempfile.mktemp(suffix='.wav'); sf.write(p, np.zeros(16000, 'float32'), 16000)\n"
        "load_audio(p, 16000)\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = kb('VmRSS')\n"
        "outcome = 'decoded'\n"
        "try:\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
        "except MediaError as exc:\n    outcome = 'refused: ' + str(exc)\n"
        "after = kb('VmHWM')\n"
        "print(json.dumps({'mb': (after - before) / 1024, 'outcome': outcome}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


def peak_during_mb(fn) -> tuple[float, object]:
    """``(peak resident growth in MB, fn())`` in this process: the peak is reset
    (``/proc/self/clear_refs``) before ``fn`` runs."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _kb("VmRSS")
    out = fn()
    return (_kb("VmHWM") - before) / 1024, out


def whole_decode_mb(path) -> float:
    """What decoding the whole file would allocate (float32, every channel), from its
    header."""
    import soundfile as sf

    info = sf.info(str(path))
    frames = info.frames if 0 < info.frames < 1 << 62 else 0
    return frames * info.channels * 4 / 2 ** 20
