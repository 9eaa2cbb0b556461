"""Audio front ends of the real encoders, written on numpy/torch alone (no torchaudio).

* :func:`kaldi_fbank` — Kaldi-compatible log mel filterbank (the computation ImageBind runs
  through ``torchaudio.compliance.kaldi.fbank``: 25 ms Hann ("hanning") frames every 10 ms,
  per-frame DC removal, pre-emphasis 0.97, FFT size rounded up to a power of two, power
  spectrum, Kaldi mel banks from 20 Hz to Nyquist, natural log floored at float32 eps,
  ``snip_edges`` framing, no dither).
* :func:`sinc_resample` — the resampler ImageBind's loader calls
  (``torchaudio.functional.resample`` defaults: Hann-windowed sinc, 6 zero crossings, rolloff
  0.99, rates reduced by their gcd, kernel in float32).
* :func:`soxr_resample` — the resampler LAION-CLAP's loader calls (``librosa.load(sr=48000)``:
  soxr's high-quality mode, length ``ceil(n · dst / src)``).
* :func:`imagebind_audio` — ImageBind's clip pipeline: 16 kHz; three 2-second clips
  whose starts are spaced by (duration − 2)/3 seconds (pytorchvideo's constant-clips sampler);
  per-clip mean removal applied in place on the shared signal, exactly as the reference
  loader does (overlapping clips see the earlier clips' shifts; the mean is taken over all
  channels and the fbank reads the first, as torchaudio's Kaldi fbank does on the reference's
  ``[channels, samples]`` clip); 128-bin fbank padded or cut to
  204 frames; normalised with mean −4.268 and std 9.138. Clips shorter than 2 s (short files)
  are zero-padded in the mel domain, as upstream.
* :func:`imagebind_audio_file` — the same input read from a file's clips alone (seeking:
  only the input frames whose resampling gives the clips, :func:`sinc_window`), bit-identical
  to :func:`imagebind_audio` of the whole file resampled.
* :func:`htk_mel_db` — the log mel spectrogram LAION-CLAP's fusion models take
  (torchaudio ``MelSpectrogram``: centred reflect-padded STFT, periodic Hann window, power 2,
  HTK mel scale without norm, then ``AmplitudeToDB`` = 10·log10(max(x, 1e-10))).
* :func:`slaney_mel_banks` — librosa's default mel filters (Slaney scale and area
  normalisation), which LAION-CLAP's non-fusion models apply inside their model.
* :func:`clap_inputs` — LAION-CLAP's 10 s policy at 48 kHz with int16 quantisation: short
  clips are repeated then zero-padded ("repeatpad"); long clips are cropped deterministically
  at their centre (non-fusion) or, for fusion models, represented by the whole clip squeezed
  to 10 s plus three 10 s chunks taken at the *middle* of the front, middle and back thirds
  of the possible starts (the reference picks them at random; freebind never does, so
  embeddings are reproducible). :func:`clap_centre` reads only the frames of a non-fusion
  model's centre 10 s.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from torch.nn import functional as F

# --- ImageBind ------------------------------------------------------------------------------
IB_RATE = 16000
IB_CLIP_SECONDS = 2
IB_CLIPS = 3
IB_MEL_BINS = 128
IB_TARGET_FRAMES = 204
IB_MEAN = -4.268
IB_STD = 9.138

# --- LAION-CLAP (HTSAT configs) ---------------------------------------------------------------
CLAP_RATE = 48000
CLAP_MAX_SAMPLES = 480000
CLAP_AUDIO_CFG = {"sample_rate": 48000, "window_size": 1024, "hop_size": 480, "mel_bins": 64,
                  "fmin": 50, "fmax": 14000}


def _kaldi_mel(freq: float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def kaldi_mel_banks(num_bins: int, padded_window: int, rate: float, low_freq: float = 20.0,
                    high_freq: float = 0.0) -> np.ndarray:
    """Kaldi's triangular mel filters, ``[num_bins, padded_window // 2 + 1]`` (last column 0)."""
    num_fft_bins = padded_window // 2
    nyquist = 0.5 * rate
    if high_freq <= 0.0:
        high_freq += nyquist
    fft_bin_width = rate / padded_window
    mel_low, mel_high = _kaldi_mel(low_freq), _kaldi_mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _kaldi_mel(fft_bin_width * np.arange(num_fft_bins, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


def kaldi_fbank(wave: torch.Tensor, rate: int = IB_RATE, num_mel_bins: int = IB_MEL_BINS,
                frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                preemphasis: float = 0.97, low_freq: float = 20.0) -> torch.Tensor:
    """Log mel filterbank ``[frames, num_mel_bins]`` of a 1-D float32 signal (Kaldi rules).

    A signal shorter than one frame gives zero frames."""
    wave = wave.to(torch.float32)
    win = int(rate * frame_length_ms * 0.001)
    shift = int(rate * frame_shift_ms * 0.001)
    padded = 1 << (win - 1).bit_length()
    n = wave.shape[0]
    if n < win:
        return torch.zeros(0, num_mel_bins)
    frames_n = 1 + (n - win) // shift
    frames = wave.as_strided((frames_n, win), (shift, 1)).clone()
    frames = frames - frames.mean(dim=1, keepdim=True)
    prev = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = frames - preemphasis * prev
    frames = frames * torch.hann_window(win, periodic=False, dtype=torch.float32)
    frames = F.pad(frames, (0, padded - win))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = torch.from_numpy(kaldi_mel_banks(num_mel_bins, padded, rate, low_freq))
    energies = power @ banks.T
    eps = torch.finfo(torch.float32).eps
    return torch.clamp(energies, min=eps).log()


def imagebind_clip_bounds(n_samples: int, rate: int = IB_RATE, clip_seconds: int = IB_CLIP_SECONDS,
                          clips: int = IB_CLIPS) -> list[tuple[int, int]]:
    """Sample ranges of the clips (pytorchvideo's ConstantClipsPerVideoSampler, exactly)."""
    return [(int(start * rate), int(end * rate))
            for start, end in constant_clips(n_samples / rate, clip_seconds, clips)]


def constant_clips(duration: float, clip_seconds: int, clips: int) -> list[tuple[Fraction,
                                                                                  Fraction]]:
    """pytorchvideo's ConstantClipsPerVideoSampler: ``(start, end)`` seconds (exact
    fractions) of ``clips`` clips of ``clip_seconds``, starts evenly spaced over
    ``[0, duration - clip_seconds]`` (ImageBind's audio and video clips)."""
    max_start = Fraction(max(duration - clip_seconds, 0))
    step = max_start / clips
    bounds = []
    for i in range(clips):
        start = step * i
        bounds.append((start, start + clip_seconds))
        if step * (i + 1) > max_start:
            break
    return bounds


def sinc_resample(wave, src_rate: int, dst_rate: int, zero_crossings: int = 6,
                  rolloff: float = 0.99) -> np.ndarray:
    """Band-limited resampling along the last axis with a Hann-windowed sinc kernel (the method
    and defaults of ``torchaudio.functional.resample``, which ImageBind's loader calls): the
    rates are reduced by their gcd to ``orig → new``; output phase ``j`` of each block of
    ``new`` samples is a ``conv1d`` (stride ``orig``) of the zero-padded input with its own
    kernel; the cutoff is ``rolloff · min(orig, new)``; the output has ``ceil(n · new / orig)``
    samples. Computed in float32, as the reference does for float32 input."""
    signal = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if int(src_rate) == int(dst_rate):
        return signal.numpy()
    g = math.gcd(int(src_rate), int(dst_rate))
    orig, new = int(src_rate) // g, int(dst_rate) // g
    base = min(orig, new) * rolloff
    half = int(math.ceil(zero_crossings * orig / base))
    idx = torch.arange(-half, half + orig, dtype=torch.float32)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx
    t = (t * base).clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0), t.sin() / t) * (window * (base / orig))
    shape = signal.shape
    x = signal.reshape(-1, 1, shape[-1])
    y = F.conv1d(F.pad(x, (half, half + orig)), kernel, stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, :int(math.ceil(new * shape[-1] / orig))]
    return y.reshape(*shape[:-1], -1).numpy()


