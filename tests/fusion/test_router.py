"""Learned routers (route=learned): the expression option, per-item fusion arithmetic against
hand-computed values, override precedence, the bundle round trip and deterministic training."""

import math

import numpy as np
import pytest
import torch

from freebind.algebra import plan
from freebind.algebra.formatter import format_expr
from freebind.algebra.parser import parse
from freebind.util.errors import ExpressionError, FreebindError, UsageError
from freebind.fusion.factors import resolve
from freebind.fusion.graph import fuse, inputs_needed
from freebind.build.router_training import train_router
from freebind.fusion.router import BondRouter, mix, router_key, router_spec

from stand_ins import Linear  # noqa: E402

S = 1 / math.sqrt(2)


def register_toys():
    from freebind import spaces
    from freebind.spaces.protocol import SpaceInfo

    for name, mods in (("toy:base", ("audio", "image")), ("toy:ex", ("audio", "text")),
                       ("toy:ex2", ("audio", "text"))):
        spaces.register(SpaceInfo(name, "toy", mods, 2), replace=True)


register_toys()
IDENT = [[1.0, 0.0], [0.0, 1.0]]
EXPR = "toy:base + c(toy:ex, toy:ex2, route=learned)"
# two items: u = [1, 0] and [0, 1]; expert 1 audio [0, 1], expert 2 audio [1, 0]
EMB = {"toy:base": {"audio": [[1.0, 0.0], [0.0, 1.0]], "image": [[0.6, 0.8], [0.8, 0.6]]},
       "toy:ex": {"audio": [[0.0, 1.0], [0.0, 1.0]], "text": [[1.0, 0.0], [S, S]]},
       "toy:ex2": {"audio": [[1.0, 0.0], [1.0, 0.0]], "text": [[0.0, 1.0], [0.0, 1.0]]}}


def crafted_router(bond):
    """A router whose only hidden unit is relu(u[0]); z = h · [ln 3, 0, ln 2]: for u = [1, 0]
    σ = sigmoid(logit 0.5 + ln 3) = 3/4 and w = softmax(ln ½, ln ½ + ln 2) = (1/3, 2/3);
    for u = [0, 1] the fixed factors σ = ½, w = (½, ½)."""
    router = BondRouter(bond, hidden=1)
    net = router.nets["audio"]
    with torch.no_grad():
        net.w1.zero_()
        net.w1[0, 0] = 1.0
        net.b1.zero_()
        net.w2.copy_(torch.tensor([[math.log(3.0), 0.0, math.log(2.0)]]))
        net.b2.zero_()
    return router.eval()


def setup():
    p = plan(EXPR)
    bond = p.bonds()[0]
    proj = {"j1": Linear(IDENT), "j2": Linear(IDENT), router_key("b1"): crafted_router(bond)}
    return p, bond, proj


def close(a, b):
    assert torch.allclose(a, torch.as_tensor(np.asarray(b, dtype=np.float32)), atol=1e-6), (a, b)


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


# --- the expression language ----------------------------------------------------------------

def test_route_option_round_trips_in_canonical_form():
    e = parse("mini:bind + c(mini:clap, mini:clap2, route = learned, a=0.7)")
    text = format_expr(e)
    assert text == "mini:bind + c(mini:clap, mini:clap2, a=0.7, route=learned)"
    assert parse(text) == e
    assert parse("mini:bind + c(mini:clap, route=fixed)") != parse("mini:bind + c(mini:clap)")
    g = plan("mini:bind + d(mini:vl) + c(mini:clap, route=learned)").graph
    assert [b.get("route") for b in g["bonds"]] == [None, "learned"]
    # the option is not a training hyper-parameter of the projector jobs
    assert all("route" not in j.hyper for j in plan(EXPR).jobs)


