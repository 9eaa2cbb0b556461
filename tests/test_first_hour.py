"""The library reads well in a notebook (issue 34): stable function objects with real
signatures, help(freebind) listing the API, informative reprs, the CLI's error texts."""

from __future__ import annotations

import inspect
import os
import pydoc
import subprocess
import sys

import pytest

import freebind


def test_callable_modules_are_one_object_with_the_functions_signature():
    import importlib

    first = freebind.embed
    importlib.import_module("freebind.embed")   # an import binds the module on the package
    importlib.import_module("freebind.evaluate")

    assert first is freebind.embed and freebind.evaluate is freebind.evaluate
    assert freebind.build is freebind.build
    params = inspect.signature(freebind.evaluate).parameters
    assert {"factors", "preset", "batch_size", "device"} <= set(params)
    assert "target" in inspect.signature(freebind.embed).parameters
    assert "hyper" in inspect.signature(freebind.build).parameters


def test_help_lists_the_public_api():
    text = pydoc.render_doc(freebind)
    for name in freebind.__all__:
        assert f"``{name}``" in text or name == "__version__", name


def test_reprs_show_what_changes_the_output():
    plan = freebind.plan("mini:bind + d(mini:vl) + c(mini:clap)")
    assert repr(plan) == ("Plan('mini:bind + d(mini:vl) + c(mini:clap)', dim=48, "
                          f"modalities={plan.modalities}, 2 bond(s), {len(plan.jobs)} job(s))")
    from freebind.fusion.factors import parse_override

    specs = ["a=0.8", "b2.t=0.5", "CLAP_g=off", "route=off", "b1.route=learned"]
    assert [str(parse_override(s)) for s in specs] == specs


def test_a_bundle_and_its_factors_and_an_index(tmp_path):
    from freebind.build.orchestrator import build

    fused = build("mini:bind + d(mini:vl)", output=str(tmp_path / "b.safetensors"),
                  mini_pool_size=64, hyper={"epochs": 1, "hidden": 16}, progress=False,
                  cache_dir=str(tmp_path / "cache"))
    tuned = fused.with_factors("a=0.8", "b1=off", preset="versatile")
    assert repr(fused) != repr(tuned)
    assert "preset='versatile', factors=['a=0.8', 'b1=off']" in repr(tuned)
    with pytest.raises(freebind.FreebindError, match="did you mean versatile"):
        fused.with_factors(preset="versatil")
    index = freebind.Index(fused)
    assert repr(index).startswith("Index('mini:bind + d(mini:vl)', 0 items (empty), dim=")
    with pytest.raises(freebind.FreebindError, match="no such file"):
        fused.encode("audio", [str(tmp_path / "missing.wav")])
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    with pytest.raises(freebind.FreebindError, match="dangling symbolic link"):
        fused.encode("image", [str(tmp_path / "link.png")])


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    code = ("import sys; from freebind_cli.main import app; import freebind_cli.plan as p; "
            "p.__dict__; import freebind.algebra as a; "
            "a.plan = lambda *x, **k: (_ for _ in ()).throw(ValueError('boom')); app()")
    run = lambda env: subprocess.run([sys.executable, "-c", code, "plan", "mini:bind"],  # noqa
                                     capture_output=True, text=True, env={**os.environ, **env})
    quiet = run({"FREEBIND_DEBUG": "0"})
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().splitlines() == [
        "error: an unexpected error in freebind plan: ValueError: boom; FREEBIND_DEBUG=1 "
        "shows the traceback"]
    loud = run({"FREEBIND_DEBUG": "1"})
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "boom" in loud.stderr
