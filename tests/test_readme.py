"""The README's Python blocks run as written, in order, in the folder holding the quick
start's bundle (built here with fewer epochs and smaller pools; ``-m slow`` builds it with
the quick start's own command)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
QUICK_START = "mini:bind + d(mini:vl) + c(mini:clap)"
BUNDLE = "mini-bind-d-mini-vl-c-mini-clap.safetensors"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def run_blocks(folder: Path) -> dict:
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block that failed
            raise AssertionError(f"README python block {i + 1} failed: {exc!r}\n{block}") \
                from exc
    return namespace


def check(ns: dict, folder: Path) -> None:
    import numpy as np

    assert ns["audio"].shape == (8, ns["fused"].dim)
    assert ns["target"].preset == "versatile"
    rep = ns["report"]
    assert rep.modalities["image"]["rows"] == 8 and rep.modalities["audio"]["rows"] == 8
    assert [Path(s["path"]).name for s in rep.skipped] == ["broken.png"]
    assert len(ns["kept"]) == 8 and ns["rows"].shape == (8, ns["fused"].dim)
    assert [r["model"] for r in ns["records"]] == ["mini:bind", BUNDLE[:-len(".safetensors")]]
    assert (folder / "tune" / "tune.json").is_file() and ns["result"].presets
    assert ns["results"] and (folder / "embeddings-mini" / "embed.json").is_file()
    a = np.load(folder / "embeddings" / "image_emb" / "image_emb_1.npy")
    assert a.shape == (8, ns["fused"].dim)
    assert sorted(p.name for p in (folder / "hub-repo").iterdir()) == ["README.md",
                                                                       "fused.safetensors"]
    assert ns["pushed"].repo_id == "me/mini-fused" and not ns["pushed"].uploaded
    assert max(ns["onnx"].max_abs_diff.values()) <= 1e-5
    assert sorted(ns["onnx"].factors) == ["b1.image", "b1.text", "b2.audio", "b2.text"]
    want = ns["fused"].encode("text", ["a dog barks"]).numpy()[0]
    assert np.array_equal(np.asarray(ns["reply"]["data"][0]["embedding"], np.float32), want)


def test_readme_has_python_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 4 and any("freebind.embed(" in b for b in blocks)
    assert any("freebind.evaluate(" in b for b in blocks)
    assert any("freebind.tune(" in b for b in blocks)
    assert any("freebind.open(" in b for b in blocks)


def test_readme_python_blocks_run(home):
    import freebind

    freebind.build(QUICK_START, output=home / BUNDLE, mini_pool_size=200, progress=False,
                   hyper={"epochs": 1, "hidden": 32})
    check(run_blocks(home), home)


@pytest.mark.slow
def test_readme_python_blocks_run_on_the_quick_start(home):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    r = CliRunner().invoke(app, ["build", QUICK_START, "-q"])
    assert r.exit_code == 0, r.output
    check(run_blocks(home), home)
