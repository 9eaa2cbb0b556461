"""`tune` within the fusion memory budget and true to what it measured: the memoised
projectors keep the fusion chunk size, and a stored preset reproduces the row it was
measured on whatever preset the bundle was opened with (issue 35)."""

import numpy as np
import pytest

from tests.evaluate.test_eval import make_audiocaps, make_bundle, make_esc50  # noqa: F401


def test_memoised_paper_groups_keep_the_budget_chunk():
    """K=7, H=2048, 1024-d groups: 256 MiB / (4·(7·(3·2048 + 2·1024) + 1024 + 3·1024)) =
    1,092 rows per chunk through the memo as through the bare groups; the memo keeps no more
    chunk outputs than fit in the budget."""
    from freebind.evaluate.tuning import MemoProjectors
    from freebind.fusion.graph import FUSE_BUDGET_BYTES, fusion_chunk_rows
    from freebind.fusion.projector import ProjectorGroup

    assert FUSE_BUDGET_BYTES == 256 * 2**20
    bare = {"j1": ProjectorGroup(7, 1024, 1024, 2048, init=False)}
    memo = MemoProjectors(bare)
    assert fusion_chunk_rows(bare) == 1092
    assert fusion_chunk_rows(memo) == 1092
    # 1,092 rows × 1,024 floats × 4 bytes = 4.27 MiB an output: 60 fit in 256 MiB
    assert memo.entries == 2**28 // (4 * 1092 * 1024) == 60
    assert memo.entries * 4 * 1092 * 1024 <= FUSE_BUDGET_BYTES


def _spy_rows(monkeypatch):
    """Rows of every projection the groups compute (a wrapper that calls the real one)."""
    from freebind.fusion.projector import ProjectorGroup

    seen = []
    real = ProjectorGroup.mixture

    def mixture(self, x):
        seen.append(int(x.shape[0]))
        return real(self, x)

    monkeypatch.setattr(ProjectorGroup, "mixture", mixture)
    return seen


@pytest.mark.parametrize("use_fast", [True, False])
def test_tune_fuses_in_chunks_of_the_budget(home, monkeypatch, use_fast):
    from freebind.evaluate.runner import load_target, tune_target
    from freebind.fusion import graph

    make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    target = load_target(str(bundle))
    # a budget of 3 rows of the smallest per-row cost (4·4096 bytes)
    monkeypatch.setattr(graph, "FUSE_BUDGET_BYTES", 3 * 4 * 4096)
    assert graph.fusion_chunk_rows(target.fused.projectors) == 3
    seen = _spy_rows(monkeypatch)
    result, embedded = tune_target(target, [("audiocaps", home / "ac", {})],
                                   [("a", [0.0, 0.5, 1.0])], progress=False,
                                   use_fast=use_fast)
    n_audio = len(embedded["audiocaps"].items["audio"])
    assert n_audio > 3 and seen
    assert max(seen) == 3                      # never a whole suite at once
    assert seen.count(3) >= n_audio // 3
    # the same points as with the default budget
    monkeypatch.setattr(graph, "FUSE_BUDGET_BYTES", 256 * 2**20)
    again, _ = tune_target(target, [("audiocaps", home / "ac", {})],
                           [("a", [0.0, 0.5, 1.0])], progress=False, use_fast=use_fast)
    for p, q in zip(result.coarse + result.fine, again.coarse + again.fine):
        assert p.overrides == q.overrides
        assert p.metrics == pytest.approx(q.metrics, abs=1e-6)


def _tables_equal(graph, a, b) -> bool:
    from freebind.fusion.factors import describe

    return describe(a) == describe(b) and all(a[k].pinned == b[k].pinned for k in a)


@pytest.mark.parametrize("opened", ["mine", None])
def test_stored_preset_reproduces_the_measured_row(home, opened):
    """A bundle opened as bundle@mine is measured on top of `mine`; every stored preset,
    applied alone, gives the factors of the row it was chosen from, and the same metrics."""
    import freebind
    from freebind.fusion.bundle import store_presets
    from freebind.fusion.factors import resolve

    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    bundle = make_bundle(home / "b.safetensors", seed=1)
    # a global t (weaker than per-bond keys) and a per-bond a that the grid's global a
    # overrides when layered on top: order and rank both matter
    store_presets(bundle, {"mine": ["t=0.7", "b1.a=0.9"]})
    ref = f"{bundle}@{opened}" if opened else str(bundle)
    result = freebind.tune(ref, ["audiocaps", "esc50"], [home / "sets"], ["a=0,0.5,1"],
                           out=home / "o", progress=False)
    fused = freebind.load(bundle)
    graph = fused.graph
    chosen = {"tuned-versatile": result.versatile,
              **{name: result.best[t] for name, t in zip(list(result.presets)[1:],
                                                         result.best)}}
    carried = False
    for name, point in chosen.items():
        stored = fused.presets[name]
        assert stored == result.presets[name]
        measured = resolve(graph, point.overrides, fused.presets, opened)
        alone = resolve(graph, (), fused.presets, name)
        assert _tables_equal(graph, alone, measured), name
        if not _tables_equal(graph, resolve(graph, point.overrides), measured):
            carried = True                 # the bare overrides would not have reproduced it
        recs = {r["dataset"]: r for r in freebind.evaluate(
            [str(bundle)], ["audiocaps", "esc50"], [home / "sets"], preset=name,
            progress=False)}
        for task, value in point.metrics.items():
            suite, metric = task.split(":", 1)
            assert recs[suite]["metrics"][metric] == pytest.approx(value, abs=1e-9), (name, task)
    assert carried == (opened is not None)
    # the fused rows themselves: the stored preset alone equals the measured setting
    name, point = next(iter(chosen.items()))
    items = sorted(str(p) for p in (home / "sets" / "audiocaps" / "audio").glob("*.wav"))
    want = freebind.load(bundle, preset=opened).with_factors(*point.overrides)
    got = freebind.load(bundle, preset=name)
    assert np.array_equal(got.encode("audio", items).numpy(),
                          want.encode("audio", items).numpy())
    assert np.array_equal(got.encode("text", ["a tone 3 heard take 1"]).numpy(),
                          want.encode("text", ["a tone 3 heard take 1"]).numpy())


def test_explicit_overrides_round_trip_learned_routes_and_switches():
    from freebind.evaluate.tuning import explicit_overrides, reproducing
    import freebind
    from freebind.fusion.factors import resolve

    import tests.evaluate.test_eval  # noqa: F401  (registers the test spaces)

    plan = freebind.plan("test:tone + d(test:expert) + c(test:expert, route=learned)")
    presets = {"p": ["b1=off", "a=0.25", "b2.t=0.5"]}
    for extra in ([], ["route=off"], ["b2.route=off", "t=0.125"], ["b1=on", "b2.a=0.3"]):
        measured = resolve(plan.graph, extra, presets, "p")
        ov = explicit_overrides(plan.graph, measured)
        assert _tables_equal(plan.graph, resolve(plan.graph, ov), measured), (extra, ov)
        # the readable form is kept where it reproduces the table alone
        assert reproducing(plan.graph, resolve(plan.graph, extra), extra) == extra
    assert "b1=off" in explicit_overrides(plan.graph, resolve(plan.graph, (), presets, "p"))
