"""The mini world's generator: events, rendering, captions, pools and evaluation sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from freebind.util.errors import UsageError
from freebind.data.media import load_audio, load_image, read_texts
from freebind.mini import CLASSES, EVALSETS, write_evalsets, write_pools
from freebind.mini.captions import (ACOUSTIC_ADJECTIVES, ACOUSTIC_ADVERBS, NOUNS,
                                    caption, caption_spec, paraphrase_pair, render_caption,
                                    tokenize, vocabulary)
from freebind.mini.render import (CLIP_SAMPLES, IMAGE_SIZE, audio_to_float, render_audio,
                                  render_image)
from freebind.mini.world import (ACOUSTIC_ATTRIBUTES, COLOURS, SIZES, TEXTURES, rng,
                                 sample_event)


def test_ontology_is_large_enough():
    assert len(CLASSES) >= 16 and len(set(CLASSES)) == len(CLASSES)
    assert len(COLOURS) >= 4 and len(SIZES) >= 2 and len(TEXTURES) >= 2
    assert set(ACOUSTIC_ATTRIBUTES) == {"loudness", "pitch", "rhythm"}


def test_random_streams_are_keyed_by_purpose():
    a = rng("train", "bind", 0).integers(0, 1 << 30, 8)
    assert np.array_equal(a, rng("train", "bind", 0).integers(0, 1 << 30, 8))
    assert not np.array_equal(a, rng("evalset", "bind", 0).integers(0, 1 << 30, 8))
    assert not np.array_equal(a, rng("train", "bind", 1).integers(0, 1 << 30, 8))
    with pytest.raises(ValueError):
        rng("nonsense", 0)


def test_rendering_is_deterministic_and_well_formed():
    e = sample_event(np.random.default_rng(3))
    img1 = render_image(e, np.random.default_rng(5))
    img2 = render_image(e, np.random.default_rng(5))
    assert img1.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and img1.dtype == np.uint8
    assert np.array_equal(img1, img2)
    wav1 = render_audio(e, np.random.default_rng(5))
    assert wav1.shape == (CLIP_SAMPLES,) and wav1.dtype == np.int16
    assert np.array_equal(wav1, render_audio(e, np.random.default_rng(5)))
    assert not np.array_equal(wav1, render_audio(e, np.random.default_rng(6)))


def _rms_db(samples):
    x = audio_to_float(samples).astype(np.float64)
    return 10 * np.log10(np.mean(x ** 2) + 1e-12)


def _centroid(samples):
    x = audio_to_float(samples)
    mag = np.abs(np.fft.rfft(x))
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    return float((mag * f).sum() / mag.sum())


def test_acoustic_attributes_are_in_the_waveform():
    g = np.random.default_rng(0)
    for cls in ("dog", "bell", "engine", "flute"):
        base = sample_event(g, cls=cls).with_values(rhythm="continuous")
        loud = [_rms_db(render_audio(base.with_values(loudness="loud"), g)) for _ in range(4)]
        quiet = [_rms_db(render_audio(base.with_values(loudness="quiet"), g)) for _ in range(4)]
        assert min(loud) > max(quiet) + 6, cls
        lows = [_centroid(render_audio(base.with_values(pitch="low", loudness="loud"), g))
                for _ in range(4)]
        highs = [_centroid(render_audio(base.with_values(pitch="high", loudness="loud"), g))
                 for _ in range(4)]
        assert np.mean(highs) > np.mean(lows), cls
    # rhythm: a single note leaves much of the clip near-silent, a continuous sound does not
    e = sample_event(g, cls="flute").with_values(loudness="loud")
    env = lambda w: np.abs(audio_to_float(w)).reshape(50, -1).max(axis=1)  # noqa: E731
    single = env(render_audio(e.with_values(rhythm="single"), g))
    cont = env(render_audio(e.with_values(rhythm="continuous"), g))
    assert (single < 0.05 * single.max()).mean() > 0.3
    assert (cont < 0.05 * cont.max()).mean() < 0.1


def test_classes_are_not_separable_by_level_alone():
    """Loudness is an attribute, not a class cue: every class spans both levels."""
    g = np.random.default_rng(1)
    levels = {c: [_rms_db(render_audio(sample_event(g, cls=c), g)) for _ in range(12)]
              for c in ("dog", "cow", "clock", "siren")}
    spans = [(min(v), max(v)) for v in levels.values()]
    assert all(hi - lo > 10 for lo, hi in spans)
    assert max(lo for lo, _ in spans) < min(hi for _, hi in spans)


def test_visual_attributes_are_in_the_image():
    g = np.random.default_rng(2)
    base = sample_event(g, cls="cat").with_values(texture="plain")

    def coverage(img):  # foreground pixels are saturated, the background is greyish
        f = img.astype(float)
        return ((f.max(axis=2) - f.min(axis=2)) > 60).mean()

    small = [coverage(render_image(base.with_values(size="small"), g)) for _ in range(5)]
    large = [coverage(render_image(base.with_values(size="large"), g)) for _ in range(5)]
    assert min(large) > 2 * max(small)
    red = render_image(base.with_values(colour="red", size="large"), g).astype(float)
    blue = render_image(base.with_values(colour="blue", size="large"), g).astype(float)
    mask_r = (red[..., 0] - red[..., 2]) > 80
    mask_b = (blue[..., 2] - blue[..., 0]) > 80
    assert mask_r.mean() > 0.1 and mask_b.mean() > 0.1


def test_captions_name_the_class_and_use_the_vocabulary():
    g = np.random.default_rng(4)
    vocab = set(vocabulary())
    for _ in range(300):
        e = sample_event(g)
        text = caption(e, g, ("audio", "image", "both")[int(g.integers(3))])
        words = tokenize(text)
        assert set(words) <= vocab, text
        assert any(all(w in words for w in tokenize(n)) for n in NOUNS[e.cls]), text


def test_acoustic_variants_differ_only_in_acoustic_words():
    g = np.random.default_rng(5)
    e = sample_event(g).with_values(loudness="loud", pitch="low", rhythm="single")
    spec = caption_spec(g, ("colour", "loudness", "pitch", "rhythm"), allow_picture=False)
    a = tokenize(render_caption(e, spec))
    b = tokenize(render_caption(e.with_values(loudness="quiet", rhythm="repeated"), spec))
    acoustic = set()
    for table in (ACOUSTIC_ADVERBS, ACOUSTIC_ADJECTIVES):
        for by_value in table.values():
            for phrases in by_value.values():
                for p in phrases:
                    acoustic.update(tokenize(p))
    diff = {w for w in set(a) ^ set(b)}
    assert diff and diff <= acoustic
    s1, s2 = paraphrase_pair(e, g, ("loudness", "rhythm"))
    assert render_caption(e, s1) != render_caption(e, s2)


def test_write_pools_is_unpaired_deterministic_and_decodable(tmp_path):
    a = write_pools(tmp_path / "a", n_audio=6, n_image=5, n_text=7, seed=3)
    write_pools(tmp_path / "b", n_audio=6, n_image=5, n_text=7, seed=3)
    c = tmp_path / "c"
    write_pools(c, n_audio=6, n_image=5, n_text=7, seed=4)
    assert a["counts"] == {"audio": 6, "image": 5, "text": 7}
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file())
    assert len([f for f in files if f.suffix == ".wav"]) == 6
    assert len([f for f in files if f.suffix == ".png"]) == 5
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a/audio/audio_00000.wav").read_bytes() != \
        (c / "audio/audio_00000.wav").read_bytes()
    wave = load_audio(tmp_path / "a/audio/audio_00002.wav", 16000)
    assert wave.shape == (16000,)
    assert load_image(tmp_path / "a/image/image_00004.png").size == (IMAGE_SIZE, IMAGE_SIZE)
    assert len(read_texts(tmp_path / "a/texts.txt")) == 7
    assert json.loads((tmp_path / "a/pools.json").read_text())["seed"] == 3
    assert not list((tmp_path / "a").rglob("*.tmp*"))


def test_pool_files_match_in_memory_rendering(tmp_path):
    """What a space encodes from disk equals what training renders in memory."""
    write_pools(tmp_path, n_audio=2, n_image=2, n_text=0, seed=9)
    g = rng("pool", "audio", 9, 1)
    e = sample_event(g)
    expected = audio_to_float(render_audio(e, g))
    assert np.array_equal(load_audio(tmp_path / "audio/audio_00001.wav", 16000), expected)
    g = rng("pool", "image", 9, 0)
    e = sample_event(g)
    assert np.array_equal(np.asarray(load_image(tmp_path / "image/image_00000.png")),
                          render_image(e, g))


def test_bad_pool_arguments_raise_usage_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        write_pools(tmp_path / "file", n_audio=1, n_image=1, n_text=1)
    with pytest.raises(UsageError, match="n_audio"):
        write_pools(tmp_path / "p", n_audio=-1)
    with pytest.raises(UsageError, match="seed"):
        write_pools(tmp_path / "p", n_audio=1, seed=-2)
    with pytest.raises(UsageError, match="unknown mini evaluation set"):
        write_evalsets(tmp_path / "e", suites=["nope"])


@pytest.fixture(scope="module")
def small_evalsets(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalsets")
    index = write_evalsets(root, seed=0, items=20)
    return root, index


def _rows(path: Path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_evalsets_index_lists_every_suite(small_evalsets):
    root, index = small_evalsets
    assert set(index["suites"]) == set(EVALSETS)
    assert json.loads((root / "evalsets.json").read_text()) == index
    assert all(spec["items"] >= 200 for spec in EVALSETS.values())


def test_audiocaps_layout(small_evalsets):
    root, _ = small_evalsets
    rows = _rows(root / "audiocaps/test.csv")
    assert list(rows[0]) == ["audiocap_id", "youtube_id", "start_time", "caption"]
    by_clip = {}
    for r in rows:
        by_clip.setdefault(r["youtube_id"], []).append(r["caption"])
    assert len(by_clip) == 20 and all(len(v) == 5 for v in by_clip.values())
    assert len({r["audiocap_id"] for r in rows}) == 100
    for yid in by_clip:
        assert load_audio(root / "audiocaps/audio" / f"{yid}.wav", 16000).shape == (16000,)


def test_clotho_and_esc50_layouts(small_evalsets):
    root, _ = small_evalsets
    rows = _rows(root / "clotho/clotho_captions_evaluation.csv")
    assert list(rows[0]) == ["file_name", *(f"caption_{k}" for k in range(1, 6))]
    assert len(rows) == 20 and all((root / "clotho/evaluation" / r["file_name"]).is_file()
                                   for r in rows)
    meta = _rows(root / "esc50/meta/esc50.csv")
    assert list(meta[0]) == ["filename", "fold", "target", "category", "esc10", "src_file",
                             "take"]
    assert len(meta) == 20 and {int(r["fold"]) for r in meta} <= {1, 2, 3, 4, 5}
    for r in meta:
        assert CLASSES[int(r["target"])] == r["category"]
        assert r["filename"].endswith(f"-{r['target']}.wav")
        assert (root / "esc50/audio" / r["filename"]).is_file()


def test_karpathy_layouts(small_evalsets):
    root, _ = small_evalsets
    for name, folder in (("coco", "val2014"), ("flickr30k", "flickr30k-images")):
        data = json.loads((root / name / f"dataset_{name}.json").read_text())
        assert data["dataset"] == name
        test = [im for im in data["images"] if im["split"] == "test"]
        assert len(test) == 20 and any(im["split"] == "val" for im in data["images"])
        for im in test:
            assert len(im["sentences"]) == 5 and im["sentences"][0]["raw"]
            assert (root / name / folder / im["filename"]).is_file()
        if name == "coco":
            assert all(im["filepath"] == "val2014" for im in data["images"])


def test_imagenet_and_vggss_layouts(small_evalsets):
    root, _ = small_evalsets
    names = (root / "imagenet/classnames.txt").read_text().splitlines()
    assert names == [c.replace("_", " ") for c in CLASSES]
    synsets = sorted(p.name for p in (root / "imagenet/val").iterdir())
    mapping = [ln.split(" ", 1) for ln in
               (root / "imagenet/LOC_synset_mapping.txt").read_text().splitlines()]
    assert [m[0] for m in mapping] == synsets and [m[1] for m in mapping] == names
    assert sum(len(list((root / "imagenet/val" / s).glob("*.png"))) for s in synsets) == 20
    entries = json.loads((root / "vggss/vggss.json").read_text())
    manifest = _rows(root / "vggss/manifest.csv")
    assert len(entries) == len(manifest) == 20
    for e, m in zip(entries, manifest):
        assert m["audio"] == f"audio/{e['file']}.wav" and m["image"] == f"frames/{e['file']}.png"
        assert (root / "vggss" / m["audio"]).is_file() and (root / "vggss" / m["image"]).is_file()


def test_no_single_trivial_audio_feature_separates_the_classes():
    """5-NN on level, spectral centroid or peak frequency alone stays far from what the
    trained encoders reach (mini:clap ~0.9 zero-shot); chance is 0.05."""
    g = np.random.default_rng(0)
    freqs = np.fft.rfftfreq(CLIP_SAMPLES, 1 / 16000)

    def feats(samples):
        x = audio_to_float(samples).astype(np.float64)
        mag = np.abs(np.fft.rfft(x))
        return [10 * np.log10(np.mean(x ** 2) + 1e-12),
                np.log((mag * freqs).sum() / mag.sum()), np.log(freqs[mag.argmax()] + 1)]

    def data(per_class):
        evs = [sample_event(g, cls=c) for c in CLASSES for _ in range(per_class)]
        return (np.array([feats(render_audio(e, g)) for e in evs]),
                np.array([e.label for e in evs]))

    xtr, ytr = data(20)
    xte, yte = data(8)
    mu, sd = xtr.mean(0), xtr.std(0)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    for col in range(3):
        d = (xte[:, None, col] - xtr[None, :, col]) ** 2
        nn = np.argsort(d, axis=1)[:, :5]
        pred = np.array([np.bincount(ytr[r], minlength=len(CLASSES)).argmax() for r in nn])
        assert (pred == yte).mean() < 0.4, col
