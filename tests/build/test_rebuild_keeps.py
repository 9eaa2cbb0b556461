"""A rebuild never loses what a user made in the bundle it replaces: the same graph keeps
its presets, tuning records and recorded results (stamped with the weights they were
measured on); another graph, or a file that is not a bundle, stops the build before any
work unless ``force`` (issue 34)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from build_world import world_folder  # noqa: E402

from freebind.build.orchestrator import build  # noqa: E402
from freebind.fusion import bundle as bundle_io  # noqa: E402
from freebind.util.errors import UsageError  # noqa: E402

FAST = {"hidden": 32, "batch": 64, "epochs": 2, "patience": 2, "threads": 1}
EXPR = "test:base + c(test:at)"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_folder(tmp_path_factory)


def _user_work(path):
    """What a user adds after a build: a tuned preset with its record, a recorded result."""
    from freebind.evaluate.runner import record_evaluation

    bundle_io.store_presets(path, {"tuned-versatile": ["a=0.25"]},
                            {"tuned-versatile": {"suites": {"audiocaps": {"items": {}}},
                                                 "grid": {"a": [0.0, 0.25]}}})
    record_evaluation(path, {"dataset": "audiocaps", "preset": None, "factor_overrides": [],
                             "metrics": {"t2a_R@1": 0.5}, "task": "retrieval",
                             "data": "sets/audiocaps", "protocol": {"missing": 0},
                             "freebind_version": "test"})
    return bundle_io.read_metadata(path)


def _build(world, tmp_path, out, expr=EXPR, seed=3, **kw):
    lines = []
    fused = build(expr, pools=world, output=out, cache_dir=tmp_path / "c", hyper=FAST,
                  seed=seed, progress=False, log=lines.append, **kw)
    return fused, lines


def test_rebuild_of_the_same_graph_keeps_presets_records_and_results(world, tmp_path):
    from freebind_cli.info import render
    from freebind_cli.common import console

    out = tmp_path / "f.safetensors"
    _build(world, tmp_path, out)
    before = _user_work(out)
    assert bundle_io.user_made(before) == {"presets": ["tuned-versatile"],
                                           "evaluation": ["audiocaps"]}
    # the same plan, the same seed: the same weights, everything kept as it was
    fused, lines = _build(world, tmp_path, out)
    meta = bundle_io.read_metadata(out)
    assert meta["presets"]["tuned-versatile"] == ["a=0.25"]
    assert meta["weights_fingerprint"] == before["weights_fingerprint"] \
        == fused.weights_fingerprint
    record = meta["tuning"]["presets"]["tuned-versatile"]
    assert record["grid"] == {"a": [0.0, 0.25]}
    assert record["weights"] == before["weights_fingerprint"]
    assert meta["evaluation"]["audiocaps"]["default"]["metrics"] == {"t2a_R@1": 0.5}
    assert any("are kept in the new bundle" in line and "tuned-versatile" in line
               for line in lines), lines
    # another seed: the same graph, other weights; kept, and marked as measured on the old
    fused, _ = _build(world, tmp_path, out, seed=4)
    meta = bundle_io.read_metadata(out)
    assert meta["weights_fingerprint"] == fused.weights_fingerprint \
        != before["weights_fingerprint"]
    assert meta["tuning"]["presets"]["tuned-versatile"]["weights"] == \
        before["weights_fingerprint"]
    assert meta["evaluation"]["audiocaps"]["default"]["weights"] == \
        before["weights_fingerprint"]
    import freebind

    assert freebind.load(out, preset="tuned-versatile").factors["b1"]["factors"]["audio"] \
        == 0.25
    con = console()
    with con.capture() as cap:
        render(meta, con)
    shown = cap.get()
    assert "(on an earlier build's weights)" in shown and "(earlier build)" in shown


def test_another_graph_stops_before_any_work_unless_forced(world, tmp_path):
    out = tmp_path / "g.safetensors"
    _build(world, tmp_path, out)
    _user_work(out)
    kept = out.read_bytes()
    fresh = tmp_path / "fresh-cache"
    with pytest.raises(UsageError) as info:
        build("test:base + c(test:at, a=0.3)", pools=world, output=out, cache_dir=fresh,
              hyper=FAST, progress=False)
    msg = str(info.value)
    assert "\n" not in msg and "preset(s) tuned-versatile" in msg and "audiocaps" in msg
    assert "--force" in msg and str(out) in msg
    assert out.read_bytes() == kept and not fresh.exists()      # nothing done, nothing lost
    _, lines = _build(world, tmp_path, out, "test:base + c(test:at, a=0.3)", force=True)
    meta = bundle_io.read_metadata(out)
    assert "tuned-versatile" not in meta["presets"] and "evaluation" not in meta
    assert any(line.startswith("--force: overwriting") for line in lines)


def test_a_file_that_is_not_a_bundle_is_not_overwritten_unasked(world, tmp_path):
    out = tmp_path / "notes.safetensors"
    out.write_text("my notes")
    with pytest.raises(UsageError, match="pass --force"):
        _build(world, tmp_path, out)
    assert out.read_text() == "my notes"
    _build(world, tmp_path, out, force=True)
    assert bundle_io.read_metadata(out)["expression"]
    # a bundle with nothing a user made is rebuilt without a word
    _, lines = _build(world, tmp_path, out, "test:base + c(test:at, a=0.3)")
    assert not any("kept" in line or "force" in line for line in lines)


def test_cli_force_flag(world, tmp_path):
    from freebind_cli.main import app

    out = tmp_path / "h.safetensors"
    _build(world, tmp_path, out)
    _user_work(out)
    args = ["build", "test:base + c(test:at, a=0.3)", "--pools", str(world), "-o", str(out),
            "--cache-dir", str(tmp_path / "c"), "-q", "--hyper", "hidden=32", "--hyper",
            "epochs=2", "--hyper", "batch=64", "--hyper", "threads=1"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "--force" in r.output
    r = CliRunner().invoke(app, [*args, "--force"])
    assert r.exit_code == 0, r.output
    assert "tuned-versatile" not in bundle_io.read_metadata(out)["presets"]


def test_the_library_refuses_a_bundle_name_that_is_not_safetensors(tmp_path):
    """``freebind.build(output="out.txt")`` is refused before any work, as ``build -o`` is."""
    import freebind
    from freebind.util.errors import UsageError

    for bad, words in ((tmp_path / "out.txt", "name it"), (tmp_path, "is a folder")):
        with pytest.raises(UsageError, match=words):
            freebind.build("mini:bind + c(mini:clap)", output=bad, cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists() and not (tmp_path / "out.txt").exists()
