"""The CLI's first hour (issue 34): help a newcomer can read, one exit code per kind of
problem in every verb, tables that fit, --strict that says why."""

from __future__ import annotations

import io
import re
import sys

import pytest
from typer.testing import CliRunner

from cli_walk import commands
from freebind_cli.main import app

runner = CliRunner()
TYPE_NAMES = re.compile(r"<(list|int|str|float|path|bool)\b|\brange>|\bx>=")


def test_help_has_no_python_type_names_and_describes_every_option():
    undescribed = []
    for path, cmd, ctx in commands():
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0, (path, r.output)
        assert not TYPE_NAMES.search(r.output), (path, TYPE_NAMES.search(r.output).group(0))
        assert "......" not in r.output
        undescribed += [f"{' '.join(path)} {p.opts[0]}" for p in cmd.get_params(ctx)
                        if p.param_type_name == "option" and not (p.help or "").strip()]
    assert not undescribed


@pytest.mark.parametrize("args", [
    ["info", "{none}"], ["eval", "{none}", "-s", "coco"], ["tune", "{none}", "-s", "coco"],
    ["embed", "{none}", "{texts}", "-o", "{out}"], ["export", "{none}", "-o", "{out}.onnx"],
    ["api", "{none}"], ["push", "{none}", "org/name", "--dry-run", "{out}"],
])
def test_a_missing_bundle_is_the_same_usage_error_in_every_verb(tmp_path, args):
    (tmp_path / "t.txt").write_text("a dog\n")
    names = {"none": str(tmp_path / "none.safetensors"), "texts": str(tmp_path / "t.txt"),
             "out": str(tmp_path / "out")}
    r = runner.invoke(app, [a.format(**names) for a in args])
    assert r.exit_code == 2, r.output
    assert len(r.stderr.splitlines()) == 1 and "none.safetensors" in r.stderr
    assert "no such" in r.stderr


def test_an_unknown_space_or_suite_is_a_usage_error_with_a_guess(tmp_path):
    r = runner.invoke(app, ["eval", "mini:bnd", "-s", "coco", "-o", ""])
    assert r.exit_code == 2 and "did you mean mini:bind" in r.stderr, r.output
    r = runner.invoke(app, ["eval", "mini:bind", "-s", "audiocapz", "-o", ""])
    assert r.exit_code == 2 and "did you mean audiocaps?" in r.stderr, r.output
    assert r.stderr.count("\n") == 1


def _table(width: int):
    from freebind_cli.common import new_table

    return new_table("t", ["a", "b"], [("x" * (width // 2), "y" * (width // 2))])


@pytest.mark.parametrize("columns, width, as_table", [
    (None, 60, True), (None, 150, False), ("200", 150, True), ("40", 60, False)])
def test_tables_honour_columns_and_fit_a_pipe(monkeypatch, columns, width, as_table):
    from freebind_cli.common import console, print_table

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    print_table(console(), _table(width))
    text = sys.stdout.getvalue()
    assert ("┃" in text) == as_table, text
    if as_table:
        assert max(len(line) for line in text.splitlines()) <= int(columns or 100)


def test_strict_says_why_it_exits_1(tmp_path):
    from freebind.mini import write_pools

    write_pools(tmp_path / "p", n_audio=0, n_image=2, n_text=0, progress=False)
    (tmp_path / "p" / "image" / "broken.png").write_bytes(b"not a png")
    r = runner.invoke(app, ["embed", "mini:bind", str(tmp_path / "p" / "image"), "-o",
                            str(tmp_path / "o"), "--strict", "-q",
                            "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1].startswith("error: --strict: 1 input(s) skipped")


def test_embed_counts_say_what_they_count(tmp_path):
    (tmp_path / "t.txt").write_text("a dog\na cat\n")
    args = ["embed", "mini:bind", "--texts", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o"),
            "-q", "--cache-dir", str(tmp_path / "c")]
    first = runner.invoke(app, args, env={"COLUMNS": "200"})
    again = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert first.exit_code == again.exit_code == 0, first.output
    for r in (first, again):
        assert "inputs" in r.stdout and "rows written" not in r.stdout
        assert re.search(r"text\s*│\s*2 │\s*2 │\s*1 │", r.stdout), r.stdout
    assert "0 partition(s) written, 1 kept" in again.stdout


def test_bad_hyper_parameters_stop_before_any_work(tmp_path):
    for hyper, needle in (("bogus=1", "unknown training option"), ("epohcs=3", "did you mean epochs"),
                          ("epochs=abc", "expected a number"), ("lr=-1", "greater than 0"),
                          ("epochs=0", "at least 1"), ("epochs=2.5", "whole number"),
                          ("w=0.5", "set per bond")):
        r = runner.invoke(app, ["build", "mini:bind + d(mini:vl)", "--hyper", hyper,
                                "-o", str(tmp_path / "b.safetensors"),
                                "--cache-dir", str(tmp_path / "c")])
        assert r.exit_code == 2 and needle in r.stderr, (hyper, r.output)
        assert r.stderr.count("\n") == 1 and not (tmp_path / "c").exists(), r.output


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch):
    import freebind.algebra

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(freebind.algebra, "plan", interrupted)
    r = runner.invoke(app, ["plan", "mini:bind"])
    assert r.exit_code == 130
    assert r.stderr == "interrupted; run the same command again to resume\n"


def test_a_dangling_symlink_in_a_folder_is_reported_as_skipped(tmp_path):
    import os

    from freebind.mini import write_pools

    write_pools(tmp_path / "p", n_audio=0, n_image=2, n_text=0, progress=False)
    os.symlink(tmp_path / "gone.png", tmp_path / "p" / "image" / "gone.png")
    r = runner.invoke(app, ["embed", "mini:bind", str(tmp_path / "p" / "image"), "-o",
                            str(tmp_path / "o"), "-q", "--json",
                            "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 0, r.output
    import json

    report = json.loads(r.stdout)
    assert [os.path.basename(s["path"]) for s in report["skipped"]] == ["gone.png"]
    assert report["modalities"]["image"]["rows"] == 2


def test_eval_checks_the_preset_before_writing_any_suite_data(tmp_path, monkeypatch):
    """A misspelt ``--preset`` is a usage error with a guess, and nothing is written first
    (before, the mini evaluation sets were written, then the preset was refused)."""
    from search_world import make_bundle

    home = tmp_path / "home"
    monkeypatch.setenv("FREEBIND_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    bundle = make_bundle(tmp_path / "b.safetensors")
    from freebind.fusion.bundle import store_presets

    store_presets(bundle, {"versatile": ["a=0.5"]})
    r = runner.invoke(app, ["eval", str(bundle), "-s", "audiocaps", "--preset", "versatil",
                            "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 2, r.output
    assert "versatile" in r.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()
