"""The real audio spaces read only the frames they use (freebind.spaces.audio_features):
ImageBind's three 2 s clips by seeking, a non-fusion LAION-CLAP model's centre 10 s; the
features equal, bit for bit, those of the whole file decoded then cut, at every sample rate
and length, and a 1-hour file no longer grows memory by its decoded size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import audio_bombs as ab  # noqa: E402  (tests/support)

from freebind.data.media import load_audio, open_audio
from freebind.spaces import audio_features as af

RATES = [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 96_000]


def _write(path, rate: int, seconds: float, channels: int, seed: int = 0, **kw):
    import soundfile as sf

    rng = np.random.default_rng(seed)
    n = int(rate * seconds) + 11
    t = np.arange(n) / rate
    tone = 0.3 * np.sin(2 * np.pi * 330 * t)[:, None] * np.linspace(1, 0.4, channels)
    x = (tone + 0.05 * rng.standard_normal((n, channels))).astype(np.float32)
    sf.write(str(path), x, rate, **({"subtype": "PCM_24"} | kw))
    return path


def _imagebind_whole(path):
    return af.imagebind_audio(load_audio(path, af.IB_RATE, mono=False,
                                         resampler=af.sinc_resample))


# seconds: shorter than a clip, one clip exactly, clips just apart (the first seeking), long
@pytest.mark.parametrize("seconds", [1.3, 2.0, 8.0, 12.7])
@pytest.mark.parametrize("rate", RATES)
def test_imagebind_clips_read_by_seeking_equal_the_whole_file_cut(tmp_path, rate, seconds):
    for channels in (1, 2):
        path = _write(tmp_path / f"a{channels}.flac", rate, seconds, channels, seed=rate)
        with open_audio(path, mono=False) as f:
            seeks = af._imagebind_clips(f) is not None
        assert seeks == (seconds >= 8), (rate, seconds, channels)
        got = af.imagebind_audio_file(path)
        assert got.shape == (3, 1, 128, 204)
        assert torch.equal(got, _imagebind_whole(path)), (rate, seconds, channels)


@pytest.mark.parametrize("fmt, subtype", [("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"),
                                          ("WAV", "FLOAT")])
def test_seeking_is_exact_in_compressed_formats_too(tmp_path, fmt, subtype):
    path = _write(tmp_path / f"a.{fmt.lower()}", 44_100, 13.0, 2, format=fmt, subtype=subtype)
    assert torch.equal(af.imagebind_audio_file(path), _imagebind_whole(path))
    with open_audio(path) as f:
        centre = af.clap_centre(f)
    whole = af.clap_inputs(load_audio(path, af.CLAP_RATE, resampler=af.soxr_resample), False)
    assert torch.equal(af.clap_inputs(centre, False)["waveform"], whole["waveform"])


def test_a_short_window_would_round_differently():
    """Why sinc_window reads at least SINC_MIN_FRAMES: a one-row convolution of under
    20,480 samples runs on another kernel; at 8 kHz → 16 kHz (an emptied upper band) the
    1-ulp differences reach the features."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(1, 8_000 * 37)) * 0.3).astype(np.float32)
    whole = af.sinc_resample(x, 8_000, 16_000)
    a, b = 186_666, 218_666
    start, count, skip = af.sinc_window(x.shape[1], 8_000, 16_000, a, b)
    assert count >= af.SINC_MIN_FRAMES
    got = af.sinc_resample(x[:, start:start + count], 8_000, 16_000)[:, skip:skip + b - a]
    np.testing.assert_array_equal(got, whole[:, a:b])
    tight = 93_326   # the kernel's reach alone: 16,015 frames
    short = af.sinc_resample(x[:, tight:tight + 16_015], 8_000, 16_000)[:, 14:14 + b - a]
    assert 0 < np.abs(short - whole[:, a:b]).max() < 1e-6


@pytest.mark.parametrize("seconds", [2.5, 10.0, 10.01, 14.3])   # 10.01: soxr flushed
@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000, 96_000])
def test_clap_centre_equals_the_whole_file_cropped(tmp_path, rate, seconds):
    path = _write(tmp_path / "a.flac", rate, seconds, 2, seed=rate)
    whole = load_audio(path, af.CLAP_RATE, resampler=af.soxr_resample)
    want = af.clap_inputs(whole, False)
    with open_audio(path) as f:
        centre = af.clap_centre(f)
    if whole.shape[0] <= af.CLAP_MAX_SAMPLES:          # 10 s or less: decoded whole
        assert centre is None
        return
    got = af.clap_inputs(centre, False)
    assert set(got) == set(want) == {"waveform", "longer"}
    assert torch.equal(got["waveform"], want["waveform"])
    assert torch.equal(got["longer"], want["longer"])


def test_a_header_without_a_length_goes_the_whole_files_way(tmp_path):
    """No length, no clip positions: such a file takes load_audio's path (read to the limit
    and refused past it; libsndfile 1.2 cannot read this one at all) with its outcome."""
    from freebind.util.errors import MediaError

    path = ab.unknown_length(tmp_path, seconds=12.0)
    with open_audio(path, mono=False) as f:
        assert f.frames is None and af._imagebind_clips(f) is None
        assert af.clap_centre(f) is None
    with pytest.raises(MediaError) as whole:
        _imagebind_whole(path)
    with pytest.raises(MediaError) as seeking:
        af.imagebind_audio_file(path)
    assert str(seeking.value) == str(whole.value)


@pytest.fixture(scope="module")
def hour(tmp_path_factory):
    """An hour of silence with 3 s of noise at its centre: 16 kHz (decodes whole to 220 MB)
    and 48 kHz (660 MB: over the default 2^26-sample limit, refused whole)."""
    d = tmp_path_factory.mktemp("hour")
    return {rate: ab.clip_in_silence(d, 3600.0, rate) for rate in (16_000, 48_000)}


def test_an_hour_long_file_is_read_in_bounded_memory(hour, tmp_path):
    from freebind.util.errors import MediaError

    small = _write(tmp_path / "warm.flac", 16_000, 30.0, 1)
    af.imagebind_audio_file(small)                      # warm up: imports, kernels
    with open_audio(small) as f:
        af.clap_centre(f)
    long16, long48 = hour[16_000], hour[48_000]
    assert ab.whole_decode_mb(long16) > 200 and ab.whole_decode_mb(long48) > 600
    mb, feats = ab.peak_during_mb(lambda: af.imagebind_audio_file(long16))
    assert mb < 24 and feats.shape == (3, 1, 128, 204), mb
    for path in (long16, long48):                       # streamed through soxr / seeking
        def centre(path=path):
            with open_audio(path) as f:
                return af.clap_centre(f)
        mb, wave = ab.peak_during_mb(centre)
        assert mb < 24 and wave.shape == (af.CLAP_MAX_SAMPLES,), (path, mb)
        # the noise at the file's centre is what is kept
        assert np.abs(wave[af.CLAP_MAX_SAMPLES // 2 - 1000:][:2000]).max() > 0.01
    with pytest.raises(MediaError, match="the limit is 67108864"):
        load_audio(long48, af.CLAP_RATE)                # whole: refused before decoding
