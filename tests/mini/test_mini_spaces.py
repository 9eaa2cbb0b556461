"""The mini spaces: shipped weights, loading through the registry, encoding files from disk,
fingerprints, errors, the training machinery and the measured roles."""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np
import pytest
import torch

from freebind import spaces as registry
from freebind.util.errors import MediaError, SpaceError, UsageError
from freebind.mini import write_pools
from freebind.mini.features import PREPROCESS_VERSION, Tokenizer, log_mel
from freebind.mini.render import audio_to_float, render_audio, render_image
from freebind.mini.spaces import WEIGHTS_DIR, WHICH, load, load_file
from freebind.mini.world import rng, sample_event

DIMS = {"bind": 64, "vl": 48, "clap": 32, "clap2": 40, "3d": 48}


def test_shipped_weights_are_present_and_small():
    files = [WEIGHTS_DIR / f"{w}.safetensors" for w in WHICH]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) <= 10 * 1024 * 1024


@pytest.mark.parametrize("which", WHICH)
def test_registry_lists_and_loads_each_space_quickly(which):
    info = registry.info(f"mini:{which}")
    ok, detail = info.check()
    assert ok, detail
    t0 = time.perf_counter()
    space = load(info, which=which)
    assert time.perf_counter() - t0 < 1.0
    assert space.dim == DIMS[which] == info.dim
    assert space.modalities == info.modalities
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", space.fingerprint)
    data = (WEIGHTS_DIR / f"{which}.safetensors").read_bytes()
    expected = hashlib.sha256(data + b"\0" + PREPROCESS_VERSION.encode()).hexdigest()
    assert space.fingerprint == "sha256:" + expected


def test_fingerprints_differ_between_spaces():
    fps = {load(None, which=w).fingerprint for w in WHICH}
    assert len(fps) == len(WHICH)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("pool")
    write_pools(root, n_audio=5, n_image=5, n_text=6, seed=2)
    return root


def test_encode_files_from_disk_matches_in_memory_rendering(pool):
    space = registry.get("mini:bind")
    audio = sorted((pool / "audio").glob("*.wav"))
    images = sorted((pool / "image").glob("*.png"))
    texts = (pool / "texts.txt").read_text().splitlines()
    ea = space.encode("audio", audio, batch_size=2)
    ei = space.encode("image", images)
    et = space.encode("text", texts)
    for e, n in ((ea, 5), (ei, 5), (et, 6)):
        assert e.shape == (n, 64) and e.dtype == torch.float32
        assert torch.allclose(e.norm(dim=1), torch.ones(n), atol=1e-5)
    g = rng("pool", "audio", 2, 3)
    ev = sample_event(g)
    mem = space.embed_waves(audio_to_float(render_audio(ev, g))[None])
    assert torch.allclose(ea[3], mem[0], atol=1e-6)
    g = rng("pool", "image", 2, 1)
    ev = sample_event(g)
    assert torch.allclose(ei[1], space.embed_pixels(render_image(ev, g)[None])[0], atol=1e-6)
    # deterministic: the same files give the same numbers, batch size does not matter
    assert torch.equal(space.encode("audio", audio, batch_size=5), ea) or \
        torch.allclose(space.encode("audio", audio, batch_size=5), ea, atol=1e-6)


def test_other_sample_rates_and_sizes_are_accepted(tmp_path):
    import soundfile as sf
    from PIL import Image

    g = np.random.default_rng(0)
    ev = sample_event(g)
    wave = audio_to_float(render_audio(ev, g))
    from scipy.signal import resample_poly

    sf.write(tmp_path / "a.wav", np.stack([resample_poly(wave, 3, 1)] * 2, axis=1), 48000)
    Image.fromarray(render_image(ev, g)).resize((80, 60)).save(tmp_path / "b.png")
    space = registry.get("mini:bind")
    assert space.encode("audio", [tmp_path / "a.wav"]).shape == (1, 64)
    assert space.encode("image", [tmp_path / "b.png"]).shape == (1, 64)


