"""Audio front ends of the real adapters against known answers.

The reference arrays in tests/data/audio_frontends_ref.npz were computed with torchaudio
2.11's own Python implementations (``compliance.kaldi.fbank`` with ImageBind's arguments;
``functional.spectrogram`` + ``melscale_fbanks`` + ``amplitude_to_DB`` with LAION-CLAP's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freebind.spaces import audio_features as af

REF = np.load(Path(__file__).resolve().parents[1] / "support" / "audio_frontends_ref.npz")


def test_kaldi_fbank_matches_torchaudio_reference():
    mine = af.kaldi_fbank(torch.from_numpy(REF["ib_signal"])).numpy()
    assert mine.shape == REF["ib_fbank"].shape == (48, 128)
    # measured 8.4e-5 (log energy); docs/real-spaces.md states < 1e-4
    np.testing.assert_allclose(mine, REF["ib_fbank"], atol=1e-4, rtol=0)


def test_clap_mel_db_matches_torchaudio_reference():
    mine = af.htk_mel_db(torch.from_numpy(REF["clap_signal"])).numpy()
    assert mine.shape == REF["clap_meldb"].shape == (21, 64)
    # dB of low-energy bins amplifies float32 rounding of the FFT: measured 3.1e-4 dB
    # (7.7e-5 relative); docs/real-spaces.md states < 5e-4 dB
    np.testing.assert_allclose(mine, REF["clap_meldb"], atol=5e-4, rtol=0)


def test_kaldi_fbank_of_a_tone_peaks_at_its_mel_bin():
    rate = 16000
    t = np.arange(rate) / rate
    fb = af.kaldi_fbank(torch.from_numpy(np.sin(2 * np.pi * 1000 * t).astype(np.float32)))
    banks = af.kaldi_mel_banks(128, 512, rate)
    expected = int(np.argmax(banks[:, 32]))  # 1000 Hz is FFT bin 32 at 31.25 Hz per bin
    assert int(fb.mean(0).argmax()) == expected


@pytest.mark.parametrize("seconds, expected", [
    (5.0, [(0, 32000), (16000, 48000), (32000, 64000)]),   # starts every (5-2)/3 = 1 s
    (1.0, [(0, 32000)] * 3),                                 # short: three clips from 0
    (2.0, [(0, 32000)] * 3),
    (8.0, [(0, 32000), (32000, 64000), (64000, 96000)]),
])
def test_imagebind_clip_bounds_follow_the_constant_clips_sampler(seconds, expected):
    assert af.imagebind_clip_bounds(int(seconds * af.IB_RATE)) == expected


def test_imagebind_audio_shape_padding_and_normalisation():
    wave = (0.1 * np.sin(np.arange(16000) * 0.3)).astype(np.float32)  # 1 s: frames padded
    x = af.imagebind_audio(wave)
    assert x.shape == (3, 1, 128, 204)
    frames = 1 + (16000 - 400) // 160  # 98 real frames, the rest zero-padded
    pad_value = (0 - af.IB_MEAN) / af.IB_STD
    assert torch.allclose(x[0, 0, :, frames:], torch.full((128, 204 - frames), pad_value))
    assert torch.allclose(x[0], x[1], atol=1e-4) and torch.allclose(x[1], x[2], atol=1e-4)


def test_imagebind_audio_tiny_file_does_not_crash():
    x = af.imagebind_audio(np.zeros(100, dtype=np.float32))
    assert x.shape == (3, 1, 128, 204) and torch.isfinite(x).all()


def test_clap_short_clip_is_repeat_padded_and_quantised():
    wave = np.linspace(-0.5, 0.5, 200000, dtype=np.float32)
    d = af.clap_inputs(wave, fusion=False)
    q = af.quantise_int16(wave)
    w = d["waveform"].numpy()
    assert w.shape == (480000,)
    np.testing.assert_array_equal(w[:200000], q)
    np.testing.assert_array_equal(w[200000:400000], q)  # int(480000/200000) = 2 repeats
    assert not w[400000:].any()
    assert d["longer"].tolist() == [False] and "mel_fusion" not in d


def test_clap_long_clip_centre_crop_and_fusion_are_deterministic():
    rng = np.random.default_rng(3)
    wave = (0.2 * rng.standard_normal(48000 * 25)).astype(np.float32)
    a = af.clap_inputs(wave, fusion=True)
    b = af.clap_inputs(wave, fusion=True)
    assert a["longer"].tolist() == [True]
    assert a["mel_fusion"].shape == (4, 1001, 64)
    assert torch.equal(a["mel_fusion"], b["mel_fusion"])
    start = (wave.shape[0] - 480000) // 2
    np.testing.assert_array_equal(a["waveform"].numpy(),
                                  af.quantise_int16(wave)[start:start + 480000])
    # the three chunks come from the middle of the front/middle/back thirds of the starts
    mel = af.htk_mel_db(torch.from_numpy(af.quantise_int16(wave)))
    total = mel.shape[0]
    ranges = np.array_split(np.arange(total - 1001 + 1), 3)
    for k, r in enumerate(ranges, start=1):
        s = int(r[(len(r) - 1) // 2])
        assert torch.equal(a["mel_fusion"][k], mel[s:s + 1001])


def test_clap_fusion_short_clip_repeats_the_mel_four_times():
    d = af.clap_inputs(np.ones(48000, dtype=np.float32) * 0.1, fusion=True)
    m = d["mel_fusion"]
    assert m.shape == (4, 1001, 64)
    assert all(torch.equal(m[0], m[i]) for i in range(1, 4))
