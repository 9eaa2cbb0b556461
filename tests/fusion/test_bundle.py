"""Bundles: exact round trips, atomic saves, one-line errors for bad files."""

import json
import os

import numpy as np
import pytest
import torch

import freebind
from freebind.fusion import bundle
from freebind.algebra import plan
from freebind.util.errors import BundleError
from freebind.fusion.fused import FusedSpace
from freebind.fusion.projector import ProjectorGroup


def make_space(expr="mini:bind + d(mini:vl) + c(mini:clap, mini:clap2, a=0.8, t=0.5)"):
    p = plan(expr)
    gen = torch.Generator().manual_seed(0)
    proj = {j.id: ProjectorGroup(len(j.data_modes), j.source_dim, j.target_dim, 8,
                                 generator=gen).eval() for j in p.jobs}
    return FusedSpace.from_plan(p, proj, training={"seed": 0}, spaces={
        ref: {**s, "fingerprint": f"fp-{ref}"} for ref, s in p.spaces.items()})


def embeddings(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    dims = {"mini:bind": (64, "audio image text"), "mini:vl": (48, "image text"),
            "mini:clap": (32, "audio text"), "mini:clap2": (40, "audio text")}
    return {ref: {m: torch.randn(n, d, generator=g) for m in mods.split()}
            for ref, (d, mods) in dims.items()}


def test_round_trip_is_exact(tmp_path):
    space = make_space()
    path = space.save(tmp_path / "fused.safetensors")
    loaded = freebind.load(path)
    for name, tensor in space.tensors().items():
        assert torch.equal(loaded.tensors()[name], tensor)
    emb = embeddings()
    a, b = space.fuse(emb), loaded.fuse(emb)
    assert set(a) == {"audio", "image", "text"}
    assert all(torch.equal(a[m], b[m]) for m in a)
    meta = bundle.read_metadata(path)
    assert meta["format_version"] == bundle.FORMAT_VERSION
    assert meta["freebind_version"] == freebind.__version__
    assert meta["expression"] == space.name
    assert meta["spaces"]["mini:vl"]["fingerprint"] == "fp-mini:vl"
    assert meta["training"] == {"seed": 0}
    assert "at-expertise" in meta["presets"]
    assert loaded.fingerprint == space.fingerprint


def test_presets_and_factors_after_load(tmp_path):
    space = make_space()
    path = space.save(tmp_path / "fused.safetensors")
    loaded = freebind.load(path, preset="versatile")
    assert loaded.factors["b2"]["factors"] == {"audio": 0.5, "text": 0.1}
    assert loaded.with_factors("b2.a=0.9").factors["b2"]["factors"]["audio"] == 0.9
    assert loaded.with_factors(a=0.9).fingerprint != loaded.fingerprint
    emb = embeddings()
    off = loaded.fuse(emb, factors=["b2=off", "b1.v=1", "b1.t=1"])
    assert torch.allclose(off["image"], torch.nn.functional.normalize(emb["mini:vl"]["image"],
                                                                      dim=-1))


def test_not_safetensors(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_text("hello, I am not a bundle")
    with pytest.raises(BundleError, match="not a safetensors file"):
        freebind.load(path)


def test_truncated(tmp_path):
    path = make_space().save(tmp_path / "fused.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(BundleError, match="truncated"):
        freebind.load(path)


def test_other_format_version_and_missing_metadata(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "v9.safetensors"
    save_file({"x": np.zeros(2, np.float32)}, str(path),
              metadata={"freebind": json.dumps({"format_version": 9})})
    with pytest.raises(BundleError, match="format version 9; this freebind reads version 1"):
        freebind.load(path)
    save_file({"x": np.zeros(2, np.float32)}, str(path))
    with pytest.raises(BundleError, match="not a freebind bundle"):
        freebind.load(path)


def test_missing_tensors(tmp_path):
    space = make_space()
    path = tmp_path / "fused.safetensors"
    tensors = space.tensors()
    del tensors["j2.w1"]
    bundle.save(path, tensors, {"expression": space.name, "plan": space.plan.to_dict()})
    with pytest.raises(BundleError, match="missing tensors j2.w1"):
        freebind.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(BundleError, match="no such bundle file"):
        freebind.load(tmp_path / "nope.safetensors")


def test_interrupted_save_leaves_no_partial_file(tmp_path, monkeypatch):
    import safetensors.numpy

    path = tmp_path / "fused.safetensors"

    def boom(arrays, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        make_space().save(path)
    assert not path.exists()
    assert os.listdir(tmp_path) == []


def test_overwrite_keeps_old_file_until_complete(tmp_path):
    path = make_space().save(tmp_path / "fused.safetensors")
    before = path.read_bytes()
    make_space("mini:bind + c(mini:clap)").save(path)
    assert path.read_bytes() != before
    assert freebind.load(path).name == "mini:bind + c(mini:clap)"


def test_load_draws_nothing_from_the_global_rng(tmp_path, monkeypatch):
    """Loading allocates the projectors and copies the bundle in: no random initialisation
    (it would be overwritten) and the caller's torch RNG is where it was."""
    path = make_space().save(tmp_path / "fused.safetensors")
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    calls = []
    monkeypatch.setattr(ProjectorGroup, "reset_parameters",
                        lambda self, generator=None: calls.append(self))
    loaded = freebind.load(path)
    assert calls == []
    assert torch.equal(torch.get_rng_state(), state)
    monkeypatch.undo()
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    freebind.load(path)
    assert torch.equal(torch.rand(3), expected)
    emb = embeddings()
    assert all(torch.equal(loaded.fuse(emb)[m], make_space().fuse(emb)[m])
               for m in ("audio", "image", "text"))
