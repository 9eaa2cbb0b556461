"""Bounded audio decoding: the header is checked before any sample is decoded, and only the
frames a space uses are read (seeking, block by block), so a small file cannot make the
decoder allocate gigabytes.

A FLAC of 600 s of 8-channel silence at 655,350 Hz is about 3.4 MB and would decode whole to
12.6 GB of float32. Here:

* :class:`AudioLimits` ``(max_rate, max_channels, max_seconds, max_samples)``: the header's
  sample rate, channel count and length (frames / rate) must be within the limits, and the
  samples actually decoded for one file (frames read × channels kept) at most
  ``max_samples`` — else a :class:`~freebind.util.errors.MediaError` naming the limit, before
  decoding. The defaults (:data:`DEFAULTS`) hold for every decode (``freebind embed``,
  ``index``, the servers); a server sets its own with :func:`bounded`.
* :func:`probe` ``(source)``: ``(rate, channels, frames)`` from the header (soundfile).
* :func:`read_frames` ``(source, start, count, mono)``: ``count`` frames from ``start`` read in
  blocks of :data:`BLOCK` frames (a block mixed down to mono at once), so the peak is the
  output plus one block — never the file's whole length, whatever its header claims (a
  file shorter than its header gives fewer frames; one longer is not read past ``count``).
* :func:`centre_window` ``(frames, src_rate, rate, length, pad)``: the input frames whose
  resampling gives the centre ``length`` output samples (what ``fit_length`` keeps), aligned
  so the polyphase filter's phases match those of the whole signal.
* :func:`bounded` ``(limits)``: a context manager setting the limits of this thread's (and
  context's) decodes; :func:`current` reads them.
"""

from __future__ import annotations

import contextvars
import math
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from freebind.util.errors import MediaError

#: frames decoded per read
BLOCK = 1 << 15


@dataclass(frozen=True)
class AudioLimits:
    """Limits checked on an audio file's header before it is decoded."""

    #: highest sample rate, Hz (DXD's 352.8 kHz passes; FLAC's 655,350 Hz bombs do not)
    max_rate: int = 384_000
    #: most channels (7.1.4 and ambisonics of third order fit)
    max_channels: int = 16
    #: longest file, in seconds (None: any length; only the frames a space uses are read)
    max_seconds: float | None = 4 * 3600.0
    #: most samples decoded for one file (frames read × channels kept): 2^26 float32 = 256 MB
    max_samples: int = 1 << 26

    def check(self, where, rate: int, channels: int, frames: int | None) -> None:
        """MediaError naming the first limit the header breaks."""
        if rate <= 0:
            raise MediaError(f"{where}: the audio header gives no sample rate")
        if rate > self.max_rate:
            raise MediaError(f"{where}: sample rate {rate} Hz is over the limit of "
                             f"{self.max_rate} Hz")
        if channels <= 0 or channels > self.max_channels:
            raise MediaError(f"{where}: {channels} audio channels; the limit is "
                             f"{self.max_channels}")
        if frames is not None and self.max_seconds is not None \
                and frames / rate > self.max_seconds:
            raise MediaError(f"{where}: {frames / rate:.0f} s of audio is over the limit of "
                             f"{self.max_seconds:g} s")

    def check_samples(self, where, frames: int, channels: int) -> None:
        if frames * channels > self.max_samples:
            raise MediaError(f"{where}: decoding would take {frames * channels} samples "
                             f"({frames} frames × {channels} channels); the limit is "
                             f"{self.max_samples}")


DEFAULTS = AudioLimits()
_CURRENT: contextvars.ContextVar[AudioLimits] = contextvars.ContextVar(
    "freebind_audio_limits", default=DEFAULTS)


def current() -> AudioLimits:
    """The limits of decodes in this thread and context."""
    return _CURRENT.get()


@contextmanager
def bounded(limits: AudioLimits | None):
    """Decodes inside use ``limits`` (None: the current ones)."""
    if limits is None:
        yield current()
        return
    token = _CURRENT.set(limits)
    try:
        yield limits
    finally:
        _CURRENT.reset(token)


