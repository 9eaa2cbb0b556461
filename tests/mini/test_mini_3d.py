"""The mini world in 3D: every class has a fixed shape, events render as coloured clouds,
the shipped mini:3d space (a point tower over mini:vl's towers, Uni3D's role), point pools,
and ``mini:bind + c(mini:3d)``: the fused space gains point while mini:bind's own pairs keep
their band (measured numbers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import freebind
from freebind import spaces
from freebind.data.points import read_cloud
from freebind.mini.roles import heldout, measure_space, recall_at_1
from freebind.mini.shapes import (RGB, TOWER_POINTS, WHITE, class_parts, render_points,
                                  tower_input)
from freebind.mini.world import CLASSES, Event, rng
from freebind.mini.writers import write_pools

MINI3D_OK = all(spaces.info(n).check()[0] for n in ("mini:bind", "mini:vl", "mini:3d"))
needs_mini = pytest.mark.skipif(not MINI3D_OK, reason="mini weights not present")


def _event(**kw):
    base = dict(cls="dog", colour="red", size="large", texture="plain", loudness="loud",
                pitch="low", rhythm="single")
    return Event(**{**base, **kw})


def test_every_class_has_its_own_fixed_shape():
    kinds = {c: tuple(p["kind"] for p in class_parts(c)) for c in CLASSES}
    assert class_parts("dog")[0]["kind"] == "ellipsoid" and len(set(map(len, kinds.values()))) > 1
    first = {c: np.round(class_parts(c)[0]["scale"], 6).tobytes() for c in CLASSES}
    assert len(set(first.values())) == len(CLASSES)           # no two bodies alike
    np.testing.assert_array_equal(class_parts("bell")[1]["centre"],
                                  class_parts("bell")[1]["centre"])


def test_events_render_coloured_textured_clouds():
    xyz, rgb = render_points(_event(), rng("test", "p", 0))
    assert xyz.shape == (1024, 3) and xyz.dtype == np.float32
    np.testing.assert_allclose(rgb, np.rint(rgb * 255) / 255, atol=1e-7)   # bytes, as in PLY
    red = np.asarray(RGB["red"]) / 255
    assert np.abs(rgb - red).max() <= 0.04                  # plain: one colour (+- jitter)
    _, striped = render_points(_event(texture="striped"), rng("test", "p", 0))
    white = np.isclose(striped, np.round(WHITE * 255) / 255, atol=1e-6).all(axis=1)
    assert 0.2 < white.mean() < 0.8
    small, _ = render_points(_event(size="small"), rng("test", "p", 0))
    assert np.abs(small).max() < 0.8 * np.abs(xyz).max()
    again = render_points(_event(), rng("test", "p", 0))
    np.testing.assert_array_equal(again[0], xyz)
    inp = tower_input(xyz, rgb)
    assert inp.shape == (TOWER_POINTS, 6)
    assert np.isclose(np.linalg.norm(inp[:, :3], axis=1).max(), 1.0)


def test_point_pools(tmp_path):
    summary = write_pools(tmp_path, n_audio=1, n_image=1, n_text=1, n_point=3, seed=5)
    assert summary["counts"] == {"audio": 1, "image": 1, "text": 1, "point": 3}
    files = sorted((tmp_path / "point").glob("*.ply"))
    assert len(files) == 3
    cloud = read_cloud(files[0])
    assert cloud.xyz.shape == (1024, 3) and cloud.rgb is not None
    plain = write_pools(tmp_path / "b", n_audio=1, n_image=1, n_text=1)
    assert "point" not in plain["counts"] and not (tmp_path / "b" / "point").exists()


@needs_mini
def test_mini3d_encodes_files_as_its_arrays_and_shares_mini_vl_towers(tmp_path):
    d3, vl = spaces.get("mini:3d"), spaces.get("mini:vl")
    assert d3.modalities == ("image", "text", "point") and d3.dim == 48
    write_pools(tmp_path, n_audio=0, n_image=0, n_text=0, n_point=4, seed=1)
    files = sorted((tmp_path / "point").glob("*.ply"))
    from freebind.mini.shapes import render_points as rp
    from freebind.mini.world import sample_event

    arrays = []
    for i in range(4):
        g = rng("pool", "point", 1, i)
        arrays.append(tower_input(*rp(sample_event(g), g)))
    got = d3.encode("point", files)
    torch.testing.assert_close(got, d3.embed_points(np.stack(arrays)), atol=1e-6, rtol=0)
    texts = ["a photo of a red dog", "a striped bell"]
    torch.testing.assert_close(d3.encode("text", texts), vl.encode("text", texts))


@pytest.fixture(scope="module")
def held():
    return heldout(n=500, seed=0)


@needs_mini
def test_mini3d_roles_far_above_chance(held):
    r = measure_space(spaces.get("mini:3d"), held)
    chance = 1 / 500
    # measured on the shipped weights: p2t 0.318, t2p 0.242, p2i 0.484, i2p 0.444
    for key, at_least in (("p2t", 0.25), ("t2p", 0.19), ("p2i", 0.40), ("i2p", 0.37)):
        assert r[key] >= at_least and r[key] >= 50 * chance, (key, r[key])


def _fused_pairs(fused, held) -> dict:
    bind, d3 = spaces.get("mini:bind"), spaces.get("mini:3d")
    base = {
        "mini:bind": {"audio": bind.embed_waves(held.waves), "image": bind.embed_pixels(
            held.pixels), "ta": bind.embed_texts(held.audio_captions),
            "ti": bind.embed_texts(held.image_captions)},
        "mini:3d": {"image": d3.embed_pixels(held.pixels), "point": d3.embed_points(
            held.clouds), "ti": d3.embed_texts(held.image_captions),
            "ta": d3.embed_texts(held.audio_captions)}}

    def fuse(modality, key):
        inp = {ref: {modality: v[key].numpy()} for ref, v in base.items() if key in v}
        return fused.fuse(inp, modalities=[modality])[modality].numpy()

    e = {k: fuse(m, k) for m, k in (("audio", "audio"), ("image", "image"), ("point", "point"),
                                    ("text", "ta"), ("text", "ti"))}
    b = {k: v.numpy() for k, v in base["mini:bind"].items()}

    def r(x, y):
        s = x @ y.T
        return (recall_at_1(s) + recall_at_1(s.T)) / 2

    return {"fused": {"a-t": r(e["audio"], e["ta"]), "i-t": r(e["image"], e["ti"]),
                      "a-i": r(e["audio"], e["image"]), "p-t": r(e["point"], e["ti"]),
                      "p-i": r(e["point"], e["image"])},
            "bind": {"a-t": r(b["audio"], b["ta"]), "i-t": r(b["image"], b["ti"]),
                     "a-i": r(b["audio"], b["image"])}}


@needs_mini
def test_bind_plus_c_mini3d_gains_point(tmp_path, held):
    fused = freebind.build("mini:bind + c(mini:3d)", output=tmp_path / "f.safetensors",
                           cache_dir=tmp_path / "cache", mini_pool_size=300, progress=False)
    assert fused.modalities == ("audio", "image", "text", "point")
    got = _fused_pairs(fused, held)
    f, b = got["fused"], got["bind"]
    # measured (300-item pools, default hyper-parameters, 500 held-out items, chance 0.002):
    # fused a-t 0.037 i-t 0.290 a-i 0.035 p-t 0.226 p-i 0.359; mini:bind a-t 0.027
    # i-t 0.092 a-i 0.035
    assert f["p-t"] >= 0.15 and f["p-i"] >= 0.25                    # >= 75x chance
    for pair in ("a-t", "i-t", "a-i"):                              # the usual band
        assert f[pair] >= b[pair] - 0.02, (pair, f[pair], b[pair])
    loaded = freebind.load(tmp_path / "f.safetensors")
    ply = tmp_path / "pools"
    write_pools(ply, n_audio=0, n_image=0, n_text=0, n_point=2, seed=9)
    rows = loaded.encode("point", sorted((ply / "point").glob("*.ply")))
    assert rows.shape == (2, 64)


@needs_mini
def test_the_3d_recipe_trains_deterministically_over_the_teachers_towers():
    from freebind.mini.training import render_corpus, train_space

    corpus = render_corpus(256, seed=0, workers=1)
    tiny = {"corpus": (0, 256), "epochs": 1, "towers": {"point": 8}}
    a, meta = train_space("3d", corpus, overrides=tiny, log=lambda m: None)
    b, _ = train_space("3d", corpus, overrides=tiny, log=lambda m: None)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    vl = spaces.get("mini:vl").towers.state_dict()
    for k, v in vl.items():                               # the teacher's towers, unchanged
        assert torch.equal(a[k], v), k
    assert any(k.startswith("point.") for k in a)
    assert meta["teacher"] == spaces.get("mini:vl").fingerprint
    assert json.loads(meta["modalities"]) == ["image", "text", "point"]