def soxr_resample(wave, src_rate: int, dst_rate: int) -> np.ndarray:
    """soxr's high-quality resampling along the last axis, cut or zero-padded to
    ``ceil(n · (dst / src))`` samples in float64 (``librosa.load(path, sr=...)``, LAION-CLAP's
    loader: 5 s at 44.1 kHz gives 240001 samples at 48 kHz, as there)."""
    from freebind.spaces import compat

    soxr = compat.require("soxr", "clap")
    x = np.asarray(wave, dtype=np.float32)
    if int(src_rate) == int(dst_rate):
        return x
    ratio = float(dst_rate) / src_rate   # librosa's length, rounding included: n · (dst / src)
    n = int(np.ceil(x.shape[-1] * ratio))
    rows = [soxr.resample(r, int(src_rate), int(dst_rate), quality="soxr_hq")
            for r in x.reshape(-1, x.shape[-1])]
    rows = [r[:n] if r.shape[0] >= n else np.pad(r, (0, n - r.shape[0])) for r in rows]
    return np.stack(rows).reshape(*x.shape[:-1], n).astype(np.float32)


def imagebind_audio(wave: np.ndarray) -> torch.Tensor:
    """ImageBind's audio input ``[3, 1, 128, 204]`` from a 16 kHz float signal, mono
    ``[samples]`` or ``[channels, samples]`` (each clip's mean is taken over all channels, the
    fbank reads the first channel, as the reference does)."""
    signal = torch.as_tensor(np.asarray(wave, dtype=np.float32)).clone()
    if signal.dim() == 1:
        signal = signal[None]
    # views: the in-place shifts in imagebind_clip_features reach the shared signal
    return imagebind_clip_features([signal[:, a:b]
                                    for a, b in imagebind_clip_bounds(signal.shape[1])])


