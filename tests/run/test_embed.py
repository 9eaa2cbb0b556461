"""``freebind.run.partitions``: partitions + metadata in row order, fp16, skipping bad files,
strict, resume, bundles with factors and presets (the CLI's parsing and printing:
test_embed_cli.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from build_world import world_folder  # noqa: E402

import freebind  # noqa: E402
from freebind.util.errors import EmbedSkipped, UsageError  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_folder(tmp_path_factory, n=40)


def run(target, *paths, **options):
    options.setdefault("progress", False)
    return freebind.embed(target, list(paths), **options).to_dict()


def read_meta(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_space_target_writes_partitions_in_row_order(world, tmp_path):
    out = tmp_path / "out"
    rep = run("test:base", world / "audio", world / "image", texts=world / "texts.txt",
              output=out, cache_dir=tmp_path / "c", partition_size=25)
    assert rep["partitions"] == 6 and rep["written"] == 6 and rep["skipped"] == []
    # numbering runs across modalities: audio 0-1, image 2-3, text 4-5
    assert sorted(p.name for p in (out / "audio_emb").iterdir()) == ["audio_emb_0.npy",
                                                                     "audio_emb_1.npy"]
    assert (out / "text_emb" / "text_emb_5.npy").is_file()
    a0, a1 = np.load(out / "audio_emb" / "audio_emb_0.npy"), np.load(
        out / "audio_emb" / "audio_emb_1.npy")
    assert a0.dtype == np.float32 and a0.shape == (25, 24) and a1.shape == (15, 24)
    meta = read_meta(out / "metadata" / "metadata_0.parquet")
    paths = sorted((world / "audio").glob("*.wav"))
    assert [m["path"] for m in meta] == [str(p) for p in paths[:25]]
    assert [m["row"] for m in meta] == list(range(25))
    # rows are the space's embeddings of exactly those files, in that order
    from freebind import spaces

    want = spaces.get("test:base").encode("audio", paths[:25]).numpy()
    np.testing.assert_allclose(a0, want, rtol=1e-6, atol=1e-7)
    tmeta = read_meta(out / "metadata" / "metadata_4.parquet")
    assert tmeta[0]["path"] == f"{world / 'texts.txt'}:1"


def test_fp16_jsonl_and_txt_files(world, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "b.txt").write_text("caption 7\n\ncaption 8\n")   # one text per non-empty line
    (docs / "a.txt").write_text("caption 3")
    out = tmp_path / "o"
    run("test:base", docs, output=out, fp16=True, metadata="jsonl", cache_dir=tmp_path / "c")
    arr = np.load(out / "text_emb" / "text_emb_0.npy")
    assert arr.dtype == np.float16 and arr.shape == (3, 24)
    rows = [json.loads(x) for x in (out / "metadata" / "metadata_0.jsonl").read_text().split("\n")
            if x]
    assert [Path(r_["path"]).name for r_ in rows] == ["a.txt:1", "b.txt:1", "b.txt:2"]


def test_bad_files_are_reported_and_skipped_strict_fails(world, tmp_path):
    src = tmp_path / "media"
    shutil.copytree(world / "image", src)
    good = sorted(src.glob("*.png"))
    data = good[5].read_bytes()
    (src / "zz_truncated.png").write_bytes(data[: len(data) // 2])
    shutil.copy(world / "audio" / "a0001.wav", src / "zz_mislabelled.png")
    (src / "zz_empty.wav").write_bytes(b"")
    out = tmp_path / "o"
    rep = run("test:base", src, output=out, cache_dir=tmp_path / "c")
    reasons = {Path(s["path"]).name: s["reason"] for s in rep["skipped"]}
    assert set(reasons) == {"zz_truncated.png", "zz_mislabelled.png", "zz_empty.wav"}
    assert all(reasons.values())
    assert "image" in reasons["zz_mislabelled.png"]
    meta = read_meta(out / "metadata" / "metadata_1.parquet")  # images (audio is k=0)
    assert [Path(m["path"]).name for m in meta] == [p.name for p in good]
    assert np.load(out / "image_emb" / "image_emb_1.npy").shape[0] == len(good)
    # strict: the same report (everything written), then an error naming a skipped file
    with pytest.raises(EmbedSkipped) as info:
        run("test:base", src, output=tmp_path / "o2", cache_dir=tmp_path / "c", strict=True)
    assert info.value.exit_code == 1
    assert info.value.report.to_dict()["skipped"] == rep["skipped"]
    assert "zz_" in str(info.value)


def test_rerun_resumes_from_finished_partitions(world, tmp_path):
    out = tmp_path / "out"
    kw = dict(output=out, cache_dir=tmp_path / "c", partition_size=10)
    first = run("test:base", world / "image", **kw)
    assert first["written"] == 4
    before = {p.name: p.read_bytes() for p in (out / "image_emb").iterdir()}
    (out / "image_emb" / "image_emb_2.npy").unlink()   # as if killed while writing it
    second = run("test:base", world / "image", **kw)
    assert (second["written"], second["reused"]) == (1, 3)
    after = {p.name: p.read_bytes() for p in (out / "image_emb").iterdir()}
    assert after == before
    # another target into the same folder is refused
    with pytest.raises(UsageError, match="another run") as info:
        run("test:vl", world / "image", output=out, cache_dir=tmp_path / "c")
    assert info.value.exit_code == 2


def test_bundle_target_with_factors_and_preset(world, tmp_path):
    from freebind.build.orchestrator import build

    bundle = tmp_path / "f.safetensors"
    fused = build("test:base + c(test:at)", pools=world, output=bundle,
                  cache_dir=tmp_path / "c",
                  hyper={"hidden": 32, "epochs": 2, "batch": 32, "threads": 1}, progress=False)
    out1, out2 = tmp_path / "e1", tmp_path / "e2"
    run(bundle, texts=world / "texts.txt", output=out1, cache_dir=tmp_path / "c",
        factors=["t=0.9"])
    run(bundle, texts=world / "texts.txt", output=out2, cache_dir=tmp_path / "c",
        preset="at-expertise")
    texts = (world / "texts.txt").read_text().split("\n")[:-1]
    want1 = fused.with_factors("t=0.9").encode("text", texts).numpy()
    want2 = fused.with_factors(preset="at-expertise").encode("text", texts).numpy()
    got1 = np.load(out1 / "text_emb" / "text_emb_0.npy")
    got2 = np.load(out2 / "text_emb" / "text_emb_0.npy")
    np.testing.assert_allclose(got1, want1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got2, want2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got1, got2)
    with pytest.raises(UsageError, match="apply to fused bundles") as info:
        run("test:base", texts=world / "texts.txt", output=tmp_path / "e3", factors=["t=0.5"])
    assert info.value.exit_code == 2


def test_nothing_to_embed(tmp_path):
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(UsageError, match="nothing to embed") as info:
        run("test:base", tmp_path / "x.csv", output=tmp_path / "o")
    assert info.value.exit_code == 2


def test_wav_shortfall_reads_the_data_chunk_header(tmp_path):
    import soundfile as sf

    from freebind.util.errors import MediaError
    from freebind.data.media import load_audio, wav_shortfall

    path = tmp_path / "a.wav"
    sf.write(str(path), np.zeros(1000, dtype=np.float32), 16000, subtype="PCM_16")
    assert wav_shortfall(path) is None
    data = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:-500])
    assert wav_shortfall(cut) == (2000, 1500)       # 1000 int16 samples promised
    with pytest.raises(MediaError, match="truncated WAV"):
        load_audio(cut, 16000)
    assert load_audio(path, 16000).shape == (1000,)
    (tmp_path / "x.wav").write_bytes(b"not a wav")
    assert wav_shortfall(tmp_path / "x.wav") is None
