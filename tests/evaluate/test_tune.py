"""`freebind.tune`: grids, coarse/fine stages on cached embeddings, heatmaps, stored presets
(the CLI's parsing and printing: test_tune_cli.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from freebind.util.errors import UsageError
from freebind.evaluate.tuning import Point, balanced_scores, parse_grid, task_preset_name
from tests.evaluate.test_eval import (TEST_SPACES, make_audiocaps, make_bundle,  # noqa: F401
                             make_esc50, make_vggss)


def tune(bundle, suites, data, grids=(), **kw):
    """The library call, its summary as the JSON that tune.json holds."""
    import freebind

    kw.setdefault("progress", False)
    result = freebind.tune(str(bundle), suites, [data], grids, **kw)
    return result, json.loads(json.dumps(result.summary))


def evaluate(*args, **kw):
    import freebind

    return freebind.evaluate(*args, progress=False, **kw)


def test_parse_grid():
    key, values = parse_grid("a=0:1:0.1")
    assert key == "a" and len(values) == 11 and values[0] == 0.0 and values[-1] == 1.0
    assert values[3] == 0.3
    assert parse_grid("b2.t=0,0.5,1") == ("b2.t", [0.0, 0.5, 1.0])
    for bad in ("a=1:0:0.1", "a=0:1:0", "a", "a=x", "b2=0:1:0.5", "a=0:2:1"):
        with pytest.raises(UsageError):
            parse_grid(bad)


def test_balanced_scores_weigh_tasks_equally():
    pts = [Point([], {}, {"x": 0.9, "y": 0.10}),    # best on x, worst on y
           Point([], {}, {"x": 0.8, "y": 0.30}),    # good on both
           Point([], {}, {"x": 0.7, "y": 0.31})]
    s = balanced_scores(pts, ["x", "y"])
    assert np.argmax(s) == 1
    assert s[0] == pytest.approx(0.5) and s[1] == pytest.approx((0.5 + 20 / 21) / 2)
    assert task_preset_name("tuned", "audiocaps:t2a_R@1") == "tuned-audiocaps-t2a"
    assert task_preset_name("tuned", "esc50:acc1") == "tuned-esc50"


def test_tune_end_to_end(home):
    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    bundle = make_bundle(home / "b.safetensors")
    expert = TEST_SPACES["test:expert"]
    result, res = tune(bundle, ["audiocaps", "esc50"], home / "sets",
                       ["a=0:1:0.25", "t=0:1:0.5"], out=home / "tuneout")
    assert result.path == home / "tuneout" / "tune.json" and result.saved
    assert json.loads(result.path.read_text()) == res
    tasks = ["audiocaps:t2a_R@1", "audiocaps:a2t_R@1", "esc50:acc1"]
    assert res["tasks"] == tasks
    assert len(res["coarse"]) == 2 and len(res["fine"]) == 5 * 3
    # the base space (test:tone) is perfect on these sets
    assert all(res["base"][t] == 1.0 for t in tasks)
    # a=0, t=0: the combination keeps the base embeddings for audio and text -> perfect
    zero = next(p for p in res["fine"] if p["values"] == {"a": 0.0, "t": 0.0})
    assert all(zero["metrics"][t] == 1.0 for t in tasks)
    assert zero["overrides"] == res["coarse_choice"] + ["a=0", "t=0"]
    # the switched-off coarse point equals the base space
    off = next(p for p in res["coarse"] if p["overrides"] == ["b1=off"])
    assert off["metrics"] == res["base"]
    assert Path(res["figure"]).is_file() and Path(res["figure"]).stat().st_size > 10_000
    assert (home / "tuneout" / "tune.json").is_file()
    # presets stored in the bundle; eval accepts them; nothing is encoded again
    import freebind

    fused = freebind.load(bundle)
    for name in ("tuned-versatile", "tuned-audiocaps-t2a", "tuned-audiocaps-a2t", "tuned-esc50"):
        assert name in fused.presets, name
    assert fused.presets["tuned-versatile"] == res["versatile"]["overrides"]
    records = fused.metadata["tuning"]["presets"]
    assert sorted(records["tuned-versatile"]["suites"]) == ["audiocaps", "esc50"]
    esc = records["tuned-esc50"]["suites"]["esc50"]
    # 6 tones × 2 clips; 6 classes × 3 prompt templates
    assert esc["items"] == {"audio": 12, "text": 18} and esc["missing"] == 0
    assert esc["data"] == str((home / "sets" / "esc50").resolve())
    assert records["tuned-esc50"]["grid"] == {"a": [0.0, 0.25, 0.5, 0.75, 1.0],
                                              "t": [0.0, 0.5, 1.0]}
    assert records["tuned-esc50"]["chosen_for"] == "esc50:acc1"
    assert records["tuned-esc50"]["weights"] == fused.weights_fingerprint \
        == fused.metadata["weights_fingerprint"]
    calls = expert.calls
    recs = {x["dataset"]: x for x in evaluate([str(bundle)], ["audiocaps", "esc50"],
                                              [home / "sets"], preset="tuned-versatile")}
    assert recs["audiocaps"]["metrics"]["t2a_R@1"] == res["versatile"]["metrics"][tasks[0]]
    assert recs["esc50"]["metrics"]["acc1"] == res["versatile"]["metrics"][tasks[2]]
    assert expert.calls == calls
    # `freebind.run.partitions` accepts the tuned preset too
    freebind.embed(bundle, [home / "sets" / "audiocaps" / "audio"], output=home / "emb",
                   preset="tuned-audiocaps-t2a", metadata="jsonl", progress=False)
    emb = sorted((home / "emb").rglob("audio_emb_*.npy"))
    assert len(emb) == 1
    got = np.load(emb[0])
    # row by row, in the order the metadata gives (a mix-up of rows must fail)
    part = emb[0].stem.rsplit("_", 1)[1]
    meta = (home / "emb" / "metadata" / f"metadata_{part}.jsonl").read_text().splitlines()
    items = [json.loads(line)["path"] for line in meta if line]
    assert sorted(Path(p).name for p in items) == sorted(
        p.name for p in (home / "sets" / "audiocaps" / "audio").glob("*.wav"))
    want = freebind.load(bundle, preset="tuned-audiocaps-t2a").encode("audio", items).numpy()
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-5)


def test_tune_no_save_and_errors(home):
    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    result, _ = tune(bundle, ["audiocaps"], home / "ac", ["a=0,1"], save=False, out=home / "o")
    assert "tuned-versatile" in result.presets and not result.saved
    import freebind

    assert "tuned-versatile" not in freebind.load(bundle).presets
    with pytest.raises(UsageError, match="needs a bundle") as info:
        tune("test:tone", ["audiocaps"], home / "ac")
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="zz") as info:
        tune(bundle, ["audiocaps"], home / "ac", ["zz=0:1:0.5"])
    assert "--" not in str(info.value)
    with pytest.raises(UsageError, match="a key is given twice"):
        tune(bundle, ["audiocaps"], home / "ac", ["a=0,1", ("a", [0.5])])
    result, res = tune(bundle, ["audiocaps"], home / "ac", {"a": [0, 1]}, save=False,
                       out=home / "o2")
    assert [p["values"] for p in res["fine"]] == [{"a": 0.0}, {"a": 1.0}]


def test_fast_path_equals_generic_fusion(home):
    from freebind.evaluate.runner import load_target, tune_target
    from freebind.evaluate.tuning import LastBondMixer

    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    make_vggss(home / "sets" / "vggss")         # image: a modality only the base space has
    bundle = make_bundle(home / "b.safetensors", seed=3)
    target = load_target(str(bundle))
    suites = [(s, home / "sets" / s, {}) for s in ("audiocaps", "esc50", "vggss")]
    grids = [("a", [0.0, 0.3, 0.7, 1.0]), ("t", [0.0, 0.45, 1.0])]
    built = []
    orig = LastBondMixer.build.__func__

    def spy(cls, *a, **k):
        m = orig(cls, *a, **k)
        built.append(m)
        return m

    LastBondMixer.build = classmethod(spy)
    try:
        fast, _ = tune_target(target, suites, grids, progress=False)
    finally:
        LastBondMixer.build = classmethod(orig)
    slow, _ = tune_target(target, suites, grids, progress=False, use_fast=False)
    assert built and built[0] is not None
    for pf, ps in zip(fast.fine, slow.fine):
        assert pf.overrides == ps.overrides
        assert pf.metrics == pytest.approx(ps.metrics, abs=1e-9), pf.overrides


def test_fast_path_declines_other_grids(home):
    from freebind.evaluate.runner import load_target, tune_target

    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "d.safetensors", expression="test:tone + d(test:expert)")
    target = load_target(str(bundle))
    # the last bond is a displacement: the fast path declines, the generic fusion answers
    res, _ = tune_target(target, [("audiocaps", home / "ac", {})], [("a", [0.0, 1.0])],
                         progress=False)
    assert len(res.fine) == 2
    slow, _ = tune_target(target, [("audiocaps", home / "ac", {})], [("a", [0.0, 1.0])],
                          progress=False, use_fast=False)
    assert [p.metrics for p in res.fine] == [p.metrics for p in slow.fine]


def test_tune_coarse_only_and_one_key_figures(home):
    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    _, res = tune(bundle, ["audiocaps"], home / "ac", out=home / "c", save=False)
    assert res["fine"] == [] and len(res["coarse"]) == 2
    # without a grid the presets come from the coarse combinations
    assert res["presets"]["tuned-versatile"] in ([], ["b1=off"])
    _, res = tune(bundle, ["audiocaps"], home / "ac", ["b1.a=0:1:0.5"], out=home / "l",
                  save=False)
    assert [p["values"] for p in res["fine"]] == [{"b1.a": 0.0}, {"b1.a": 0.5}, {"b1.a": 1.0}]
    for d in ("c", "l"):
        assert (home / d / "factor_analysis.png").stat().st_size > 5_000


def test_store_presets_is_atomic_and_checked(home):
    from freebind.fusion.bundle import store_presets
    import freebind

    bundle = make_bundle(home / "b.safetensors")
    before = bundle.read_bytes()
    with pytest.raises(UsageError):
        store_presets(bundle, {"bad": ["zz.a=0.5"]})
    assert bundle.read_bytes() == before
    assert store_presets(bundle, {"mine": ["a=0.2"]}, {"mine": {"note": 1}}) == {}
    fused = freebind.load(bundle, preset="mine")
    assert fused.factors["b1"]["factors"]["audio"] == 0.2
    assert fused.metadata["tuning"] == {"format": 2, "presets": {"mine": {"note": 1}}}
    assert set(fused.presets) >= {"default", "versatile", "at-expertise", "mine"}
    # replacing says what was there; a preset stored without a record drops the old one
    assert store_presets(bundle, {"mine": ["a=0.3"]}) == {
        "mine": {"factors": ["a=0.2"], "record": {"note": 1}}}
    assert "tuning" not in freebind.load(bundle).metadata


def test_presets_are_the_best_of_every_point_coarse_included():
    """A coarse row (a bond switched off) that beats the whole fine grid is the preset: no
    preset is worse on its task than a row the report printed."""
    import types

    import freebind
    from freebind.evaluate import tuning

    import tests.evaluate.test_eval  # noqa: F401  (registers the test spaces)

    plan = freebind.plan("test:tone + d(test:expert) + c(test:expert)")
    fused = types.SimpleNamespace(graph=plan.graph)
    # the score of a point: switching b1 off is best on "s:x"; the grid is best on "s:y"
    def score(suite, overrides):
        x = 0.9 if overrides == ["b1=off"] else 0.5 - 0.1 * ("t=1" in overrides)
        y = 0.2 + 0.3 * ("t=1" in overrides)
        return {"x_m": x, "y_m": y}

    result = tuning.tune(fused, [("s", None)], [("t", [0.0, 1.0])],
                         tasks_of=lambda s, m: ["x_m", "y_m"],
                         score_base=lambda s: {"x_m": 0.1, "y_m": 0.1},
                         score=score, fuse=lambda overrides: overrides, progress=False)
    assert result.best["s:x_m"].overrides == ["b1=off"]
    assert result.presets["tuned-s-x"] == ["b1=off"]
    assert result.presets["tuned-s-y"] == result.coarse_choice + ["t=1"]
    assert max(p.metrics["s:x_m"] for p in result.fine) < 0.9
    printed = result.coarse + result.fine
    for t, p in result.best.items():
        assert p.metrics[t] == max(q.metrics[t] for q in printed)
    assert result.grid_scope == {"t": ["b1.text", "b2.text"]}
    assert tuning.scope_notes(result.grid_scope) == [
        "t= sets b1.text and b2.text together; name a bond, e.g. b2.t=, to move one"]
    assert tuning.grid_scope(plan.graph, "b2.t") == ["b2.text"]
    assert tuning.grid_scope(plan.graph, "a") == ["b1.audio", "b2.audio"]


def test_two_bond_bundle_presets_never_worse_than_a_coarse_row(home):
    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "two.safetensors",
                         "test:tone + d(test:expert) + c(test:expert)")
    result, res = tune(bundle, ["audiocaps"], home / "ac", ["t=0,1"], save=False,
                       out=home / "o")
    assert res["grid_scope"] == {"t": ["b1.text", "b2.text"]}
    rows = res["coarse"] + res["fine"]
    for t, p in res["best"].items():
        assert p["metrics"][t] == max(r["metrics"][t] for r in rows)
    # the preset table reports presets that equal the best printed row
    assert result.presets["tuned-versatile"] == res["versatile"]["overrides"]


def test_tune_merges_by_suite_and_records_the_data(home):
    """A second run on one suite replaces that suite's presets (and the versatile one) and
    returns what they were; another suite's presets keep their own record. The data
    fingerprint follows what a suite lists, not where it lies."""
    import shutil

    import freebind
    from freebind.evaluate.suites import load_suite
    from freebind.evaluate.tuning import data_record

    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    bundle = make_bundle(home / "b.safetensors")
    first, res1 = tune(bundle, ["audiocaps", "esc50"], home / "sets", ["a=0:1:0.5"],
                       out=home / "o1")
    assert first.replaced == {}
    before = freebind.load(bundle).metadata["tuning"]["presets"]
    second, res2 = tune(bundle, ["audiocaps"], home / "sets", out=home / "o2")
    assert sorted(second.replaced) == ["tuned-audiocaps-a2t", "tuned-audiocaps-t2a",
                                       "tuned-versatile"]
    for name, old in second.replaced.items():
        assert old["factors"] == res1["presets"][name]
        assert old["record"] == before[name]
    meta = freebind.load(bundle).metadata
    records = meta["tuning"]["presets"]
    assert records["tuned-esc50"] == before["tuned-esc50"]          # kept, with its run's
    assert meta["presets"]["tuned-esc50"] == res1["presets"]["tuned-esc50"]
    assert records["tuned-audiocaps-t2a"]["grid"] == {} and \
        list(records["tuned-audiocaps-t2a"]["suites"]) == ["audiocaps"]
    assert records["tuned-esc50"]["grid"] == {"a": [0.0, 0.5, 1.0]}
    assert records["tuned-audiocaps-t2a"]["points"] == len(res2["coarse"]) == 2
    assert sorted(res2["replaced"]) == sorted(second.replaced)

    def fp(folder):
        return data_record(load_suite("audiocaps", folder))

    shutil.copytree(home / "sets" / "audiocaps", home / "moved")
    make_audiocaps(home / "small", n=4)
    assert fp(home / "moved")["fingerprint"] == fp(home / "sets" / "audiocaps")["fingerprint"]
    assert fp(home / "small")["fingerprint"] != fp(home / "moved")["fingerprint"]
    assert fp(home / "small")["items"] == {"audio": 4, "text": 20}
    rec = records["tuned-audiocaps-t2a"]["suites"]["audiocaps"]
    assert rec == fp(Path(rec["data"])) and rec["items"] == {"audio": 6, "text": 30}


def test_legacy_tuning_record_is_read_per_preset():
    from freebind.fusion.bundle import tuning_records

    legacy = {"tuning": {"suites": ["audiocaps", "esc50"], "grid": {"a": [0, 1]},
                         "coarse_choice": [], "base": {"esc50:acc1": 0.5},
                         "presets": {"tuned-versatile": ["a=1"], "tuned-esc50": ["a=0"]},
                         "best": {"esc50:acc1": 0.9, "audiocaps:t2a_R@1": 0.4},
                         "versatile": {"esc50:acc1": 0.8}}}
    got = tuning_records(legacy)
    assert got["tuned-esc50"]["scores"] == {"esc50:acc1": 0.9}
    assert got["tuned-versatile"]["scores"] == {"esc50:acc1": 0.8}
    assert got["tuned-esc50"]["suites"] == {"audiocaps": {}, "esc50": {}}
    assert got["tuned-esc50"]["legacy"] is True and got["tuned-esc50"]["grid"] == {"a": [0, 1]}
