"""``freebind build`` in-process: summary table, bundle path, JSON report, clean errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from build_world import N, world_folder  # noqa: E402

from freebind_cli.main import app  # noqa: E402

HYPER = ["--hyper", "hidden=32", "--hyper", "epochs=2", "--hyper", "batch=64",
         "--hyper", "threads=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_folder(tmp_path_factory)


def test_build_prints_table_and_where_the_bundle_went(world, tmp_path):
    out = tmp_path / "f.safetensors"
    r = CliRunner().invoke(app, ["build", "test:base + c(test:at)", "--pools", str(world),
                                 "-o", str(out), "--cache-dir", str(tmp_path / "c"), "-q",
                                 *HYPER])
    assert r.exit_code == 0, r.output
    assert out.is_file()
    assert "training jobs" in r.output and "j1" in r.output
    assert f"bundle written: {out}" in r.output.replace("\n", "")
    assert "freebind embed" in r.output and "freebind.load" in r.output


def test_build_json_report(world, tmp_path):
    out = tmp_path / "g.safetensors"
    r = CliRunner().invoke(app, ["build", "test:base + d(test:vl)", "--audio",
                                 str(world / "audio"), "--image", str(world / "image"),
                                 "--texts", str(world / "texts.txt"), "-o", str(out),
                                 "--cache-dir", str(tmp_path / "c"), "--json", *HYPER])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["output"] == str(out)
    assert data["pools"] == {"audio": N, "image": N, "text": N}
    (job,) = data["jobs"]
    assert job["id"] == "j1" and job["tuples"] == 3 * N and job["epochs"] >= 1


def test_build_errors_are_one_line(world, tmp_path):
    r = CliRunner().invoke(app, ["build", "test:base + c(test:at)", "--audio",
                                 str(tmp_path / "missing"), "--cache-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert "--audio" in r.output and "no such file or folder" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["build", "test:base + c(test:at)", "--pools", str(world),
                                 "--hyper", "epochs"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