@pytest.mark.parametrize("text, message, column", [
    ("mini:bind + d(mini:vl, route=learned)", "combination bonds only", 24),
    ("mini:bind + c(mini:clap, route=smart)", "unknown route 'smart'", 32),
    ("mini:bind + c(mini:clap, route=0.5)", "expected one of fixed, learned", 32),
])
def test_route_errors_point_at_the_problem(text, message, column):
    with pytest.raises(ExpressionError) as info:
        plan(text)
    err = info.value
    assert message in err.message
    assert err.start + 1 == column
    assert "^" in err.render()


# --- fusion arithmetic ----------------------------------------------------------------------

def test_router_spec_and_prior():
    p = plan("toy:base + c(toy:ex, toy:ex2, a=0.3, w=(3, 1), route=learned)")
    spec = router_spec(p.bonds()[0])
    assert spec == {"audio": {"experts": [0, 1], "sigma0": 0.3, "w0": [0.75, 0.25]}}
    router = BondRouter(p.bonds()[0], hidden=4)          # zero last layer: the fixed factors
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sigma, w = router.weights("audio", u, [u, u])
    close(sigma, [0.3, 0.3])
    close(w, [[0.75, 0.25], [0.75, 0.25]])


def test_mix_by_hand():
    u = torch.tensor([[1.0, 0.0]])
    out = mix(u, [torch.tensor([[0.0, 2.0]]), torch.tensor([[2.0, 0.0]])],
              torch.tensor([0.5]), torch.tensor([[0.25, 0.75]]))
    # n(0.25*[0,2] + 0.75*[2,0]) = n([1.5, 0.5]); n(0.5*[1,0] + 0.5*that)
    p = unit([1.5, 0.5])
    close(out, [unit(0.5 * np.array([1.0, 0.0]) + 0.5 * p)])


def test_per_item_weights_in_the_fusion():
    p, bond, proj = setup()
    out = fuse(p.graph, proj, EMB)
    # item 1: σ = 3/4, w = (1/3, 2/3): P = n(1/3·[0,1] + 2/3·[1,0]) = [2,1]/√5
    item1 = unit(0.25 * np.array([1.0, 0.0]) + 0.75 * unit([2.0, 1.0]))
    # item 2: σ = ½, w = (½, ½): P = [S, S]
    item2 = unit(0.5 * np.array([0.0, 1.0]) + 0.5 * np.array([S, S]))
    close(out["audio"], [item1, item2])
    # image only in the base: u; text only in the experts: the fixed projection (w = ½, ½)
    close(out["image"], EMB["toy:base"]["image"])
    close(out["text"], [unit([0.5, 0.5]), unit([0.5 * S, 0.5 * S + 0.5])])


def test_routed_modality_reads_every_expert():
    p, _, _ = setup()
    table = resolve(p.graph)
    assert inputs_needed(p.graph, "audio", table) == {
        "toy:base": {"audio"}, "toy:ex": {"audio"}, "toy:ex2": {"audio"}}
    # a factor of 1 with the router overridden reads only the experts
    pinned = resolve(p.graph, ["a=1"])
    assert inputs_needed(p.graph, "audio", pinned) == {"toy:ex": {"audio"}, "toy:ex2": {"audio"}}


# --- precedence ------------------------------------------------------------------------------

def fixed(factors=(), expr="toy:base + c(toy:ex, toy:ex2)"):
    q = plan(expr)
    return fuse(q.graph, {"j1": Linear(IDENT), "j2": Linear(IDENT)}, EMB, factors=list(factors))


def test_explicit_factor_preset_and_switch_override_the_router():
    p, bond, proj = setup()
    for spec in (["a=0.8"], ["b1.a=0.8"], ["toy:ex.a=0.8"]):
        out = fuse(p.graph, proj, EMB, factors=spec)
        close(out["audio"], fixed(["a=0.8"])["audio"].numpy())
    presets = {"mine": ["b1.audio=0.2"]}
    out = fuse(p.graph, proj, EMB, presets=presets, preset="mine")
    close(out["audio"], fixed(["a=0.2"])["audio"].numpy())
    out = fuse(p.graph, proj, EMB, factors=["b1=off"])
    close(out["audio"], EMB["toy:base"]["audio"])
    # route=off (global or per bond) gives the fixed defaults; route=learned brings it back
    for spec in (["route=off"], ["b1.route=off"], ["toy:ex.route=off"]):
        close(fuse(p.graph, proj, EMB, factors=spec)["audio"], fixed()["audio"].numpy())
    back = fuse(p.graph, proj, EMB, factors=["route=off", "b1.route=learned"])
    close(back["audio"], fuse(p.graph, proj, EMB)["audio"].numpy())
    table = resolve(p.graph, ["t=0.4"])
    assert table["b1"].routes("audio") and table["b1"].pinned == set()   # t is not mixed here


