"""Hub references ``hf:ORG/NAME[@REVISION][:FILE][@preset]`` resolved by huggingface_hub
itself from its real cache layout on disk (tests/hub_cache.py), offline."""

from __future__ import annotations


import numpy as np
import pytest

from hub_cache import put  # noqa: E402
from search_world import make_bundle  # noqa: E402

import freebind  # noqa: E402
from freebind.run import hub_refs as hub  # noqa: E402
from freebind import spaces
from freebind.util.errors import SpaceError, UsageError  # noqa: E402

pytest.importorskip("huggingface_hub")

MAIN = "a" * 40
V1 = "b" * 40
TEXTS = ["a dog barking", "rain on a roof", "a violin"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A Hugging Face cache holding ``org/fused``: main (seed 0, two files) and tag v1
    (seed 1), and the environment pointing at it, offline."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    b0 = make_bundle(tmp_path / "b0.safetensors", seed=0)
    b1 = make_bundle(tmp_path / "b1.safetensors", seed=1)
    b2 = make_bundle(tmp_path / "b2.safetensors", "mini:bind + c(mini:clap)", seed=2)
    put(tmp_path / "hf", "org/fused", {"fused.safetensors": b0, "sub/other.safetensors": b2},
        commit=MAIN)
    put(tmp_path / "hf", "org/fused", {"fused.safetensors": b1}, commit=V1, refs=("v1",))
    return tmp_path


@pytest.mark.parametrize("ref, want", [
    ("hf:org/name", ("org/name", None, "fused.safetensors", None)),
    ("hf:org/name@v1", ("org/name", "v1", "fused.safetensors", None)),
    ("hf:org/name@main@versatile", ("org/name", "main", "fused.safetensors", "versatile")),
    ("hf:org/name:at.safetensors", ("org/name", None, "at.safetensors", None)),
    ("hf:org/name:dir/at.safetensors@at-expertise",
     ("org/name", None, "dir/at.safetensors", "at-expertise")),
    ("hf:Org-1/my.model@" + MAIN + ":x.safetensors@p",
     ("Org-1/my.model", MAIN, "x.safetensors", "p")),
])
def test_parse(ref, want):
    got = hub.parse(ref)
    assert (got.repo_id, got.revision, got.filename, got.preset) == want
    assert hub.parse(got.text) == got             # the canonical text parses back


@pytest.mark.parametrize("ref, match", [
    ("hf:name", "not a repository name"),
    ("hf:org/name@a@b@c", "too many"),
    ("hf:org/name@main@", "empty preset"),
    ("hf:org/name:../x.safetensors", "not a file path"),
    ("hf:org/name@a@b:x.safetensors", "one @REVISION"),
])
def test_parse_errors(ref, match):
    with pytest.raises(UsageError, match=match):
        hub.parse(ref)


def test_open_resolves_from_the_cache_and_equals_the_local_bundle(cache):
    target = freebind.open("hf:org/fused")
    local = freebind.open(str(cache / "b0.safetensors"))
    assert target.is_bundle and target.label == "org/fused"
    assert target.path.parent.name == MAIN and target.path.name == "fused.safetensors"
    assert target.path.resolve().parent.name == "blobs"          # the cache's own blob
    assert target.fused.weights_fingerprint == local.fused.weights_fingerprint
    np.testing.assert_array_equal(target.encode("text", TEXTS).numpy(),
                                  local.encode("text", TEXTS).numpy())


def test_revision_file_and_preset(cache):
    seed1 = freebind.load(cache / "b1.safetensors").weights_fingerprint
    assert freebind.open("hf:org/fused@v1").fused.weights_fingerprint == seed1
    assert freebind.open("hf:org/fused@" + V1).fused.weights_fingerprint == seed1
    other = freebind.open("hf:org/fused:sub/other.safetensors@at-expertise")
    assert other.name == "mini:bind + c(mini:clap)" and other.preset == "at-expertise"
    assert other.describe_factors()["b1"]["factors"]["audio"] == 0.8
    assert other.label == "org/fused:sub/other.safetensors@at-expertise"
    pinned = freebind.open("hf:org/fused@main@versatile")
    assert pinned.preset == "versatile"
    want = freebind.open(str(cache / "b0.safetensors") + "@versatile")
    np.testing.assert_array_equal(pinned.encode("text", TEXTS).numpy(),
                                  want.encode("text", TEXTS).numpy())


def test_hub_bundle_as_an_expert_in_an_expression(cache):
    plan = freebind.plan("mini:vl + c(hf:org/fused@v1, t=0.5)")
    assert "hf:org/fused@v1" in plan.spaces
    assert plan.spaces["hf:org/fused@v1"]["dim"] == 48        # the bundle's d(mini:vl) space
    as_space = spaces.get("hf:org/fused@v1")
    direct = freebind.load(cache / "b1.safetensors")
    np.testing.assert_array_equal(as_space.encode("text", TEXTS).numpy(),
                                  direct.encode("text", TEXTS).numpy())


def test_offline_missing_file_is_one_line_naming_repo_file_revision(cache):
    with pytest.raises(SpaceError) as info:
        freebind.open("hf:org/absent@v2:at.safetensors")
    msg = str(info.value)
    assert "\n" not in msg
    for part in ("org/absent", "at.safetensors", "revision v2", "HF_HUB_OFFLINE"):
        assert part in msg
    with pytest.raises(SpaceError, match="org/fused: fused.safetensors of org/fused at "
                                         "revision nope"):
        freebind.open("hf:org/fused@nope")


def test_cli_verbs_take_hub_references(cache):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    runner = CliRunner()
    table = runner.invoke(app, ["info", "hf:org/fused@v1"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "mini:bind + d(mini:vl) + c(mini:clap)" in table.output
    ok = runner.invoke(app, ["info", "hf:org/fused", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"expression": "mini:bind + d(mini:vl) + c(mini:clap)"' in ok.output
    plan = runner.invoke(app, ["plan", "mini:vl + c(hf:org/fused)"])
    assert plan.exit_code == 0, plan.output
    bad = runner.invoke(app, ["info", "hf:org/absent"])
    assert bad.exit_code == 1
    assert "Traceback" not in bad.output
    assert bad.output.strip().startswith("error: hf:org/absent: fused.safetensors of "
                                         "org/absent at revision main")


def test_download_embed_eval_and_tune_with_a_hub_reference(cache):
    import json

    from typer.testing import CliRunner

    from freebind_cli.main import app

    runner = CliRunner()
    got = runner.invoke(app, ["download", "hf:org/fused@v1", "hf:org/absent", "--json"])
    assert got.exit_code == 1                                   # one of two failed
    rows = json.loads(got.output)
    assert rows[0]["ok"] and rows[0]["files"][0].endswith(f"{V1}/fused.safetensors")
    assert len(rows[0]["files"]) == 1           # the mini base spaces ship their weights
    # a real base space's weights are fetched too: offline and missing, that fails
    put(cache / "hf", "org/ib", {"fused.safetensors": make_bundle(
        cache / "ib.safetensors", "IB + c(mini:clap)")}, commit=V1)
    ib = json.loads(runner.invoke(app, ["download", "hf:org/ib", "--json"]).output)[0]
    assert not ib["ok"] and "imagebind" in ib["error"].lower(), ib
    assert not rows[1]["ok"] and "org/absent" in rows[1]["error"]
    (cache / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    emb = runner.invoke(app, ["embed", "hf:org/fused", "--texts", str(cache / "texts.txt"),
                              "-o", str(cache / "emb"), "--json"])
    assert emb.exit_code == 0, emb.output
    parts = sorted((cache / "emb").rglob("text_emb_*.npy"))
    rows = np.concatenate([np.load(p) for p in parts])
    want = freebind.load(cache / "b0.safetensors").encode("text", TEXTS).numpy()
    np.testing.assert_allclose(rows, want, atol=1e-6, rtol=0)
    before = (cache / "hf").joinpath("models--org--fused", "snapshots", MAIN,
                                      "fused.safetensors").read_bytes()
    for args in (["eval", "hf:org/fused", "-s", "audiocaps", "--record"],
                 ["tune", "hf:org/fused", "-s", "audiocaps", "--grid", "a=0:1:0.5"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "cannot" in r.output and "into a bundle in the Hugging Face cache" in r.output
    assert (cache / "hf").joinpath("models--org--fused", "snapshots", MAIN,
                                    "fused.safetensors").read_bytes() == before
