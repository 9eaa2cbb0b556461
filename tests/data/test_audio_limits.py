"""Bounded audio decoding (freebind.data.audio_limits): the header checked before decoding,
only the frames a space uses read, crafted bombs refused or read in bounded memory."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import audio_bombs as ab  # noqa: E402  (tests/support)

from freebind.data.audio_limits import AudioLimits, bounded, centre_window, current
from freebind.data.media import fit_length, load_audio, resample
from freebind.util.errors import MediaError


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bombs")
    return {"high_rate": ab.high_rate(d), "many_channels": ab.many_channels(d),
            "long_silence": ab.long_silence(d), "unknown_length": ab.unknown_length(d),
            "lying": ab.lying_wav(d), "clip": ab.clip_in_silence(d)}


@pytest.mark.parametrize("rate", [16_000, 44_100, 48_000, 22_050, 8_000, 96_000])
@pytest.mark.parametrize("seconds", [5.3, 0.05, 2.0])
def test_centre_window_gives_the_whole_files_centre(tmp_path, rate, seconds):
    import soundfile as sf

    rng = np.random.default_rng(rate)
    x = (rng.normal(size=(int(rate * seconds) + 37, 2)) * 0.3).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(str(path), x, rate, subtype="FLOAT")
    whole = x.mean(axis=1)
    whole = resample(whole, rate, 16_000) if rate != 16_000 else whole
    want = fit_length(whole, 32_000)
    got = fit_length(load_audio(path, 16_000, length=32_000), 32_000)
    np.testing.assert_array_equal(got, want)


def test_centre_window_reads_a_filters_reach_around_the_kept_samples():
    start, count, skip = centre_window(10 * 44_100, 44_100, 16_000, 32_000)
    # the centre 2 s of 10 s: output samples 64000..96000 ≈ input 176400..264600
    assert start % 441 == 0 and start <= 176_400 - 10 * 441 // 160
    assert start + count >= 264_600 + 10 * 441 // 160 and count < 100_000
    assert skip == 64_000 - start * 160 // 441
    assert centre_window(1000, 16_000, 16_000, 32_000) == (0, 1000, 0)


@pytest.mark.parametrize("name, words", [
    ("high_rate", "sample rate 655350 Hz is over the limit of 384000 Hz"),
    ("many_channels", "1024 audio channels; the limit is 16"),
    ("long_silence", "18000 s of audio is over the limit of 14400 s"),
])
def test_bombs_refused_from_the_header_in_bounded_memory(bombs, name, words):
    path = bombs[name]
    got = ab.peak_growth_mb(f"load_audio({str(path)!r}, 16000)")
    assert got["outcome"].startswith("refused") and words in got["outcome"], got
    assert got["mb"] < 16, got          # nothing decoded: the header only


def test_unknown_length_is_read_to_the_limit_only(bombs):
    path = bombs["unknown_length"]
    code = ("with audio_limits.bounded(audio_limits.AudioLimits(max_seconds=30)):\n"
            f"    load_audio({str(path)!r}, 16000)")
    got = ab.peak_growth_mb(code)
    assert "gives no length" in got["outcome"] and "1440000 frames" in got["outcome"], got
    assert got["mb"] < 16, got           # 30 s of mono float32: 5.8 MB
    # under the default limits the file is read to its end (120 s, 23 MB), never past it
    got = ab.peak_growth_mb(f"load_audio({str(path)!r}, 16000)")
    assert got["mb"] < 64, got


def test_a_lying_header_bounds_what_is_read(bombs):
    wave = load_audio(bombs["lying"], 16_000)
    assert wave.shape == (16_000,)       # what the header claims, not the 60 s held


def test_a_long_recording_reads_only_the_centre_the_space_uses(bombs):
    from freebind.mini.features import load_waves
    from freebind.mini.render import CLIP_SAMPLES

    path = bombs["clip"]
    whole = load_audio(path, 16_000)      # 600 s: 38 MB of float32
    np.testing.assert_array_equal(load_waves([path])[0], fit_length(whole, CLIP_SAMPLES))
    code = ("from freebind.mini.features import load_waves\n"
            f"load_waves([{str(path)!r}])")
    windowed = ab.peak_growth_mb(code)
    full = ab.peak_growth_mb(f"load_audio({str(path)!r}, 16000)")
    assert windowed["outcome"] == full["outcome"] == "decoded"
    assert windowed["mb"] < 4 and full["mb"] > 30, (windowed, full)


def test_limits_are_per_context_and_checked_before_decoding(bombs, tmp_path):
    import soundfile as sf

    path = tmp_path / "cd.wav"
    sf.write(str(path), np.zeros(44_100, dtype=np.float32), 44_100)
    seen = {}
    with bounded(AudioLimits(max_rate=22_050)):
        with pytest.raises(MediaError, match="44100 Hz is over the limit of 22050 Hz"):
            load_audio(path, 16_000)
        t = threading.Thread(target=lambda: seen.update(limits=current()))
        t.start()
        t.join()
    assert seen["limits"] == AudioLimits() == current()
    assert load_audio(path, 16_000).shape == (16_000,)
    with bounded(AudioLimits(max_samples=1000)):
        with pytest.raises(MediaError, match="the limit is 1000"):
            load_audio(path, 16_000)
