"""freebind.build: pools → embeddings → pseudo tuples → trained jobs → bundle."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from build_world import N, register_world, write_world  # noqa: E402

import freebind  # noqa: E402
from freebind.build.orchestrator import build  # noqa: E402
from freebind.build.pools import PoolError, resolve_pools  # noqa: E402

FAST = {"hidden": 32, "batch": 64, "epochs": 3, "patience": 2, "threads": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    register_world()
    root = tmp_path_factory.mktemp("world")
    return write_world(root), root


def test_resolve_pools_from_flags_and_file(world, tmp_path):
    paths, root = world
    p = resolve_pools(audio=paths["audio"], text=paths["text"])
    assert p.counts() == {"audio": N, "text": N}
    assert p.items["text"][3] == "caption 3"
    q = resolve_pools(pools=root / "pools.json")
    assert q.counts() == {"audio": N, "image": N, "text": N}
    assert resolve_pools(pools=root).counts() == q.counts()  # a folder with pools.json
    with pytest.raises(PoolError, match="no such"):
        resolve_pools(audio=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PoolError, match="no audio files"):
        resolve_pools(audio=tmp_path / "empty")


def test_build_sequential_bonds_saves_a_loadable_bundle(world, tmp_path):
    paths, root = world
    out = tmp_path / "fused.safetensors"
    fused = build("test:base + d(test:vl) + c(test:at)", pools=root / "pools.json",
                  output=out, cache_dir=tmp_path / "cache", hyper=FAST, progress=False)
    rep = fused.build_report
    assert rep.output == str(out) and out.is_file()
    assert [j.id for j in rep.jobs] == ["j1", "j2"]
    j1, j2 = rep.jobs
    assert (j1.source, j1.target) == ("test:base", "test:vl")
    assert (j2.source, j2.target) == ("test:at", "test:base + d(test:vl)")
    assert j1.tuples == 3 * N and j1.modes == ["mix", "A", "T", "V", "AT", "AV", "TV"]
    assert 1 <= j1.epochs <= 3 and np.isfinite(j1.val_loss)
    # the expert aligns audio-text; the base chains nothing here
    assert "via test:at" in j2.routes["audio->text"]
    assert "via test:base + d(test:vl)" in j2.routes["audio->image"]
    assert rep.encoded == 3 * N + 2 * N + 2 * N and rep.reused == 0
    loaded = freebind.load(out)
    assert loaded.dim == 16 and set(loaded.modalities) == {"audio", "image", "text"}
    meta = loaded.metadata
    assert set(meta["spaces"]) == {"test:base", "test:vl", "test:at"}
    assert meta["training"]["j2"]["epochs"] == j2.epochs
    assert meta["data"]["audio"]["items"] == N
    emb = loaded.encode("text", ["caption 1", "caption 2"])
    assert emb.shape == (2, 16)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    same = fused.encode("text", ["caption 1", "caption 2"])
    torch.testing.assert_close(emb, same)


def test_same_seed_identical_bundle_and_nothing_reencoded(world, tmp_path):
    paths, root = world
    kw = dict(audio=paths["audio"], text=paths["text"], hyper=FAST, progress=False)
    expr = "test:base + c(test:at)"
    # two independent caches: training itself is deterministic
    a = build(expr, output=tmp_path / "a.safetensors", seed=3, cache_dir=tmp_path / "c1", **kw)
    b = build(expr, output=tmp_path / "b.safetensors", seed=3, cache_dir=tmp_path / "c2", **kw)
    c = build(expr, output=tmp_path / "c.safetensors", seed=4, cache_dir=tmp_path / "c1", **kw)
    assert a.build_report.encoded == 4 * N and not a.build_report.jobs[0].cached
    assert not b.build_report.jobs[0].cached
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "c.safetensors").read_bytes()
    # a rebuild over the same cache re-encodes nothing and reuses the trained job
    d = build(expr, output=tmp_path / "d.safetensors", seed=3, cache_dir=tmp_path / "c1", **kw)
    assert d.build_report.encoded == 0 and d.build_report.reused == 4 * N
    assert d.build_report.jobs[0].cached and not c.build_report.jobs[0].cached
    assert (tmp_path / "d.safetensors").read_bytes() == (tmp_path / "a.safetensors").read_bytes()
    # no image pool: the group has the modes of audio and text only
    assert a.build_report.jobs[0].modes == ["mix", "A", "T"]


def test_sequential_rebuild_retrains_only_jobs_whose_inputs_changed(world, tmp_path):
    paths, root = world
    kw = dict(pools=root, hyper=FAST, progress=False, cache_dir=tmp_path / "c")
    first = build("test:base + d(test:vl) + c(test:at)", output=tmp_path / "a.safetensors",
                  **kw)
    assert [j.cached for j in first.build_report.jobs] == [False, False]
    # same first bond, other option on the second: j1 reused, j2 trained
    second = build("test:base + d(test:vl) + c(test:at, temp=0.1)",
                   output=tmp_path / "b.safetensors", **kw)
    assert [j.cached for j in second.build_report.jobs] == [True, False]
    t1 = first.projectors["j1"].tensors("j1")
    t2 = second.projectors["j1"].tensors("j1")
    assert all(torch.equal(t1[k], t2[k]) for k in t1)


def test_combination_improves_audio_text_alignment(world, tmp_path):
    """The base's audio-text alignment is weak (noisy maps); binding the audio-text expert
    with the AT-expertise factors must retrieve better than the base alone."""
    paths, root = world
    fused = build("test:base + c(test:at)", pools=root, cache_dir=tmp_path / "c",
                  output=tmp_path / "f.safetensors",
                  hyper={**FAST, "epochs": 8, "hidden": 64}, progress=False)
    from build_world import WorldSpace

    # paired evaluation items: audio id i and text id i share a latent only if we give them
    # one; build such pairs from the text latents
    from build_world import SPACES, _latents

    z = _latents("text")[N:N + 100]  # held-out latents
    def embed(name, modality):
        mods, dim, noise = SPACES[name]
        s = WorldSpace(name, mods, dim, noise)
        e = z @ (s.maps["shared"] + s.noise[modality])
        return torch.from_numpy((e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32))

    def r1(a, t):
        return float(((a @ t.T).argmax(1) == torch.arange(len(a))).float().mean())

    inputs = {"test:base": {"audio": embed("test:base", "audio"),
                            "text": embed("test:base", "text")},
              "test:at": {"audio": embed("test:at", "audio"), "text": embed("test:at", "text")}}
    base_r1 = r1(inputs["test:base"]["audio"], inputs["test:base"]["text"])
    out = fused.fuse(inputs, preset="at-expertise")
    fused_r1 = r1(out["audio"], out["text"])
    assert fused_r1 > base_r1 + 0.1, (base_r1, fused_r1)


def test_missing_pools_for_real_spaces_is_a_clear_error(tmp_path, home):
    with pytest.raises(PoolError, match="no pools given") as err:
        build("IB + d(InternVL)", cache_dir=tmp_path, progress=False)
    # the error says where pools may be declared once
    assert str(home / "home" / "pools.json") in str(err.value)


def test_declared_pools_are_used_and_the_build_is_recorded(world, home):
    """``$FREEBIND_HOME/pools.json`` stands in for pools; the bundle becomes the default."""
    import json

    from freebind.run import implicit as defaults

    paths, root = world
    (home / "home").mkdir()
    (home / "home" / "pools.json").write_text(json.dumps(
        {m: str(Path(paths[m]).resolve()) for m in ("audio", "text")}))
    out = home / "declared.safetensors"
    fused = build("test:base + c(test:at)", output=out, cache_dir=home / "cache", hyper=FAST,
                  progress=False)
    assert fused.build_report.pools == {"audio": N, "text": N}
    assert defaults.last_build() == out.resolve()
    assert defaults.default_target().why == "the last build"


def test_unreadable_pool_items_are_skipped_and_reported(world, tmp_path):
    paths, root = world
    bad = tmp_path / "audio"
    bad.mkdir()
    for p in sorted(Path(paths["audio"]).glob("*.wav"))[:60]:
        (bad / p.name).write_bytes(p.read_bytes())
    (bad / "broken.wav").write_bytes(b"RIFF....not a wav")
    fused = build("test:base + c(test:at)", audio=bad, text=paths["text"],
                  cache_dir=tmp_path / "c", output=tmp_path / "x.safetensors", hyper=FAST,
                  progress=False)
    rep = fused.build_report
    assert rep.pools["audio"] == 61
    assert [s["path"].endswith("broken.wav") for s in rep.skipped] == [True]
    assert fused.metadata["data"]["audio"]["items"] == 60


def test_freebind_build_is_the_function_after_the_builder_is_imported(world, tmp_path):
    import freebind.build.orchestrator as module

    # importing the stage package binds it as freebind.build: the package is callable
    assert callable(freebind.build) and freebind.build.__name__ == "freebind.build"
    fused = freebind.build("test:base + c(test:at)", pools=world[1], save=False,
                           cache_dir=tmp_path, hyper=FAST, progress=False)
    assert fused.build_report.output is None and module.build
