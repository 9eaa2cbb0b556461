"""``freebind export --format onnx``: the fusion graph under onnxruntime equals
FusedSpace.fuse within 1e-5 on every modality, for displacement, combination, parallel,
sequential, nested and routed bonds, with the factors fed as inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner


import freebind  # noqa: E402
from freebind.algebra import plan  # noqa: E402
from freebind.share.onnx import export  # noqa: E402
from freebind.fusion.fused import FusedSpace  # noqa: E402
from freebind.fusion.projector import ProjectorGroup  # noqa: E402
from freebind_cli.main import app  # noqa: E402

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROWS = 16


def make(path: Path, expr: str, seed: int = 0, routed_bonds=()) -> Path:
    """A bundle with seeded projectors whose BatchNorm statistics are not the identity (so
    the export's BatchNorm is exercised), and seeded routers with a non-zero last layer."""
    from freebind.fusion.factors import bond_nodes
    from freebind.fusion.router import BondRouter, router_key

    p = plan(expr)
    g = torch.Generator().manual_seed(seed)
    proj = {}
    for j in p.jobs:
        group = ProjectorGroup(3, j.source_dim, j.target_dim, hidden=24, generator=g)
        with torch.no_grad():
            for bn in (group.bn1, group.bn2):
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.1)
        proj[j.id] = group.eval()
    for bond in bond_nodes(p.graph):
        if bond["id"] in routed_bonds:
            router = BondRouter(bond, hidden=8, generator=g)
            with torch.no_grad():
                for net in router.nets.values():
                    net.w2.copy_(torch.randn(net.w2.shape, generator=g))
                    net.b2.copy_(torch.randn(net.b2.shape, generator=g) * 0.3)
            proj[router_key(bond["id"])] = router.eval()
    return FusedSpace(p, proj).save(path)


def feeds_and_want(session, fused, factors: dict[str, float], seed=1):
    """Random inputs (rows not unit: fuse normalises them, so must the graph), the factor
    inputs, and FusedSpace.fuse's answer under the same factors."""
    rng = np.random.default_rng(seed)
    feeds, nested = {}, {}
    for i in session.get_inputs():
        if len(i.shape) == 2:
            x = (rng.standard_normal((ROWS, int(i.shape[1]))) * 3).astype(np.float32)
            feeds[i.name] = x
            ref, _, m = i.name.rpartition("/")
            nested.setdefault(ref, {})[m] = x
        else:
            feeds[i.name] = np.asarray(factors[i.name], dtype=np.float32)
    want = fused.fuse(nested, factors=[f"{k}={v}" for k, v in factors.items()] or None,
                      modalities=[o.name for o in session.get_outputs()])
    return feeds, want


def check(path: Path, fused, factors: dict[str, float]) -> None:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds, want = feeds_and_want(sess, fused, factors)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    assert set(got) == set(want)
    for m, rows in got.items():
        assert rows.shape == (ROWS, fused.dim)
        np.testing.assert_allclose(rows, want[m].numpy(), atol=1e-5, rtol=0, err_msg=m)
        np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


