"""The CLI's defaults: no TARGET (eval, embed, tune, info) and no --data, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freebind.run import implicit as defaults
from freebind_cli.main import app

runner = CliRunner()


def _mini_bundle(path: Path) -> Path:
    """A bundle over mini spaces (random projectors: only the defaults are under test)."""
    from tests.fusion.test_bundle import make_space

    path.parent.mkdir(parents=True, exist_ok=True)
    make_space("mini:bind + c(mini:clap)").save(path)
    return path


def _run(args, **env):
    return runner.invoke(app, args, env={"COLUMNS": "200", **env})


@pytest.fixture
def bundle(home):
    return _mini_bundle(home / "only.safetensors")


def test_info_without_target_uses_the_only_bundle(bundle):
    r = _run(["info"])
    assert r.exit_code == 0, r.output
    assert "showing only.safetensors (the only bundle here)" in r.output
    assert "mini:bind + c(mini:clap)" in r.output


def test_info_with_several_bundles_is_one_line(bundle, home):
    _mini_bundle(home / "other.safetensors")
    r = _run(["info"])
    assert r.exit_code == 2
    assert "2 bundles in" in r.output and "only.safetensors, other.safetensors" in r.output
    assert "Traceback" not in r.output


def test_eval_without_anything_uses_the_bundle_and_the_mini_set(bundle, home, monkeypatch):
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    r = _run(["eval", "--suite", "esc50", "--json", "--cache-dir", str(home / "cache")])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "evaluating only.safetensors (the only bundle here)"
    data_line = next(line for line in lines if line.endswith("(the mini evaluation set)"))
    assert data_line.startswith("esc50: /")
    records = json.loads(r.output[r.output.index("\n[") + 1:])
    assert records[0]["dataset"] == "esc50" and records[0]["model"].startswith("only")
    # the same as naming both explicitly
    folder = data_line.split(": ", 1)[1].rsplit(" (", 1)[0]
    r2 = _run(["eval", "only.safetensors", "--suite", "esc50", "--data", folder, "--json",
               "--cache-dir", str(home / "cache")])
    assert r2.exit_code == 0, r2.output
    explicit = json.loads(r2.output[r2.output.index("["):])
    records[0].pop("seconds"), explicit[0].pop("seconds")
    assert explicit[0]["metrics"] == records[0]["metrics"]


def test_eval_real_target_without_data_is_one_line(home, monkeypatch):
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    r = _run(["eval", "IB", "--suite", "audiocaps"])
    assert r.exit_code == 1       # weights missing here: not a usage error
    err = [line for line in r.output.splitlines() if line.strip()]
    # one message: the weights (offline here), then the data, each one line
    assert err[0] == "error: cannot evaluate IB, 2 problems:", r.output
    assert "1. IB: weights missing" in err[1] and "freebind download IB" in err[1]
    assert "2. no data" in err[2] and "FREEBIND_DATA" in err[2] and "test.csv" in err[2]
    assert len(err) == 3


def test_eval_freebind_data_is_looked_up(bundle, home, monkeypatch):
    monkeypatch.setenv("FREEBIND_DATA", str(home / "data"))
    (home / "data" / "coco").mkdir(parents=True)
    r = _run(["eval", "--suite", "coco"])
    # the folder is found (and is empty: the suite loader's own one-line error follows)
    assert f"coco: {home / 'data' / 'coco'} ($FREEBIND_DATA/coco)" in r.output
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_eval_with_nothing_here_is_one_line(home):
    r = _run(["eval", "--suite", "audiocaps"])
    assert r.exit_code == 2 and "no target given" in r.output and "freebind build" in r.output


def test_embed_without_target_embeds_with_the_last_build(bundle, home):
    import numpy as np

    other = _mini_bundle(home / "sub" / "built.safetensors")
    defaults.record_build(other, "mini:bind + c(mini:clap)")
    (home / "texts.txt").write_text("a dog barks\na bell rings\n")
    r = _run(["embed", "--texts", str(home / "texts.txt"), "-o", str(home / "out"), "-q"])
    assert r.exit_code == 0, r.output
    assert f"embedding with {Path('sub') / 'built.safetensors'} (the last build)" in r.output
    got = np.load(home / "out" / "text_emb" / "text_emb_0.npy")
    r2 = _run(["embed", str(other), "--texts", str(home / "texts.txt"), "-o",
               str(home / "out2"), "-q"])
    assert r2.exit_code == 0, r2.output
    assert np.array_equal(got, np.load(home / "out2" / "text_emb" / "text_emb_0.npy"))


def test_embed_first_word_a_folder_is_a_path_not_a_target(bundle, home):
    (home / "docs").mkdir()
    (home / "docs" / "a.txt").write_text("a dog barks")
    target, paths = defaults.split_target([str(home / "docs")])
    assert target.value == "only.safetensors" and paths == [str(home / "docs")]
    target, paths = defaults.split_target(["mini:bind", "x"])
    assert (target.value, target.why, paths) == ("mini:bind", "given", ["x"])
    target, _ = defaults.split_target(["b.safetensors@versatile"])
    assert target.value == "b.safetensors@versatile"


def test_tune_without_target_and_data(bundle, home, monkeypatch):
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    r = _run(["tune", "--suite", "esc50", "--grid", "a=0,1", "--no-save", "--json",
              "--out", str(home / "tune"), "--cache-dir", str(home / "cache")])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "tuning only.safetensors (the only bundle here)"
    assert (home / "tune" / "tune.json").is_file()


def test_build_without_pools_names_the_pools_file(home):
    r = _run(["build", "IB + d(InternVL) + c(CLAP)"])
    assert r.exit_code == 1          # the weights are missing here (offline), then the pools
    assert str(home / "home" / "pools.json") in r.output.replace("\n", "")


def test_tune_without_target_does_not_write_the_bundle(bundle, home, monkeypatch):
    import freebind

    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    r = _run(["tune", "--suite", "esc50", "--grid", "a=0,1", "-o", str(home / "tune"),
              "--cache-dir", str(home / "cache")])
    assert r.exit_code == 0, r.output
    assert "not stored (name the bundle to store them)" in r.output
    assert not any(n.startswith("tuned") for n in freebind.load(bundle).presets)
