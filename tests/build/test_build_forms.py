"""A build from tar shards and tables is the build from folders, byte for byte; a build whose
rows for a space were all imported never loads that space (its weights need not exist)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from pool_forms import write_forms  # noqa: E402

import freebind  # noqa: E402
from freebind import spaces  # noqa: E402
from freebind.build.orchestrator import build  # noqa: E402

N = 40
FAST = {"hidden": 32, "batch": 64, "epochs": 2, "patience": 2}
EXPR = "mini:bind + c(mini:clap)"


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    from freebind.mini import write_pools

    root = tmp_path_factory.mktemp("bforms")
    write_pools(root / "pools", n_audio=N, n_image=N, n_text=N, seed=11)
    return root, write_forms(root / "pools", root / "forms")


def _build(tmp_path, name, expr=EXPR, **pools):
    return build(expr, output=tmp_path / f"{name}.safetensors", cache_dir=tmp_path / name,
                 hyper=FAST, progress=False, threads=1, **pools)


def test_tars_and_tables_give_the_folder_build_byte_for_byte(forms, tmp_path):
    root, f = forms
    pools = root / "pools"
    a = _build(tmp_path, "folders", pools=pools / "pools.json")
    b = _build(tmp_path, "tars", audio=f["audio_tars"], image=f["image_tars"],
               text={"path": str(f["tables"]["parquet"]), "column": "caption"})
    c = _build(tmp_path, "mixed", audio=f["audio_bytes"], image=f["image_paths"],
               text=f["caption_tars"])
    assert a.build_report.pools == b.build_report.pools == {"audio": N, "image": N, "text": N}
    assert b.build_report.skipped == [] and c.build_report.skipped == []
    assert b.build_report.encoded == a.build_report.encoded   # nothing from another cache
    want = (tmp_path / "folders.safetensors").read_bytes()
    assert (tmp_path / "tars.safetensors").read_bytes() == want
    assert (tmp_path / "mixed.safetensors").read_bytes() == want


def test_build_cli_reads_shards_and_a_table_column(forms, tmp_path):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    root, f = forms
    r = CliRunner().invoke(app, ["build", EXPR, "--audio", f["audio_tars"], "--image",
                                 f["image_tars"], "--text", str(f["tables"]["tsv"]),
                                 "--text-column", "caption", "--cache-dir",
                                 str(tmp_path / "c"), "-o", str(tmp_path / "o.safetensors"),
                                 "--hyper", "epochs=1", "--hyper", "hidden=32", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["pools"] == {"audio": N, "image": N, "text": N}
    r = CliRunner().invoke(app, ["build", EXPR, "--audio", f["audio_tars"], "--text",
                                 str(f["tables"]["tsv"]), "--text-column", "captions",
                                 "--cache-dir", str(tmp_path / "c")])
    assert r.exit_code == 2
    assert "no column 'captions'; the columns are id, caption" in r.output
    missing = str(tmp_path / "none-{0..3}.tar")
    r = CliRunner().invoke(app, ["build", EXPR, "--audio", missing, "--cache-dir",
                                 str(tmp_path / "c")])
    assert r.exit_code == 2 and f"{missing}: the pattern matches no file" in r.output


def test_a_truncated_shard_is_reported_and_the_build_goes_on(forms, tmp_path):
    root, f = forms
    shards = sorted(Path(f["audio_tars"]).parent.glob("audio-*.tar"))
    for p in shards:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    cut = tmp_path / shards[2].name
    cut.write_bytes(cut.read_bytes()[:3000])
    fused = _build(tmp_path, "cut", audio=str(tmp_path / "audio-{000000..000005}.tar"),
                   pools=root / "pools" / "pools.json")
    rep = fused.build_report
    assert rep.pools["audio"] == N - 7
    assert [s for s in rep.skipped if s["path"] == str(cut)] == [
        {"path": str(cut), "reason": rep.skipped[0]["reason"], "modality": "audio"}]
    assert "truncated at byte 3000" in rep.skipped[0]["reason"]


def _no_load(monkeypatch, name):
    """Loading ``name`` fails the test (the registry caches loaded spaces: start empty)."""
    monkeypatch.setattr(spaces, "_LOADED", {})
    real = spaces.get

    def get(ref, **options):
        if spaces.info(ref).name == name:
            raise AssertionError(f"{name} was loaded")
        return real(ref, **options)

    monkeypatch.setattr(spaces, "get", get)


def test_imported_clap_rows_need_no_clap_weights(forms, tmp_path, home, monkeypatch):
    """``mini:bind + c(CLAP_g)`` on the mini pools after importing 512-d CLAP_g rows, with an
    empty FREEBIND_HOME (no CLAP weights anywhere)."""
    root, f = forms
    pools = root / "pools"
    ok, detail = spaces.info("CLAP_g").check()
    assert not ok, detail            # no CLAP weights here
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((2 * N, 512)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    np.save(tmp_path / "a.npy", rows[:N])
    np.save(tmp_path / "t.npy", rows[N:])
    (tmp_path / "ids.txt").write_text("".join(f"{p}\n" for p in f["audio"]))
    cache = tmp_path / "cache"
    freebind.import_embeddings("CLAP_g", tmp_path / "a.npy", ids=tmp_path / "ids.txt",
                               cache_dir=cache, weights_digest="d1g3st", progress=False)
    freebind.import_embeddings("CLAP_g", tmp_path / "t.npy", texts=f["texts"],
                               cache_dir=cache, weights_digest="d1g3st", progress=False)
    _no_load(monkeypatch, "CLAP_g")
    fused = build("mini:bind + c(CLAP_g)", pools=pools / "pools.json", cache_dir=cache,
                  output=tmp_path / "o.safetensors", hyper=FAST, progress=False, threads=1)
    meta = freebind.load(tmp_path / "o.safetensors").metadata["spaces"]["CLAP_g"]
    assert meta["rows"] == "imported" and meta["weights_digest"] == "d1g3st"
    assert meta["fingerprint"] == "imported:CLAP_g@d1g3st" and meta["dim"] == 512
    assert fused.build_report.pools == {"audio": N, "image": N, "text": N}
    # a pool item the store lacks: the encoder is needed (and here it cannot load)
    monkeypatch.undo()
    extra = tmp_path / "more.txt"
    extra.write_text("\n".join(f["texts"] + ["a text never imported"]))
    with pytest.raises(freebind.FreebindError):
        build("mini:bind + c(CLAP_g)", audio=pools / "audio", text=extra, cache_dir=cache,
              output=tmp_path / "p.safetensors", hyper=FAST, progress=False, threads=1)


def test_embed_output_imported_builds_the_same_bundle(forms, tmp_path, monkeypatch):
    root, f = forms
    pools = root / "pools"
    a = _build(tmp_path, "files", pools=pools / "pools.json")
    freebind.embed("mini:clap", [pools / "audio"], pools / "texts.txt", tmp_path / "emb",
                   cache_dir=tmp_path / "c-embed", progress=False)
    freebind.import_embeddings("mini:clap", tmp_path / "emb", cache_dir=tmp_path / "imported",
                               progress=False)
    _no_load(monkeypatch, "mini:clap")
    b = _build(tmp_path, "imported", pools=pools / "pools.json")
    assert b.build_report.pools == a.build_report.pools
    assert (tmp_path / "imported.safetensors").read_bytes() == \
        (tmp_path / "files.safetensors").read_bytes()
