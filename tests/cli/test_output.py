"""Output that survives a pipe: progress as one line per stage when not on a terminal, and
copyable commands printed whole (never wrapped at 80 columns)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from build_world import register_world, write_world  # noqa: E402

from freebind.util.progress import LineProgress, bar  # noqa: E402
from freebind_cli.main import app  # noqa: E402


def test_a_bar_in_a_pipe_writes_one_line_per_stage(monkeypatch):
    monkeypatch.delenv("FREEBIND_PROGRESS", raising=False)
    stream = io.StringIO()
    with bar(total=300, desc="embed mini:bind audio", unit="item", file=stream) as b:
        assert isinstance(b, LineProgress)
        for _ in range(300):
            b.update(1)
        b.set_postfix(loss=0.5)
    text = stream.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("embed mini:bind audio: 300 items in ") and "(loss=0.5)" in text
    q = io.StringIO()
    with bar(total=2, desc="pseudo tuples", unit="query", file=q) as b:
        b.update(2)
    assert q.getvalue().startswith("pseudo tuples: 2 queries in ")
    quiet = io.StringIO()
    b = bar(total=3, desc="x", file=quiet, disable=True)
    b.update(3)
    b.close()
    assert quiet.getvalue() == ""
    monkeypatch.setenv("FREEBIND_PROGRESS", "bar")
    assert not isinstance(bar(total=1, file=io.StringIO()), LineProgress)


def test_embed_into_a_pipe_has_no_carriage_returns(tmp_path):
    register_world()
    write_world(tmp_path / "w", n=12)
    code = ("import sys; sys.path.insert(0, %r); from build_world import register_world; "
            "register_world(); from freebind_cli.main import app; app()"
            % str(Path(__file__).resolve().parents[1] / "support"))
    r = subprocess.run([sys.executable, "-c", code, "embed", "test:base",
                        str(tmp_path / "w" / "image"), "-o", str(tmp_path / "o"),
                        "--cache-dir", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    assert "embed test:base image: 12 items in" in r.stderr


@pytest.mark.parametrize("width", [None, "40"])
def test_build_hints_are_never_wrapped(tmp_path, monkeypatch, width):
    if width:
        monkeypatch.setenv("COLUMNS", width)
    register_world()
    world = tmp_path / "w"
    write_world(world, n=40)
    deep = tmp_path / ("a-rather-long-folder-name-" * 3) / "bundle-with-a-long-name.safetensors"
    r = CliRunner().invoke(app, ["build", "test:base + c(test:at)", "--pools", str(world),
                                 "-o", str(deep), "--cache-dir", str(tmp_path / "c"), "-q",
                                 "--hyper", "hidden=16", "--hyper", "epochs=1"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert f"  freebind info {deep}" in lines
    assert f"  freebind embed {deep} FILES_OR_FOLDERS... -o embeddings/" in lines
    assert any(line.startswith("  python -c \"import freebind;") and line.endswith('.shape)"')
               for line in lines)


def test_only_freebind_progress_draws_bars():
    """Every progress bar goes through freebind.util.progress (one line per stage in a file or a
    pipe): no module imports tqdm itself."""
    import re

    root = Path(__file__).resolve().parents[2]
    offenders = [str(p.relative_to(root)) for folder in ("freebind", "cli")
                 for p in sorted((root / folder).rglob("*.py"))
                 if p.name != "progress.py"
                 and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert offenders == []


def test_a_routed_build_piped_writes_no_progress_frames(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FREEBIND_PROGRESS", raising=False)
    args = ["build", "mini:bind + c(mini:clap, route=learned)", "--mini-pool-size", "60",
            "--hyper", "router_epochs=3", "--hyper", "epochs=1", "--cache-dir",
            str(tmp_path / "c"), "-o", str(tmp_path / "r.safetensors")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output
    assert sum("router" in line and "epoch" in line for line in r.output.splitlines()) == 1
    assert r.output.count("generating the default mini pools") == 1
    r = CliRunner().invoke(app, args[:-2] + ["-o", str(tmp_path / "s.safetensors")])
    assert r.exit_code == 0, r.output
    assert "generating the default mini pools" not in r.output      # cached: nothing to say


def test_tables_never_cut_a_value_piped_or_narrow():
    import io as _io

    from rich.console import Console
    from rich.table import Table

    from freebind_cli.common import console, print_table

    long_path = "/data/" + "very-long-folder-name/" * 6 + "imagebind_huge.pth"
    hint = "not installed (transformers): pip install 'freebind[clap]'"
    table = Table(title="weights")
    for col in ("space", "detail"):
        table.add_column(col)
    from rich.markup import escape

    table.add_row("CLAP", escape(hint))
    table.add_row("IB", long_path)
    # piped: the console is as wide as the table needs
    piped = console()
    piped.file = _io.StringIO()
    print_table(piped, table)
    text = piped.file.getvalue()
    assert hint in text and long_path in text and "…" not in text
    # a narrow terminal: plain lines, every value whole
    narrow = Console(file=_io.StringIO(), width=40, force_terminal=False)
    print_table(narrow, table)
    lines = narrow.file.getvalue().splitlines()
    assert lines[0] == "weights"
    assert f"  detail: {hint}" in lines and f"  detail: {long_path}" in lines
    assert "space: CLAP" in lines


def test_usage_lines_are_readable():
    """`[OPTIONS] EXPRESSION`, `[TARGET] PATH...`: no `{name}`, no `[[…]…]…`, upper case."""
    import re

    from typer.testing import CliRunner

    from freebind_cli.main import VERBS, app

    verbs = [[v] for v in VERBS if v != "mini"] + [["mini", s] for s in
                                                    ("pools", "evalsets", "roles")]
    for words in verbs:
        usage = CliRunner().invoke(app, [*words, "--help"]).stdout.splitlines()[0]
        assert usage.startswith("Usage: freebind " + " ".join(words) + " [OPTIONS]"), usage
        tail = usage.split("[OPTIONS]", 1)[1]
        assert "{" not in tail and "[[" not in tail and not re.search(r"[a-z]", tail), usage
    embed = CliRunner().invoke(app, ["embed", "--help"]).stdout.splitlines()[0]
    assert embed == "Usage: freebind embed [OPTIONS] [TARGET] PATH..."