def imagebind_clip_features(clips: list) -> torch.Tensor:
    """``[len(clips), 1, 128, 204]`` from the clips' 16 kHz signals ``[channels, samples]``
    (each clip's mean removed in place, then the fbank of its first channel)."""
    out = []
    for clip in clips:
        if clip.numel():
            clip -= clip.mean()
        fbank = kaldi_fbank(clip[0]).T  # [mel, frames]
        frames = fbank.shape[1]
        if frames < IB_TARGET_FRAMES:
            fbank = F.pad(fbank, (0, IB_TARGET_FRAMES - frames))
        else:
            fbank = fbank[:, :IB_TARGET_FRAMES]
        out.append(((fbank - IB_MEAN) / IB_STD)[None])
    return torch.stack(out, dim=0)


# --- torchaudio-style mel for CLAP ---------------------------------------------------------------
def _htk_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _htk_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def htk_mel_banks(n_freqs: int, f_min: float, f_max: float, n_mels: int, rate: int) -> np.ndarray:
    """Triangular HTK mel filters without normalisation, ``[n_freqs, n_mels]``."""
    all_freqs = np.linspace(0, rate // 2, n_freqs)
    m_pts = np.linspace(_htk_mel(f_min), _htk_mel(f_max), n_mels + 2)
    f_pts = _htk_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def _slaney_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz)
                    / logstep, f / f_sp)


