"""``freebind embed``: the verb parses its arguments into one ``freebind.run.partitions`` call and
prints the report (table, skipped lines, ``--json``); errors are one line with exit 2, and
``--strict`` exits 1. What embedding does is tested on the library (test_embed.py)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from build_world import world_folder  # noqa: E402

import freebind.run.partitions as E  # noqa: E402
from freebind_cli.main import app  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_folder(tmp_path_factory, n=12)


def run(*args, **kw):
    return CliRunner().invoke(app, ["embed", *map(str, args)], **kw)


def test_flags_become_the_library_call(world, tmp_path, monkeypatch):
    seen = {}

    def fake(target, paths, texts, output, **options):
        seen.update(target=target, paths=paths, texts=texts, output=output, **options)
        raise SystemExit(0)

    monkeypatch.setattr(E, "embed", fake)
    run("b.safetensors@versatile", world / "image", world / "audio", "--texts",
        world / "texts.txt", "-o", tmp_path / "o", "--as", "DEPTH", "--factor", "a=0.8",
        "--factor", "b2=off", "--preset", "x", "--fp16", "--partition-size", 7,
        "--batch-size", 3, "--cache-dir", tmp_path / "c", "--shard-size", 5,
        "--metadata-format", "JSONL", "--strict", "--device", "cpu", "--precision", "bf16",
        "--space-option", "workers=2", "-q")
    assert seen == {
        "target": "b.safetensors@versatile", "paths": [world / "image", world / "audio"],
        "texts": world / "texts.txt", "output": tmp_path / "o", "factors": ["a=0.8", "b2=off"],
        "preset": "x", "fp16": True, "partition_size": 7, "batch_size": 3,
        "cache_dir": tmp_path / "c", "metadata": "jsonl", "progress": False, "shard_size": 5,
        "space_options": {"workers": 2, "device": "cpu", "precision": "bf16"},
        "strict": True, "as_modality": "depth"}


def test_json_is_the_library_report_and_the_table_names_every_modality(world, tmp_path):
    r = run("test:base", world / "image", "--texts", world / "texts.txt", "-o", tmp_path / "a",
            "--cache-dir", tmp_path / "c", "--json")
    assert r.exit_code == 0, r.output
    rep = freebind_report(world, tmp_path / "b", tmp_path / "c")
    got = json.loads(r.stdout)
    assert {k: v for k, v in got.items() if k not in ("output", "shards")} == \
        {k: v for k, v in rep.items() if k not in ("output", "shards")}
    r = run("test:base", world / "image", "--texts", world / "texts.txt", "-o", tmp_path / "a",
            "--cache-dir", tmp_path / "c", env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "image" in r.stdout and "text" in r.stdout and "12" in r.stdout
    assert "0 partition(s) written, 2 kept from an earlier run; 0 input(s) skipped; 24-d " \
           "float32" in r.stdout


def freebind_report(world, out, cache):
    import freebind

    return freebind.embed("test:base", [world / "image"], world / "texts.txt", output=out,
                          cache_dir=cache, progress=False).to_dict()


def test_skipped_lines_and_strict_exit(world, tmp_path):
    src = tmp_path / "media"
    shutil.copytree(world / "image", src)
    (src / "zz_truncated.png").write_bytes(b"\\x89PNG")
    r = run("test:base", src, "-o", tmp_path / "o", "--cache-dir", tmp_path / "c", "-q")
    assert r.exit_code == 0, r.output
    assert f"skipped {src / 'zz_truncated.png'}: " in r.stderr
    r = run("test:base", src, "-o", tmp_path / "o2", "--cache-dir", tmp_path / "c", "--strict",
            "-q")
    assert r.exit_code == 1
    assert "zz_truncated.png" in r.output and "Traceback" not in r.output
    r = run("test:base", src, "-o", tmp_path / "o3", "--cache-dir", tmp_path / "c", "--strict",
            "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["skipped"][0]["path"].endswith(
        "zz_truncated.png")


@pytest.mark.parametrize("args, message", [
    (["--metadata-format", "csv"], "--metadata-format 'csv': use parquet or jsonl"),
    (["--partition-size", "0"], "--partition-size must be at least 1"),
    (["--as", "smell"], "unknown modality"),
    (["--factor", "t=0.5"], "apply to fused bundles"),
])
def test_errors_are_one_line_with_exit_2(world, tmp_path, args, message):
    r = run("test:base", world / "image", "-o", tmp_path / "o", *args)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_text_files_are_one_text_per_line_and_unknown_files_are_counted(tmp_path):
    """write_pools' texts.txt (one caption per line) gives one row per caption, as --texts
    and the build's text pools do; unknown extensions are counted; a cut WAV is skipped."""
    import json as _json

    import numpy as np
    from typer.testing import CliRunner

    from freebind.mini import write_pools
    from freebind_cli.main import app

    media = tmp_path / "media"
    write_pools(media, n_audio=2, n_image=0, n_text=8)
    (media / "notes.csv").write_text("a,b\n")
    (media / ".hidden").write_text("x")
    wav = sorted((media / "audio").glob("*.wav"))[0].read_bytes()
    (media / "audio" / "zz_cut.wav").write_bytes(wav[: len(wav) // 2])
    r = CliRunner().invoke(app, ["embed", "mini:bind", str(media), "-o", str(tmp_path / "out"),
                                 "--metadata-format", "jsonl", "--json", "-q"])
    assert r.exit_code == 0, r.output
    rep = _json.loads(r.stdout)
    assert rep["modalities"]["text"]["rows"] == 8
    assert rep["modalities"]["audio"]["rows"] == 2
    assert [s["path"] for s in rep["skipped"]] == [str(media / "audio" / "zz_cut.wav")]
    assert "truncated WAV" in rep["skipped"][0]["reason"]
    assert rep["ignored"] == 2      # notes.csv and pools.json; hidden files are not counted
    assert rep["ignored_examples"] == [str(media / "notes.csv"), str(media / "pools.json")]
    parts = sorted((tmp_path / "out" / "text_emb").glob("*.npy"))
    assert sum(np.load(f).shape[0] for f in parts) == 8
    r = CliRunner().invoke(app, ["embed", "mini:bind", str(media), "-o", str(tmp_path / "out2"),
                                 "--metadata-format", "jsonl", "-q"])
    assert r.exit_code == 0, r.output
    assert "2 file(s) of an unknown extension left out (e.g. " + str(media / "notes.csv") \
        in r.stdout.replace("\n", "")
