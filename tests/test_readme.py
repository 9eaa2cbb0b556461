"""The README runs top to bottom as written, in a fresh folder: its shell blocks (through
the CLI), the outputs it shows (``$ command`` blocks, compared with what the command prints)
and its Python blocks, in document order. The quick start's build uses fewer epochs and
smaller pools here; ``-m slow`` runs it as written.

What is not run: installing (``pip``, ``bash scripts/setup.sh``), the test suite itself
(``python -m pytest``), and ``sh`` blocks: examples that need a cluster, the network, a
running server or placeholders (DIR, OUT, $VARIABLE). Every ``bash`` block runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
QUICK_START = "mini:bind + d(mini:vl) + c(mini:clap)"
BUNDLE = "mini-bind-d-mini-vl-c-mini-clap.safetensors"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def blocks() -> list[tuple[str, str]]:
    """Every fenced block in document order: ``(language, body)``."""
    return re.findall(r"```(\w*)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


#: commands that set up a machine or run the test suite: shown, not run here
SETUP = ("pip ", "bash scripts/setup.sh", "source .venv/bin/activate",
         ".venv/bin/python -m pytest", "python -m pytest")
#: the quick start's build, made cheaper unless ``-m slow``
FAST_BUILD = ["--mini-pool-size", "200", "--hyper", "epochs=1", "--hyper", "hidden=32"]


def cli(line: str, fast: bool):
    """Run one ``freebind …`` command line in process; returns the click result."""
    import shlex

    from typer.testing import CliRunner

    from freebind_cli.main import app

    words = shlex.split(line, comments=True)
    assert words and words[0].endswith("freebind"), line
    args = words[1:]
    if fast and args[:1] == ["build"] and args[1:2] == [QUICK_START]:
        args = args + FAST_BUILD
    # as on a terminal 120 columns wide (what the README says its tables were printed at),
    # where progress bars vanish when their stage ends
    return CliRunner().invoke(app, args, env={"COLUMNS": "120", "FREEBIND_PROGRESS": "off"})


def run_shell(body: str, fast: bool) -> None:
    for line in body.splitlines():
        for command in (c.strip() for c in line.split("&&")):
            if not command or command.startswith("#") or command.startswith(SETUP):
                continue
            r = cli(command, fast)
            assert r.exit_code == 0, f"README: `{command}` failed:\n{r.output}"


def check_shown(body: str, fast: bool) -> None:
    """A ``$ command`` block: the command runs and prints what the README shows (numbers in
    the quick start's table vary by machine: there its title, header and label lines)."""
    import os

    lines = body.rstrip("\n").splitlines()
    assert lines[0].startswith("$ "), body
    r = cli(lines[0][2:], fast)
    home = os.environ["FREEBIND_HOME"]
    got = [g.rstrip() for g in r.output.replace(home, "~/.cache/freebind").rstrip("\n")
           .splitlines()]
    want = [w.rstrip() for w in lines[1:]]
    if r.exit_code == 0 and any("│" in w for w in want):   # a results table
        digits = re.compile(r"\d+\.\d")
        assert [w for w in want if not digits.search(w)] == \
            [g for g in got if not digits.search(g)], r.output
        assert len(got) == len(want), r.output
    else:
        assert got == want, r.output


def run_in_order(folder: Path, fast: bool = True) -> dict:
    namespace: dict = {"__name__": "__readme__"}
    n_py = 0
    for lang, body in blocks():
        if lang == "python":
            n_py += 1
            try:
                exec(compile(body, f"README.md python block {n_py}", "exec"), namespace)
            except Exception as exc:  # name the block that failed
                raise AssertionError(f"README python block {n_py} failed: {exc!r}\n{body}") \
                    from exc
        elif lang == "bash":
            run_shell(body, fast)
        elif lang == "sh":      # needs a cluster, the network, a server or placeholders
            assert not body.startswith("$ "), body
        elif lang == "" and body.startswith("$ "):
            check_shown(body, fast)
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


def test_readme_runs_top_to_bottom(home, monkeypatch):
    """Shell, shown output and Python blocks, in order, in a fresh folder and home."""
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    ns = run_in_order(home)
    check(ns, home)
    assert (home / "idx").is_dir() and (home / "emb" / "embed.json").is_file()


@pytest.mark.slow
def test_readme_runs_top_to_bottom_with_the_quick_start_as_written(home, monkeypatch):
    monkeypatch.delenv("FREEBIND_DATA", raising=False)
    check(run_in_order(home, fast=False), home)
