"""What verbs use when not told: the last build, the only bundle here, suite data, pools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freebind.run import implicit as defaults
from freebind.evaluate import suite_data
from freebind.util.errors import UsageError


def _bundle(path: Path) -> Path:
    """A real (tiny) bundle file at ``path``."""
    from tests.fusion.test_bundle import make_space

    make_space().save(path)
    return path


def test_no_target_no_record_no_bundle_is_one_line(home):
    with pytest.raises(UsageError) as err:
        defaults.default_target()
    msg = str(err.value)
    assert "\n" not in msg and "no target given" in msg and "freebind build" in msg


def test_the_only_bundle_here_is_the_default(home):
    _bundle(home / "a.safetensors")
    r = defaults.default_target()
    assert (r.value, r.why) == ("a.safetensors", "the only bundle here")
    assert r.describe("evaluating") == "evaluating a.safetensors (the only bundle here)"


def test_several_bundles_and_no_record_lists_them(home):
    _bundle(home / "b.safetensors")
    _bundle(home / "a.safetensors")
    with pytest.raises(UsageError, match=r"2 bundles in .*\(a\.safetensors, b\.safetensors\)"):
        defaults.default_target()


def test_the_last_build_wins_over_the_folder(home):
    _bundle(home / "a.safetensors")
    _bundle(home / "b.safetensors")
    built = _bundle(home / "out" / "built.safetensors")
    defaults.record_build(built, "x + c(y)")
    record = json.loads((home / "home" / "last_build.json").read_text())
    assert record["path"] == str(built.resolve()) and record["expression"] == "x + c(y)"
    r = defaults.default_target()
    assert (r.value, r.why) == (str(Path("out") / "built.safetensors"), "the last build")
    # a record whose bundle is gone is ignored
    built.unlink()
    with pytest.raises(UsageError, match="2 bundles"):
        defaults.default_target()


def test_given_targets_are_kept(home):
    assert [r.value for r in defaults.resolve_targets(["mini:bind", "x.safetensors"])] == \
        ["mini:bind", "x.safetensors"]
    assert defaults.resolve_targets(["mini:bind"])[0].describe("evaluating") == \
        "evaluating mini:bind"


def test_all_mini(home):
    assert suite_data.all_mini(["mini:bind", "mini:clap"])
    assert not suite_data.all_mini(["mini:bind", "IB"])
    assert not suite_data.all_mini([])


def test_freebind_data_folder_is_used(home, monkeypatch):
    (home / "data" / "audiocaps").mkdir(parents=True)
    monkeypatch.setenv("FREEBIND_DATA", str(home / "data"))
    r = suite_data.suite_data("audiocaps", ["IB"])
    assert (r.value, r.why) == (str(home / "data" / "audiocaps"), "$FREEBIND_DATA/audiocaps")


def test_real_target_without_data_names_variable_folder_and_layout(home, monkeypatch):
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    with pytest.raises(UsageError) as err:
        suite_data.suite_data("audiocaps", ["IB"])
    msg = str(err.value)
    assert "\n" not in msg
    assert "$FREEBIND_DATA is not set" in msg and "test.csv" in msg and "audiocaps/" in msg
    monkeypatch.setenv("FREEBIND_DATA", str(home / "nowhere"))
    with pytest.raises(UsageError, match=str(home / "nowhere" / "coco") + " does not exist"):
        suite_data.suite_data("coco", ["IB"])


def test_a_suite_the_mini_world_lacks_is_not_invented(home, monkeypatch):
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    with pytest.raises(UsageError, match="no data for suite audioset"):
        suite_data.suite_data("audioset", ["mini:bind"])


def test_mini_evalsets_written_once_and_equal_to_mini_evalsets(home, monkeypatch, tmp_path):
    """The default mini data is what ``freebind mini evalsets`` writes (seed 0), once."""
    from freebind.mini import write_evalsets

    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    r = suite_data.suite_data("esc50", ["mini:bind", "mini:clap"], cache_dir=tmp_path / "c")
    folder = Path(r.value)
    assert r.why == "the mini evaluation set" and folder.name == "esc50"
    stamp = (folder / "meta" / "esc50.csv").stat().st_mtime_ns
    again = suite_data.suite_data("esc50", ["mini:bind"], cache_dir=tmp_path / "c")
    assert again.value == r.value
    assert (folder / "meta" / "esc50.csv").stat().st_mtime_ns == stamp  # not rewritten
    write_evalsets(tmp_path / "ref", seed=0, suites=["esc50"])
    ref = tmp_path / "ref" / "esc50"
    ours = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert ours == sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    for rel in ours:
        assert (folder / rel).read_bytes() == (ref / rel).read_bytes(), rel
    assert not list((tmp_path / "c").glob("*.tmp-*"))  # no scratch left behind


def test_declared_pools(home):
    assert defaults.declared_pools() is None
    (home / "home").mkdir()
    (home / "home" / "pools.json").write_text('{"text": "t.txt"}')
    assert defaults.declared_pools() == home / "home" / "pools.json"


def test_a_last_build_in_another_folder_is_named_not_used(home, monkeypatch):
    built = _bundle(home / "elsewhere" / "built.safetensors")
    defaults.record_build(built, "x + c(y)")
    (home / "work").mkdir()
    monkeypatch.chdir(home / "work")
    with pytest.raises(UsageError) as err:
        defaults.default_target()
    msg = str(err.value)
    assert "\n" not in msg and str(built.resolve()) in msg and "name it" in msg
    # a bundle here wins over a last build elsewhere
    _bundle(home / "work" / "here.safetensors")
    assert defaults.default_target().value == "here.safetensors"
    # below the current folder the last build is used
    monkeypatch.chdir(home)
    r = defaults.default_target()
    assert (r.value, r.why) == (str(Path("elsewhere") / "built.safetensors"), "the last build")


def test_tune_stores_presets_only_in_a_named_bundle(home, monkeypatch):
    import freebind
    from tests.evaluate.test_eval import make_audiocaps, make_bundle

    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "only.safetensors")
    result = freebind.tune(None, ["audiocaps"], [home / "ac"], ["a=0,1"], out=home / "o",
                           progress=False)
    assert not result.saved and "tuned-versatile" not in freebind.load(bundle).presets
    result = freebind.tune(str(bundle), ["audiocaps"], [home / "ac"], ["a=0,1"],
                           out=home / "o", progress=False)
    assert result.saved and "tuned-versatile" in freebind.load(bundle).presets