def probe(source) -> tuple[int, int, int | None]:
    """``(rate, channels, frames)`` from the header; frames None when the header does not
    know (a streamed FLAC)."""
    import soundfile as sf

    with sf.SoundFile(source) as f:
        frames = int(f.frames)
        return int(f.samplerate), int(f.channels), (frames if 0 < frames < 1 << 62 else None)


def read_frames(f, start: int, count: int, mono: bool) -> np.ndarray:
    """``count`` frames from ``start`` of an open ``soundfile.SoundFile`` as float32
    ``[frames]`` (mono: the channels' mean) or ``[channels, frames]``; fewer when the file
    ends first. Reads :data:`BLOCK` frames at a time."""
    channels = int(f.channels)
    out = np.zeros(count if mono else (channels, count), dtype=np.float32)
    if start and f.seekable():
        f.seek(start)
    elif start:
        _skip(f, start)
    got = 0
    while got < count:
        block = f.read(min(BLOCK, count - got), dtype="float32", always_2d=True)
        n = block.shape[0]
        if n == 0:
            break
        if mono:
            out[got:got + n] = block.mean(axis=1)
        else:
            out[:, got:got + n] = block.T
        got += n
    return out[:got] if mono else out[:, :got]


def _skip(f, frames: int) -> None:
    while frames > 0:
        n = f.read(min(BLOCK, frames), dtype="float32", always_2d=True).shape[0]
        if n == 0:
            return
        frames -= n


def centre_window(frames: int, src_rate: int, rate: int, length: int) -> tuple[int, int, int]:
    """``(start, count, skip)``: read ``count`` input frames from ``start``, resample them,
    drop ``skip`` output samples, and the next ``length`` are the centre ``length`` samples
    (``fit_length``'s) of the whole file resampled — the same numbers, since ``start`` is a
    multiple of the rate ratio's denominator (same filter phases) and the window reaches a
    filter's half-length past the kept samples on both sides."""
    ratio = Fraction(rate, src_rate).limit_denominator(1000)
    up, down = ratio.numerator, ratio.denominator
    n_out = -(-frames * up // down)                   # ceil, resample_poly's length
    if n_out <= length:
        return 0, frames, 0
    out0 = (n_out - length) // 2
    pad = math.ceil(10 * max(up, down) / up) + 2     # resample_poly's filter, in input frames
    first = max(0, (out0 * down) // up - pad)
    start = (first // down) * down
    stop = min(frames, -(-(out0 + length) * down // up) + pad)
    return start, stop - start, out0 - start * up // down


def decode(source, where, rate: int, mono: bool = True, length: int | None = None,
           window: bool = True) -> tuple[np.ndarray, int, int]:
    """``(wave, src_rate, skip)``: the header checked against :func:`current` limits, then
    the frames read (all of them, or with ``length`` and ``window`` only the
    :func:`centre_window` of ``length`` samples at ``rate``: resample ``wave``, then drop
    ``skip`` samples). A header that does not know its length is read to the limit and
    refused past it. Raises MediaError for a broken limit; soundfile's errors pass."""
    import soundfile as sf

    limits = current()
    with sf.SoundFile(source) as f:
        src_rate, channels = int(f.samplerate), int(f.channels)
        frames = int(f.frames) if 0 < int(f.frames) < 1 << 62 else None
        limits.check(where, src_rate, channels, frames)
        kept = 1 if mono else channels
        if frames is None:
            cap = limits.max_samples // kept
            if limits.max_seconds is not None:
                cap = min(cap, int(limits.max_seconds * src_rate))
            wave = read_frames(f, 0, cap + 1, mono)
            if wave.shape[-1] > cap:
                raise MediaError(f"{where}: the audio header gives no length and the file "
                                 f"holds more than {cap} frames (the limit)")
            return wave, src_rate, 0
        start, count, skip = 0, frames, 0
        if length is not None and window:
            start, count, skip = centre_window(frames, src_rate, rate, int(length))
        limits.check_samples(where, count, kept)
        return read_frames(f, start, count, mono), src_rate, skip