def test_bad_inputs_raise_clear_errors(tmp_path):
    clap = registry.get("mini:clap")
    with pytest.raises(UsageError, match="no 'image' encoder"):
        clap.encode("image", ["x.png"])
    with pytest.raises(UsageError, match="not a string"):
        clap.encode("text", ["ok", 3])
    (tmp_path / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(MediaError, match="broken.wav"):
        clap.encode("audio", [tmp_path / "broken.wav"])
    with pytest.raises(UsageError, match="unknown option"):
        load(None, which="bind", colour="red")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(SpaceError, match="bad.safetensors"):
        load(None, which="bind", weights=str(tmp_path / "bad.safetensors"))
    with pytest.raises(SpaceError, match="unknown mini space"):
        load(None, which="huge")
    # a file of another space does not pass as this one
    with pytest.raises(SpaceError, match="registered as 64-d"):
        load(registry.info("mini:bind"), which="bind",
             weights=str(WEIGHTS_DIR / "clap.safetensors"))


def test_tokenizer_maps_unknown_words_to_unk():
    tok = Tokenizer(["a", "dog"])
    ids = tok(["A dog!", "zebra"])
    assert ids.tolist() == [[2, 3], [1, 0]]


def test_log_mel_keeps_loudness():
    g = np.random.default_rng(1)
    ev = sample_event(g).with_values(rhythm="continuous")
    loud = log_mel(audio_to_float(render_audio(ev.with_values(loudness="loud"), g))[None])
    quiet = log_mel(audio_to_float(render_audio(ev.with_values(loudness="quiet"), g))[None])
    assert loud.shape == (1, 48, 63)
    assert loud.mean() > quiet.mean() + 0.2


def test_text_towers_hear_acoustic_words():
    """mini:bind's text tower separates captions differing only in acoustic words, and
    mini:clap's audio tower hears loudness."""
    bind = registry.get("mini:bind")
    t = bind.encode("text", ["a red dog barks loudly", "a red dog barks quietly",
                             "a red dog barks noisily"])
    assert float(t[0] @ t[2]) > float(t[0] @ t[1])
    clap = registry.get("mini:clap")
    g = np.random.default_rng(3)
    ev = sample_event(g, cls="dog").with_values(rhythm="repeated", pitch="low")
    waves = np.stack([audio_to_float(render_audio(ev.with_values(loudness=v), g))
                      for v in ("loud", "quiet")])
    a = clap.embed_waves(waves)
    tx = clap.embed_texts(["a dog barks loudly", "a dog barks quietly"])
    sim = (a @ tx.T).numpy()
    assert sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0]


def test_training_is_deterministic_and_loadable(tmp_path):
    from freebind.mini.training import render_corpus, save_weights, train_space

    corpus = render_corpus(300, seed=5, workers=1)
    tiny = {"corpus": (0, 300), "epochs": 1, "audio_epochs": 1}
    t1, meta = train_space("bind", corpus, seed=5, log=lambda m: None, overrides=tiny)
    t2, _ = train_space("bind", corpus, seed=5, log=lambda m: None, overrides=tiny)
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    save_weights(tmp_path / "bind.safetensors", t1, meta)
    space = load_file(tmp_path / "bind.safetensors")
    assert space.dim == 64 and space.modalities == ("audio", "image", "text")
    assert not list(tmp_path.glob(".*tmp*"))


def test_shipped_spaces_play_their_roles():
    """The README's role table: every role condition (docs/mini-world.md) holds on held-out data."""
    from freebind.mini.roles import measure

    report = measure(n=500, seed=0)
    failed = [c for c in report["conditions"] if not c["ok"]]
    assert not failed, failed
    spaces = report["spaces"]
    assert spaces["mini:clap"]["audio-text"] > 2 * spaces["mini:bind"]["audio-text"]
    assert spaces["mini:clap2"]["audio-text"] > 2 * spaces["mini:bind"]["audio-text"]
    # complementary knowledge: mini:bind's audio knows the class but not loudness, pitch or
    # rhythm (near chance); the CLAP-like experts know them; mini:vl knows texture
    probes = report["probes"]
    assert probes["mini:bind"]["a:class"] > 0.6
    for a, chance in (("a:loudness", 0.5), ("a:pitch", 0.5), ("a:rhythm", 1 / 3)):
        assert probes["mini:bind"][a] < chance + 0.15, a
        assert probes["mini:clap"][a] > 0.9, a
    assert probes["mini:vl"]["i:texture"] > probes["mini:bind"]["i:texture"] + 0.3


