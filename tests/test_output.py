"""Output that survives a pipe: progress as one line per stage when not on a terminal, and
copyable commands printed whole (never wrapped at 80 columns)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from build_world import register_world, write_world  # noqa: E402

from freebind.progress import LineProgress, bar  # noqa: E402
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
            % str(Path(__file__).parent))
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