def test_route_override_errors():
    with pytest.raises(UsageError, match="has no router"):
        resolve(plan("toy:base + c(toy:ex)").graph, ["b1.route=off"])
    with pytest.raises(UsageError, match="route is off or learned"):
        resolve(plan(EXPR).graph, ["route=maybe"])
    resolve(plan("toy:base + c(toy:ex)").graph, ["route=off"])     # global: a no-op


def test_missing_router_is_reported():
    p, _, proj = setup()
    del proj[router_key("b1")]
    with pytest.raises(FreebindError, match="router of b1 is missing"):
        fuse(p.graph, proj, EMB)
    fuse(p.graph, proj, EMB, factors=["route=off"])


# --- bundle round trip ----------------------------------------------------------------------

def test_loading_a_routed_bundle_leaves_the_global_rng_alone(tmp_path):
    from freebind.fusion import fused as fused_mod
    from freebind.fusion.projector import ProjectorGroup

    p = plan(EXPR)
    gen = torch.Generator().manual_seed(0)
    groups = {j.id: ProjectorGroup(2, 2, 2, hidden=4, generator=gen).eval() for j in p.jobs}
    router = BondRouter(p.bonds()[0], hidden=3, generator=gen).eval()
    fused_mod.FusedSpace.from_plan(p, {**groups, router_key("b1"): router}).save(
        tmp_path / "r.safetensors")
    torch.manual_seed(7)
    state = torch.get_rng_state()
    loaded = fused_mod.load(tmp_path / "r.safetensors")
    assert set(loaded.routers) == {"b1"}
    assert torch.equal(torch.get_rng_state(), state)


def test_bundle_round_trip(tmp_path):
    from freebind.fusion import fused as fused_mod
    from freebind.fusion.projector import ProjectorGroup

    p = plan(EXPR)
    gen = torch.Generator().manual_seed(0)
    groups = {j.id: ProjectorGroup(2, 2, 2, hidden=4, generator=gen).eval() for j in p.jobs}
    router = BondRouter(p.bonds()[0], hidden=3, generator=gen)
    with torch.no_grad():
        for prm in router.parameters():
            prm.normal_(generator=gen)
    router.eval()
    space = fused_mod.FusedSpace.from_plan(p, {**groups, router_key("b1"): router})
    before = space.fuse(EMB)
    space.save(tmp_path / "r.safetensors")
    loaded = fused_mod.load(tmp_path / "r.safetensors")
    assert set(loaded.routers) == {"b1"}
    for name, tensor in space.tensors().items():
        assert torch.equal(tensor, loaded.tensors()[name]), name
    after = loaded.fuse(EMB)
    for m in before:
        assert torch.equal(before[m], after[m]), m
    assert not torch.allclose(after["audio"], loaded.fuse(EMB, factors=["route=off"])["audio"])
    assert loaded.factors["b1"]["routed"] == ["audio"]
    assert "routed" not in loaded.with_factors("route=off").factors["b1"]
    # a bundle whose router tensors are gone is reported, not half-loaded
    from freebind.fusion import bundle as bundle_io
    from freebind.util.errors import BundleError

    tensors, meta = bundle_io.load(tmp_path / "r.safetensors")
    bundle_io.save(tmp_path / "bad.safetensors",
                   {k: v for k, v in tensors.items() if not k.startswith("router.")}, meta)
    with pytest.raises(BundleError, match="router.b1"):
        fused_mod.load(tmp_path / "bad.safetensors")