#: the shipped mini:clap2's held-out quality (docs/mini-world.md's role table), and how far a
#: retrain on other CPU kernels may land from it: measured here R@1 +0.000 / +0.014, probes up
#: to +0.086 (a:class)
SHIPPED_CLAP2 = {"a2t": 0.208, "t2a": 0.174}
SHIPPED_CLAP2_PROBES = {"a:class": 0.53, "a:loudness": 1.00, "a:pitch": 0.97, "a:rhythm": 0.98}
RETRAIN_R1_BAND, RETRAIN_PROBE_BAND = 0.03, 0.10


@pytest.mark.slow
def test_training_script_reproduces_a_space_bit_for_bit(tmp_path):
    """scripts/train_mini.py rebuilds a space bit for bit from the seed: two runs give the
    same tensors and the same report. They equal the shipped file on a machine with the CPU
    kernels that trained it; float rounding differs between CPU kernel families (AVX2,
    AVX-512, …) and training amplifies it, so elsewhere the shipped weights are another
    machine's run of the same seed: the key layout and shapes are compared, and the retrain's
    held-out R@1 and probes must land within a stated band of the shipped space's."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file as load_tensors

    import os

    root = Path(__file__).resolve().parents[2]
    scratch = tmp_path / "tmp"   # where the runs render their corpus: removed at the end
    scratch.mkdir()
    runs = [subprocess.Popen([sys.executable, str(root / "scripts/train_mini.py"), "--spaces",
                              "clap2", "--out", str(tmp_path / str(i)), "--jobs", "1",
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "TMPDIR": str(scratch)})
            for i in range(2)]
    reports = []
    for r in runs:
        out, err = r.communicate(timeout=1800)
        assert r.returncode == 0, err[-2000:]   # 1 would mean a failed role condition
        report = json.loads(out[out.index("\n{") + 1:] if not out.startswith("{") else out)
        report.pop("timings_s")
        reports.append(report)
    assert reports[0] == reports[1]
    assert list(scratch.iterdir()) == []   # no corpus left behind
    first, second = (load_tensors(str(tmp_path / str(i) / "clap2.safetensors"))
                     for i in range(2))
    shipped = load_tensors(str(WEIGHTS_DIR / "clap2.safetensors"))
    assert first.keys() == second.keys() == shipped.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert all(first[k].shape == shipped[k].shape and first[k].dtype == shipped[k].dtype
               for k in first)
    if all(torch.equal(first[k], shipped[k]) for k in first):
        return   # the kernels that trained the shipped file: equal by value
    got, probes = reports[0]["spaces"]["mini:clap2"], reports[0]["probes"]["mini:clap2"]
    for key, want in SHIPPED_CLAP2.items():
        assert abs(got[key] - want) <= RETRAIN_R1_BAND, (key, got[key], want)
    for key, want in SHIPPED_CLAP2_PROBES.items():
        assert abs(probes[key] - want) <= RETRAIN_PROBE_BAND, (key, probes[key], want)


@pytest.mark.parametrize("modality", ["audio", "image", "text"])
def test_non_finite_output_is_never_returned(pool, modality, monkeypatch, tmp_path):
    from nan_guard import assert_guarded

    space = load(None, which="bind")
    items = {"audio": sorted((pool / "audio").glob("*.wav"))[:3],
             "image": sorted((pool / "image").glob("*.png"))[:3],
             "text": ["a dog barks", "rain on a roof", "a red car"]}[modality]
    assert_guarded(monkeypatch, space, modality, items, 1, tmp_path)
