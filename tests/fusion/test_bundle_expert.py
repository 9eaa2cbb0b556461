"""A bundle is usable wherever a space is: as a registry entry (``fused.safetensors``,
``bundle:PATH@preset``) it encodes like the bundle itself and can be bound again as an
expert of a new bond."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from build_world import register_world, write_world  # noqa: E402

import freebind  # noqa: E402
from freebind import spaces  # noqa: E402
from freebind.build.orchestrator import build  # noqa: E402
from freebind.util.errors import FreebindError  # noqa: E402

HYPER = {"hidden": 32, "epochs": 2, "batch": 32, "threads": 1}


def test_a_bundle_bound_again_as_an_expert(home):
    register_world()
    world = home / "w"
    write_world(world, n=60)
    build("test:base + c(test:at)", pools=world, output=home / "b.safetensors",
          cache_dir=home / "c", hyper=HYPER, progress=False)
    texts = ["caption 3", "caption 17", "caption 42"]
    inner = freebind.load(home / "b.safetensors", preset="versatile")
    as_space = spaces.get("bundle:b.safetensors@versatile")
    assert spaces.info("b.safetensors").family == "bundle"
    assert (as_space.dim, as_space.modalities) == (24, ("audio", "image", "text"))
    np.testing.assert_allclose(as_space.encode("text", texts).numpy(),
                               inner.encode("text", texts).numpy(), rtol=1e-6, atol=1e-7)

    plan = freebind.plan("test:vl + c(b.safetensors, t=0.5)")
    assert plan.spaces["b.safetensors"]["dim"] == 24
    outer = build("test:vl + c(b.safetensors, t=0.5)", pools=world,
                  output=home / "outer.safetensors", cache_dir=home / "c", hyper=HYPER,
                  progress=False)
    assert outer.dim == 16 and "audio" in outer.modalities   # audio comes from the bundle
    # t=0: the new combination keeps the base's text embeddings exactly (n(u) = u)
    base_text = spaces.get("test:vl").encode("text", texts).numpy()
    np.testing.assert_allclose(outer.with_factors("t=0").encode("text", texts).numpy(),
                               base_text, rtol=1e-5, atol=1e-6)
    assert not np.allclose(outer.encode("text", texts).numpy(), base_text, atol=1e-3)
    with pytest.raises(FreebindError, match="no such bundle file"):
        freebind.plan("test:vl + c(missing.safetensors)")