# --- training ----------------------------------------------------------------------------

def synthetic(n=400, seed=0):
    """Items whose expert audio is informative for half of them (the first coordinate of u
    says which): the best σ differs by item."""
    from freebind.build.router_training import _Data

    g = torch.Generator().manual_seed(seed)
    d = 8
    text = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    good = (torch.arange(n) % 2 == 0)
    noise = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    expert = torch.where(good[:, None], text, noise)
    base = torch.nn.functional.normalize(torch.where(good[:, None], noise, text)
                                         + 0.1 * torch.randn(n, d, generator=g), dim=-1)
    base[:, 0] = torch.where(good, 2.0, -2.0)
    base = torch.nn.functional.normalize(base, dim=-1)
    return _Data({"audio": base}, {"audio": [expert]}, {"text": text})


def test_training_is_deterministic_and_learns_per_item_weights():
    from freebind.build.router_training import weight_stats

    p = plan("toy:base + c(toy:ex, route=learned)")
    bond = dict(p.bonds()[0], dim_in=8)
    data = synthetic()
    hyper = {"epochs": 15, "hidden": 16, "batch": 64}
    r1, s1 = train_router(bond, data, hyper, temp=0.1, seed=3)
    r2, s2 = train_router(bond, data, hyper, temp=0.1, seed=3)
    for name, t in r1.tensors().items():
        assert torch.equal(t, r2.tensors()[name]), name
    assert s1["history"] == s2["history"]
    assert s1["final_val_loss"] < s1["initial_val_loss"]
    with torch.no_grad():
        sigma, _ = r1.weights("audio", data.u["audio"], [data.mixtures["audio"][0]])
    good = torch.arange(data.n) % 2 == 0
    assert sigma[good].mean() > 0.6 > 0.4 > sigma[~good].mean(), (sigma[good].mean(), sigma[~good].mean())
    assert set(weight_stats(r1, data)["audio"]) >= {"sigma_mean", "sigma_std"}
    r3, _ = train_router(bond, data, hyper, temp=0.1, seed=4)
    assert not torch.equal(r1.tensors()["router.b1.audio.w1"], r3.tensors()["router.b1.audio.w1"])


# --- tune on a routed bundle ---------------------------------------------------------------

def test_tune_takes_routers_as_a_coarse_choice(home):
    from freebind.evaluate.runner import load_target, tune_target
    from freebind.evaluate.tuning import LastBondMixer
    from freebind.fusion.fused import FusedSpace
    from freebind.fusion.projector import ProjectorGroup
    from tests.evaluate.test_eval import make_audiocaps, make_esc50  # noqa: F401 (registers spaces)

    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    p = plan("test:tone + c(test:expert, route=learned)")
    torch.manual_seed(0)
    groups = {j.id: ProjectorGroup(len(j.data_modes), j.source_dim, j.target_dim,
                                   hidden=16).eval() for j in p.jobs}
    router = BondRouter(p.bonds()[0], hidden=8)
    with torch.no_grad():
        for prm in router.parameters():
            prm.normal_()
    FusedSpace.from_plan(p, {**groups, router_key("b1"): router.eval()}).save(home / "r.st")
    import shutil

    shutil.move(home / "r.st", home / "r.safetensors")
    target = load_target(str(home / "r.safetensors"))
    suites = [(s, home / "sets" / s, {}) for s in ("audiocaps", "esc50")]
    res, _ = tune_target(target, suites, [], progress=False)
    assert [pt.overrides for pt in res.coarse] == [[], ["route=off"], ["b1=off"],
                                                   ["b1=off", "route=off"]]
    routed, fixed = res.coarse[0].metrics, res.coarse[1].metrics
    assert routed != fixed                       # the router changes the fusion
    # a grid that pins only audio leaves text routed: the exact shortcut declines
    assert LastBondMixer.build(target.fused.graph,
                               lambda o: resolve(target.fused.graph, o), None, {},
                               [["a=0.5"]]) is None
    fine, _ = tune_target(target, suites, [("a", [0.0, 1.0])], progress=False)
    slow, _ = tune_target(target, suites, [("a", [0.0, 1.0])], progress=False, use_fast=False)
    assert [pt.metrics for pt in fine.fine] == [pt.metrics for pt in slow.fine]