def _slaney_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def slaney_mel_banks(n_freqs: int, f_min: float, f_max: float, n_mels: int,
                     rate: int) -> np.ndarray:
    """Triangular Slaney-scale mel filters with Slaney (area) normalisation, ``[n_freqs,
    n_mels]`` — librosa's default ``filters.mel``, which LAION-CLAP's non-fusion models use
    inside their model (torchlibrosa's ``LogmelFilterBank``)."""
    fft_freqs = np.linspace(0, rate / 2, n_freqs)
    mel_f = _slaney_hz(np.linspace(_slaney_mel(f_min), _slaney_mel(f_max), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights.T.astype(np.float32)


def htk_mel_db(wave: torch.Tensor, cfg: dict = CLAP_AUDIO_CFG) -> torch.Tensor:
    """CLAP's log mel spectrogram ``[frames, mel_bins]`` of a 1-D signal (dB, no top_db)."""
    n_fft, hop = cfg["window_size"], cfg["hop_size"]
    wave = wave.to(torch.float32)
    spec = torch.stft(wave, n_fft=n_fft, hop_length=hop, win_length=n_fft,
                      window=torch.hann_window(n_fft, dtype=torch.float32), center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    power = spec.abs().pow(2.0)  # [freqs, frames]
    banks = torch.from_numpy(htk_mel_banks(n_fft // 2 + 1, cfg["fmin"], cfg["fmax"],
                                           cfg["mel_bins"], cfg["sample_rate"]))
    mel = (power.T @ banks)  # [frames, mels]
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


def quantise_int16(wave: np.ndarray) -> np.ndarray:
    """CLAP's int16 round trip: clip to [-1, 1], scale by 32767, truncate, scale back."""
    return (np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16).astype(np.float32) / 32767.0


def _repeat_pad(wave: torch.Tensor, length: int) -> torch.Tensor:
    n = wave.shape[0]
    if n == 0:
        return torch.zeros(length)
    repeats = length // n
    wave = wave.repeat(repeats)
    return F.pad(wave, (0, length - wave.shape[0]))


def _middle(values: list[int]) -> int:
    return values[(len(values) - 1) // 2]


def clap_inputs(wave: np.ndarray, fusion: bool, cfg: dict = CLAP_AUDIO_CFG,
                max_len: int = CLAP_MAX_SAMPLES) -> dict:
    """One item's inputs for ``CLAP.get_audio_embedding``: ``waveform``, ``longer`` and, for
    fusion models, ``mel_fusion [4, frames, mel_bins]``. Deterministic (see module doc)."""
    audio = torch.from_numpy(quantise_int16(np.asarray(wave, dtype=np.float32)))
    sample: dict = {}
    if audio.shape[0] > max_len:
        longer = False
        if fusion:
            mel = htk_mel_db(audio, cfg)
            chunk = max_len // cfg["hop_size"] + 1
            total = mel.shape[0]
            if chunk == total:
                sample["mel_fusion"] = torch.stack([mel] * 4, dim=0)
            else:
                ranges = np.array_split(np.arange(0, total - chunk + 1), 3)
                starts = [_middle(list(r)) if len(r) else 0 for r in ranges]
                chunks = [mel[s:s + chunk] for s in starts]
                shrink = F.interpolate(mel[None, None], size=(chunk, cfg["mel_bins"]),
                                       mode="bilinear", align_corners=False,
                                       antialias=True)[0, 0]
                sample["mel_fusion"] = torch.stack([shrink, *chunks], dim=0)
                longer = True
        start = (audio.shape[0] - max_len) // 2
        audio = audio[start:start + max_len]
    else:
        longer = False
        if audio.shape[0] < max_len:
            audio = _repeat_pad(audio, max_len)
        if fusion:
            mel = htk_mel_db(audio, cfg)
            sample["mel_fusion"] = torch.stack([mel] * 4, dim=0)
    sample["longer"] = torch.tensor([longer])
    sample["waveform"] = audio
    return sample


def seconds(n_samples: int, rate: int) -> float:
    return n_samples / rate if rate else math.nan


# --- reading only the frames a space uses ---------------------------------------------------
def _sinc_half(orig: int, new: int, zero_crossings: int = 6, rolloff: float = 0.99) -> int:
    """:func:`sinc_resample`'s kernel reach, in input frames either side (0: same rate)."""
    if orig == new:
        return 0
    return int(math.ceil(zero_crossings * orig / (min(orig, new) * rolloff)))


#: the fewest input frames :func:`sinc_window` reads (see there)
SINC_MIN_FRAMES = 1 << 15


def sinc_window(frames: int, src_rate: int, dst_rate: int, first: int,
                stop: int) -> tuple[int, int, int]:
    """``(start, count, skip)``: :func:`sinc_resample` of input frames ``[start, start +
    count)`` gives, from its output sample ``skip`` on, output samples ``first..stop`` of the
    whole ``frames`` resampled, with the same numbers: ``start`` is a multiple of the reduced
    rate ratio's input step (the kernels' phases match) and the window holds every input
    sample (or the file's edge) those outputs' kernels reach, and one frame more.

    The window is at least :data:`SINC_MIN_FRAMES` long (or the whole file): PyTorch runs a
    one-row convolution of at most 20,480 samples on another kernel than a longer one, and
    the two round float32 differently (1 ulp, which the log of a band emptied by upsampling
    turns into 1e-4)."""
    g = math.gcd(int(src_rate), int(dst_rate))
    orig, new = int(src_rate) // g, int(dst_rate) // g
    half = _sinc_half(orig, new)
    start = max(0, ((first // new) * orig - half) // orig * orig)
    end = min(frames, ((stop - 1) // new) * orig + half + orig + 1)
    if end - start < SINC_MIN_FRAMES:
        end = min(frames, start + SINC_MIN_FRAMES)
        start = max(0, (end - SINC_MIN_FRAMES) // orig * orig)
    return start, end - start, first - (start // orig) * new


def imagebind_audio_file(path) -> torch.Tensor:
    """:func:`imagebind_audio` of a file, decoding only its three 2 s clips: the header's
    length gives the 16 kHz length the sampler sees, then each clip's :func:`sinc_window` is
    read (seeking) and resampled. Files whose clips overlap (under 8 s), whose header does
    not know its length, or that hold fewer frames than the header says are decoded whole
    (within the limits), as before: the result is the same either way."""
    from freebind.data import media

    with media.open_audio(path, mono=False) as f:
        clips = _imagebind_clips(f)
    if clips is None:
        return imagebind_audio(media.load_audio(path, IB_RATE, mono=False,
                                                resampler=sinc_resample))
    return imagebind_clip_features(clips)


def _imagebind_clips(f) -> list | None:
    if f.frames is None:
        return None
    g = math.gcd(f.rate, IB_RATE)
    n = int(math.ceil(IB_RATE // g * f.frames / (f.rate // g)))   # sinc_resample's length
    bounds = imagebind_clip_bounds(n)
    if any(b0[1] > b1[0] for b0, b1 in zip(bounds, bounds[1:])):
        return None                       # overlapping clips share their mean shifts
    clips = []
    for a, b in bounds:
        start, count, skip = sinc_window(f.frames, f.rate, IB_RATE, a, b)
        wave = f.read(start, count)
        if wave.shape[-1] < count:
            return None                   # the file is shorter than its header
        clips.append(torch.from_numpy(sinc_resample(wave, f.rate, IB_RATE))[:, skip:skip + b - a])
    return clips


def clap_centre(f, rate: int = CLAP_RATE, length: int = CLAP_MAX_SAMPLES) -> np.ndarray | None:
    """The centre ``length`` samples at ``rate`` of an open file
    (:class:`freebind.data.media.AudioFile`, mono) that :func:`soxr_resample` of the whole
    file gives — what :func:`clap_inputs` keeps of a long file for a non-fusion model — or
    None when the file is not longer (or its length is unknown, or it holds fewer frames than
    its header says). At ``rate`` itself only those frames are read (seeking); at another
    rate the file is streamed through soxr from its start to the window's end, one block
    held at a time (soxr's output does not depend on how its input is fed, but does on where
    it starts, so the frames before the window are decoded, not kept)."""
    if f.frames is None:
        return None
    n = f.frames if f.rate == rate else int(np.ceil(f.frames * (float(rate) / f.rate)))
    if n <= length:
        return None
    first = (n - length) // 2
    if f.rate == rate:
        wave = f.read(first, length)
        return wave if wave.shape[-1] == length else None
    from freebind.spaces import compat

    soxr = compat.require("soxr", "clap")
    stream = soxr.ResampleStream(f.rate, rate, 1, dtype="float32", quality="soxr_hq")
    out = np.zeros(length, dtype=np.float32)       # soxr_resample pads a short output
    made = read = 0
    for block in f.blocks(0):
        read += block.shape[-1]
        made = _keep(stream.resample_chunk(block, last=False), made, first, out)
        if made >= first + length:
            return out
    if read < f.frames:
        return None
    _keep(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True), made, first, out)
    return out


def _keep(y: np.ndarray, made: int, first: int, out: np.ndarray) -> int:
    """Copy the part of output samples ``[made, made + len(y))`` inside ``[first, first +
    len(out))`` into ``out``; the count made so far."""
    lo, hi = max(made, first), min(made + y.shape[0], first + out.shape[0])
    if hi > lo:
        out[lo - first:hi - first] = y[lo - made:hi - made]
    return made + y.shape[0]