CASES = {
    "displacement": ("mini:bind + d(mini:vl)", ["b1.image", "b1.text"]),
    "combination": ("mini:bind + c(mini:clap, a=0.7)", ["b1.audio", "b1.text"]),
    "parallel": ("mini:bind + c(mini:clap, mini:clap2, a=0.8, t=0.5)", ["b1.audio", "b1.text"]),
    "sequential": ("mini:bind + d(mini:vl) + c(mini:clap)",
                   ["b1.image", "b1.text", "b2.audio", "b2.text"]),
    "nested": ("mini:bind + c((mini:vl + c(mini:clap)), t=0.4)",
               ["b1.audio", "b1.image", "b1.text", "b2.text"]),
    # the expert brings a modality the base lacks: point comes out as P(e)
    "point": ("mini:bind + c(mini:3d)", ["b1.image", "b1.text"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_equals_fuse_at_the_bundle_factors_and_at_others(tmp_path, case):
    expr, factor_names = CASES[case]
    bundle = make(tmp_path / "b.safetensors", expr)
    fused = freebind.load(bundle)
    report = export(bundle, tmp_path / "fusion.onnx")
    assert sorted(report.factors) == factor_names
    assert report.outputs == {m: [f"N_{m}", fused.dim] for m in fused.modalities}
    for name, shape in report.inputs.items():
        ref, _, m = name.rpartition("/")
        assert shape == [f"N_{m}", fused.plan.spaces[ref]["dim"]]
    assert max(report.max_abs_diff.values()) <= 1e-5
    # a projector group used by several modalities stores its weights once
    assert report.bytes < 1.1 * bundle.stat().st_size + 60_000
    # the exported defaults are the bundle's factors …
    table = fused.factors
    for name, value in report.factors.items():
        bond, m = name.split(".")
        assert value == pytest.approx(table[bond]["factors"][m])
    check(tmp_path / "fusion.onnx", fused, report.factors)
    # … and every factor stays an input: 0, 1 and values in between
    for i, values in enumerate(([0.0] * 9, [1.0] * 9, [0.15, 0.9, 0.35, 0.6, 0.05])):
        check(tmp_path / "fusion.onnx", fused, dict(zip(factor_names, values)))


def test_routed_bond_uses_its_router(tmp_path):
    """σ per item from the router, and the two experts' weights from its softmax (the
    seeded last layer is not zero, so both differ from the fixed factors)."""
    expr = "mini:bind + d(mini:vl) + c(mini:clap, mini:clap2, route=learned)"
    bundle = make(tmp_path / "b.safetensors", expr, routed_bonds=("b2",))
    fused = freebind.load(bundle)
    assert sorted(fused.routers["b2"].spec) == ["audio", "text"]
    report = export(bundle, tmp_path / "routed.onnx")
    # the routed modalities take their σ from the router: no factor input for them
    assert sorted(report.factors) == ["b1.image", "b1.text"]
    check(tmp_path / "routed.onnx", fused, report.factors)
    # a routed bond differs from its fixed factors (the router is not a no-op here)
    fixed = export(bundle, tmp_path / "fixed.onnx", factors=["b2.route=off"])
    assert sorted(fixed.factors) == ["b1.image", "b1.text", "b2.audio", "b2.text"]
    check(tmp_path / "fixed.onnx", fused.with_factors("b2.route=off"), fixed.factors)
    rng = np.random.default_rng(0)
    audio = {ref: {"audio": rng.standard_normal((ROWS, fused.plan.spaces[ref]["dim"]))}
             for ref in ("mini:bind", "mini:clap", "mini:clap2")}
    routed = fused.fuse(audio, modalities=["audio"])["audio"]
    plain = fused.with_factors("b2.route=off").fuse(audio, modalities=["audio"])["audio"]
    assert (routed - plain).abs().max() > 1e-2


def test_switches_presets_and_modalities_are_fixed_at_export(tmp_path):
    bundle = make(tmp_path / "b.safetensors", "mini:bind + d(mini:vl) + c(mini:clap)")
    fused = freebind.load(bundle)
    off = export(bundle, tmp_path / "off.onnx", factors=["b2=off"])
    assert sorted(off.factors) == ["b1.image", "b1.text"]
    assert not any(n.startswith("mini:clap/") for n in off.inputs)
    check(tmp_path / "off.onnx", fused.with_factors("b2=off"), off.factors)
    pre = export(bundle, tmp_path / "v.onnx", preset="versatile", modalities=["text"])
    assert pre.factors == {"b1.text": 0.8, "b2.text": 0.1}
    assert list(pre.outputs) == ["text"] and all(n.endswith("/text") for n in pre.inputs)
    check(tmp_path / "v.onnx", fused.with_factors(preset="versatile"), pre.factors)


def test_one_modality_can_be_fed_alone_with_zero_rows_elsewhere(tmp_path):
    from freebind.share.onnx import default_feeds

    bundle = make(tmp_path / "b.safetensors", "mini:bind + d(mini:vl) + c(mini:clap)")
    export(bundle, tmp_path / "f.onnx")
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    feeds = default_feeds(sess)
    texts = ["a dog barking", "rain"]
    nested = {}
    for i in sess.get_inputs():
        if len(i.shape) == 2:
            ref, _, m = i.name.rpartition("/")
            if m == "text":
                feeds[i.name] = freebind.spaces.get(ref).encode("text", texts).numpy()
                nested.setdefault(ref, {})["text"] = feeds[i.name]
            else:
                feeds[i.name] = np.zeros((0, int(i.shape[1])), dtype=np.float32)
    text = sess.run(["text"], feeds)[0]
    np.testing.assert_allclose(text, freebind.load(bundle).encode("text", texts).numpy(),
                               atol=1e-5, rtol=0)


def test_cli_export_and_errors(tmp_path):
    runner = CliRunner()
    bundle = make(tmp_path / "b.safetensors", "mini:bind + c(mini:clap)")
    out = tmp_path / "fusion.onnx"
    ok = runner.invoke(app, ["export", str(bundle), "--format", "onnx", "-o", str(out),
                             "--json"])
    assert ok.exit_code == 0, ok.output
    got = json.loads(ok.output)
    assert got["factors"] == {"b1.audio": 0.5, "b1.text": 0.5} and out.is_file()
    table = runner.invoke(app, ["export", str(bundle), "-o", str(out)],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "mini:bind/audio" in table.output
    for args, code, msg in (
            (["export", "mini:bind", "-o", str(out)], 2, "export needs a bundle"),
            (["export", str(bundle), "--format", "tflite", "-o", str(out)], 2,
             "the formats are onnx"),
            (["export", str(bundle), "-m", "video", "-o", str(out)], 2, "yields no video"),
            (["export", str(tmp_path / "none.safetensors"), "-o", str(out)], 2,
             "no such bundle file")):
        r = runner.invoke(app, args)
        assert r.exit_code == code, (args, r.output)
        assert msg in r.output and "Traceback" not in r.output


def test_large_weights_go_to_external_data(tmp_path, monkeypatch):
    """Past EXTERNAL_AT bytes (1 GiB; protobuf stops at 2 GB) the weights are written to
    fusion.onnx.data beside the model, which onnxruntime loads the same."""
    import freebind.share.onnx as ex

    monkeypatch.setattr(ex, "EXTERNAL_AT", 1000)
    bundle = make(tmp_path / "b.safetensors", "mini:bind + c(mini:clap)")
    report = export(bundle, tmp_path / "fusion.onnx")
    assert report.files == [str(tmp_path / "fusion.onnx"), str(tmp_path / "fusion.onnx.data")]
    assert (tmp_path / "fusion.onnx").stat().st_size < 20000 < report.bytes
    check(tmp_path / "fusion.onnx", freebind.load(bundle), report.factors)