# --- settings, build step, info ----------------------------------------------------------

def test_router_settings_are_checked():
    from freebind.build.router_training import router_hyper

    assert router_hyper({"router_reg": "0.5", "router_seed": 2, "epochs": 3}) == \
        {"reg": 0.5, "seed": 2}
    with pytest.raises(UsageError, match="unknown router setting"):
        router_hyper({"router_nope": 1})
    with pytest.raises(UsageError, match="one of all, query"):
        router_hyper({"router_pairs": "some"})


def test_build_trains_caches_and_stores_the_router(tmp_path):
    """Two builds from empty caches give bit-identical routers; a third reuses the cache;
    the projectors are those of the same expression without the router."""
    import freebind

    kw = dict(mini_pool_size=60, progress=False, hyper={"router_epochs": 2})
    expr = "mini:bind + c(mini:clap, route=learned)"
    a = freebind.build(expr, output=tmp_path / "a.safetensors", cache_dir=tmp_path / "c1", **kw)
    b = freebind.build(expr, output=tmp_path / "b.safetensors", cache_dir=tmp_path / "c2", **kw)
    for name, t in a.tensors().items():
        assert torch.equal(t, b.tensors()[name]), name
    assert any(n.startswith("router.b1.") for n in a.tensors())
    logs = []
    freebind.build(expr, output=tmp_path / "c.safetensors", cache_dir=tmp_path / "c1",
                   log=logs.append, **kw)
    assert any("b1 router" in m and "reused" in m for m in logs), logs
    plain = freebind.build("mini:bind + c(mini:clap)", output=tmp_path / "p.safetensors",
                           cache_dir=tmp_path / "c1", **kw)
    assert torch.equal(plain.tensors()["j1.w1"], a.tensors()["j1.w1"])
    loaded = freebind.load(tmp_path / "a.safetensors")
    assert loaded.metadata["training"]["router.b1"]["kind"] == "router"
    other = freebind.build(expr, output=tmp_path / "s.safetensors", cache_dir=tmp_path / "c1",
                           **{**kw, "hyper": {"router_epochs": 2, "router_seed": 1}})
    assert torch.equal(other.tensors()["j1.w1"], a.tensors()["j1.w1"])
    assert not torch.equal(other.tensors()["router.b1.audio.w1"],
                           a.tensors()["router.b1.audio.w1"])

    from typer.testing import CliRunner

    from freebind_cli.main import app

    r = CliRunner().invoke(app, ["info", str(tmp_path / "a.safetensors")],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "learned routers" in r.output and "b1" in r.output


def test_plan_cli_shows_the_router_and_rejects_misuse():
    from typer.testing import CliRunner

    from freebind_cli.main import app

    r = CliRunner().invoke(app, ["plan", "mini:bind + c(mini:clap, route=learned)"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "route=learned, per-item weights" in r.output
    r = CliRunner().invoke(app, ["plan", "mini:bind + d(mini:vl, route=learned)"])
    assert r.exit_code == 2
    assert "combination bonds only" in r.output and "^^^^^" in r.output
    assert "Traceback" not in r.output


def test_bad_router_settings_fail_before_any_work(tmp_path):
    """A misspelled or mistyped router setting is a one-line usage error before embedding."""
    from freebind.build.orchestrator import build
    from freebind.util.errors import UsageError

    for hyper, msg in (({"router_nope": 1}, "unknown router setting 'router_nope'"),
                       ({"router_pairs": "some"}, "router setting router_pairs='some'")):
        with pytest.raises(UsageError, match=msg):
            build("mini:bind + c(mini:clap, route=learned)", cache_dir=tmp_path / "c",
                  hyper=hyper, progress=False)
        assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.npz"))
