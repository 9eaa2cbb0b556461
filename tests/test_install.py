"""What a plain `pip install freebind[...]` gets: the declared dependencies, the packages in
the wheel, and verbs that name a missing package before doing any work."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from freebind.util.errors import UsageError
from freebind.util.optional import require
from tests.evaluate.test_eval import make_audiocaps, make_bundle, make_esc50, run

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(reqs):
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_core_dependencies_cover_every_verbs_default():
    core = _names(PROJECT["project"]["dependencies"])
    assert {"pyarrow", "matplotlib", "numpy", "torch", "safetensors", "typer"} <= core


def test_no_extra_declares_a_reference_or_torchaudio():
    """laion-clap (numpy<2) and imagebind-unofficial (torchaudio, pytorchvideo, decord) are
    the tests' references, installed --no-deps by scripts/setup.sh, never dependencies."""
    extras = PROJECT["project"]["optional-dependencies"]
    for name, reqs in extras.items():
        names = _names(reqs)
        assert not names & {"laion-clap", "laion_clap", "imagebind-unofficial", "torchaudio",
                            "msclap", "languagebind", "pytorchvideo", "decord",
                            "numpy"}, name
    assert set(extras["all"][0].split("[")[1].rstrip("]").split(",")) == {
        "imagebind", "open-clip", "clap", "internvl", "minilm", "search", "hub", "api", "onnx",
        "hf", "points"}
    assert "ray" in extras  # the cluster engine stays its own extra


def test_every_package_folder_is_in_the_wheel():
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "freebind").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
    data = PROJECT["tool"]["setuptools"]["package-data"]["freebind"]
    assert "**/*.safetensors" in data  # the mini weights


def test_require_names_what_to_install(tmp_path, monkeypatch):
    assert require("json", "a test").dumps([1]) == "[1]"
    with pytest.raises(UsageError, match=r"^thing needs no_such_mod_xyz, which cannot be "
                                         r"imported: pip install pkg-x; or not$"):
        require("no_such_mod_xyz", "thing", install="pkg-x", alternative="or not")
    # installed but broken (e.g. built against another numpy) counts as missing
    (tmp_path / "broken_mod_xyz.py").write_text("raise RuntimeError('ABI mismatch')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=r"broken_mod_xyz.*RuntimeError: ABI mismatch.*"
                                         r"pip install broken_mod_xyz"):
        require("broken_mod_xyz", "thing")


def test_tune_names_missing_matplotlib_before_any_work(home, monkeypatch):
    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    bundle = make_bundle(home / "b.safetensors")
    before = bundle.read_bytes()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    r = run("tune", bundle, "-s", "audiocaps", "-s", "esc50", "-d", home / "sets",
            "--grid", "a=0:1:0.5", "--out", home / "tuneout")
    assert r.exit_code == 2, r.output
    assert "needs matplotlib" in r.output and "pip install matplotlib" in r.output
    assert "Traceback" not in r.output
    assert not (home / "tuneout").exists() and bundle.read_bytes() == before
    assert not (home / "home" / "cache").exists()  # nothing was embedded


def test_embed_names_missing_pyarrow_before_any_work(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    data = make_audiocaps(home / "sets" / "audiocaps")
    r = run("embed", "test:tone", data, "-o", home / "emb")
    assert r.exit_code == 2, r.output
    assert "parquet metadata needs pyarrow" in r.output and "--metadata-format jsonl" in r.output
    assert not (home / "emb").exists()
