"""``freebind mini pools|evalsets|roles`` and the mini spaces in ``freebind spaces``."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from freebind_cli.main import app

runner = CliRunner()


def test_mini_pools_json(tmp_path):
    out = tmp_path / "pools"
    r = runner.invoke(app, ["mini", "pools", str(out), "--audio", "3", "--image", "2",
                            "--text", "4", "--seed", "7", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["counts"] == {"audio": 3, "image": 2, "text": 4} and data["seed"] == 7
    assert len(list((out / "audio").glob("*.wav"))) == 3
    assert len(list((out / "image").glob("*.png"))) == 2
    assert len((out / "texts.txt").read_text().splitlines()) == 4


def test_mini_pools_table(tmp_path):
    r = runner.invoke(app, ["mini", "pools", str(tmp_path / "p"), "--audio", "1", "--image",
                            "1", "--text", "1"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "mini pools" in r.stdout
    for modality in ("audio", "image", "text"):
        assert any(ln.startswith(f"│ {modality} ") and " 1 │" in ln for ln in lines), r.stdout


def test_mini_pools_into_a_file_is_a_usage_error(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    r = runner.invoke(app, ["mini", "pools", str(target), "--audio", "1"])
    assert r.exit_code == 2
    assert "not a folder" in r.output and "Traceback" not in r.output


def test_mini_evalsets_one_suite(tmp_path):
    r = runner.invoke(app, ["mini", "evalsets", str(tmp_path), "--suite", "esc50", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert list(data["suites"]) == ["esc50"] and data["suites"]["esc50"]["items"] == 400
    assert len(list((tmp_path / "esc50/audio").glob("*.wav"))) == 400
    r = runner.invoke(app, ["mini", "evalsets", str(tmp_path), "--suite", "nope"])
    assert r.exit_code == 2 and "unknown mini evaluation set" in r.output


def test_mini_roles_json_and_markdown():
    r = runner.invoke(app, ["mini", "roles", "--items", "200", "--json"])
    assert r.exit_code in (0, 1), r.output
    data = json.loads(r.stdout)
    assert set(data["spaces"]) == {"mini:bind", "mini:vl", "mini:clap", "mini:clap2",
                                   "mini:3d"}
    assert set(data["spaces"]["mini:3d"]) >= {"p2t", "t2p", "p2i", "i2p", "i2t", "t2i"}
    assert set(data["spaces"]["mini:bind"]) >= {"a2t", "t2a", "i2t", "t2i", "a2i", "i2a",
                                                "paraphrase"}
    assert len(data["conditions"]) == 4
    assert set(data["probes"]["mini:clap"]) == {"a:class", "a:loudness", "a:pitch", "a:rhythm"}
    r = runner.invoke(app, ["mini", "roles", "--items", "100", "--markdown"])
    assert "| `mini:bind` |" in r.stdout and "| condition |" in r.stdout


def test_spaces_lists_mini_spaces_as_available():
    r = runner.invoke(app, ["spaces", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    for name, dim in (("mini:bind", 64), ("mini:vl", 48), ("mini:clap", 32),
                      ("mini:clap2", 40)):
        assert rows[name]["available"] is True and rows[name]["dim"] == dim
