"""freebind.data.readers: webdataset tar shards, tables and datasets folders as pool items with the
content keys of the same files in a folder; bad shards and tables reported in one line."""

from __future__ import annotations

import io
import json
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from pool_forms import write_forms  # noqa: E402

from freebind.data import media  # noqa: E402

from freebind.data import readers
from freebind.util.errors import UsageError  # noqa: E402
from freebind.data.store import EmbeddingStore, file_key, text_key  # noqa: E402

N = 24


@pytest.fixture(scope="module")
def forms(tmp_path_factory):
    from freebind.mini import write_pools

    root = tmp_path_factory.mktemp("forms")
    write_pools(root / "pools", n_audio=N, n_image=N, n_text=N, seed=5)
    return write_forms(root / "pools", root / "forms")


def test_brace_expansion_as_webdataset_writes_it():
    assert readers.expand_braces("s/{000..003}.tar") == [f"s/{i:03d}.tar" for i in range(4)]
    assert readers.expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9",
                                                      "b-10"]
    assert readers.expand_braces("x{0..6..3}") == ["x0", "x3", "x6"]
    assert readers.expand_braces("plain.tar") == ["plain.tar"]
    assert readers.is_brace_pattern("a/{0..2}.tar") and not readers.is_brace_pattern("a{b}")


def test_tar_members_have_the_keys_and_order_of_the_folder(forms):
    got = readers.read_pool("audio", forms["audio_tars"])
    items = got.items["audio"]
    assert len(items) == N and got.problems == []
    assert [m.key for m in items] == [file_key(p) for p in forms["audio"]]
    first = items[0]
    assert str(first).endswith("audio-000000.tar::000000.wav")
    assert first.kind == "tar" and first.read() == forms["audio"][0].read_bytes()
    # the store keys them as the files, and the decoders read them as the files
    store = EmbeddingStore(Path(forms["audio"][0]).parent / "unused")
    assert store.key("audio", items[5]) == store.key("audio", forms["audio"][5])
    np.testing.assert_array_equal(media.load_audio(items[5], 16000),
                                  media.load_audio(forms["audio"][5], 16000))
    # a Member survives pickling (engines), and its plain locator string resolves again
    back = pickle.loads(pickle.dumps(items[9]))
    assert isinstance(back, readers.Member) and back.offset == items[9].offset
    plain = str(items[9])
    assert type(plain) is str and store.key("audio", plain) == items[9].key
    np.testing.assert_array_equal(media.load_audio(plain, 16000),
                                  media.load_audio(forms["audio"][9], 16000))
    images = readers.read_pool("image", forms["image_tars"]).items["image"]
    assert [m.key for m in images] == [file_key(p) for p in forms["image"]]
    assert media.load_image(images[3]).size == media.load_image(forms["image"][3]).size


def test_tar_caption_members_are_texts(forms):
    got = readers.read_pool("text", forms["caption_tars"])
    assert got.items["text"] == forms["texts"]
    assert got.sources[0].endswith("cap-000000.tar::000000.json")
    assert readers.text_of(got.sources[4]) == forms["texts"][4]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_text_tables(forms, fmt):
    path = forms["tables"][fmt]
    got = readers.read_pool("text", path, column="caption")
    assert got.items["text"] == forms["texts"]
    assert readers.read_pool("text", path).items["text"] == forms["texts"]  # default column
    assert readers.read_pool("text", {"path": str(path), "column": "caption"}).items == \
        got.items
    assert readers.text_of(got.sources[13]) == forms["texts"][13]
    with pytest.raises(UsageError, match=r"no column 'cap'; the columns are id, caption"):
        readers.read_pool("text", path, column="cap")


def test_bytes_and_path_columns_key_as_files(forms):
    got = readers.read_pool("audio", forms["audio_bytes"], column="audio")
    items = got.items["audio"]
    assert [m.key for m in items] == [file_key(p) for p in forms["audio"]]
    assert items[17].read() == forms["audio"][17].read_bytes()   # row group 3 of 5 rows
    np.testing.assert_array_equal(media.load_audio(str(items[17]), 16000),
                                  media.load_audio(forms["audio"][17], 16000))
    paths = readers.read_pool("image", forms["image_paths"]).items["image"]  # image_path
    assert [Path(p).resolve() for p in paths] == [p.resolve() for p in forms["image"]]


def test_null_cells_are_skipped_and_counted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "caps.parquet"
    pq.write_table(pa.table({"caption": ["a dog", None, "", "a cat", None]}), path)
    got = readers.read_pool("text", path, column="caption")
    assert got.items["text"] == ["a dog", "a cat"]
    assert got.nulls == 3
    assert got.problems == [{"path": f"{path} (caption)",
                             "reason": "3 null or empty cell(s) skipped"}]
    jl = tmp_path / "caps.jsonl"
    jl.write_text('{"text": "x"}\n{"text": null}\n{"other": 1}\n')
    got = readers.read_pool("text", jl)
    assert got.items["text"] == ["x"] and got.nulls == 2


def test_a_pattern_matching_nothing_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "none-{000000..000009}.tar")
    with pytest.raises(UsageError, match=r"none-\{000000\.\.000009\}\.tar: the pattern matches "
                                         r"no file"):
        readers.read_pool("audio", pattern)


def _copy_shards(forms, tmp_path):
    src = sorted(Path(forms["audio_tars"]).parent.glob("audio-*.tar"))
    for p in src:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    return sorted(tmp_path.glob("audio-*.tar"))


def test_truncated_shard_one_line_with_offset_others_used(forms, tmp_path):
    shards = _copy_shards(forms, tmp_path)
    data = shards[1].read_bytes()
    with tarfile.open(shards[1]) as tf:
        members = tf.getmembers()
    cut = members[3].offset_data + 100          # inside the 4th member's data
    shards[1].write_bytes(data[:cut])
    got = readers.read_pool("audio", str(tmp_path / "audio-{000000..000003}.tar"))
    assert len(got.items["audio"]) == N - 7 + 3   # shard 1 keeps its first three members
    assert len(got.problems) == 1
    p = got.problems[0]
    assert p["path"] == str(shards[1])
    assert f"truncated at byte {cut}" in p["reason"] and str(members[3].offset) in p["reason"]
    assert [m.key for m in got.items["audio"][:7]] == [file_key(f) for f in forms["audio"][:7]]


def test_corrupt_member_header_skipped_and_reported(forms, tmp_path):
    shards = _copy_shards(forms, tmp_path)
    with tarfile.open(shards[0]) as tf:
        members = tf.getmembers()
    raw = bytearray(shards[0].read_bytes())
    at = members[2].offset
    raw[at:at + 512] = b"\xff" * 512               # the third member's header is garbage
    shards[0].write_bytes(bytes(raw))
    got = readers.read_pool("audio", str(tmp_path / "audio-{000000..000003}.tar"))
    keys = [m.key for m in got.items["audio"]]
    want = [file_key(f) for i, f in enumerate(forms["audio"]) if i != 2]
    assert keys == want                           # the members after it are still read
    assert len(got.problems) == 1 and got.problems[0]["path"] == str(shards[0])
    assert f"unreadable bytes at {at}.." in got.problems[0]["reason"]


def test_a_corrupt_member_is_skipped_like_a_bad_file(forms, tmp_path):
    """Bytes that do not decode: the store skips the member and names it."""
    import freebind.spaces as spaces

    good = forms["audio"][:3]
    with tarfile.open(tmp_path / "bad.tar", "w") as tf:
        for i, p in enumerate(good):
            tf.add(p, arcname=f"{i:06d}.wav")
        info = tarfile.TarInfo("000003.wav")
        info.size = 1000
        tf.addfile(info, io.BytesIO(b"RIFF" + b"\x00" * 996))
    items = readers.read_pool("audio", tmp_path / "bad.tar").items["audio"]
    store = EmbeddingStore(tmp_path / "cache")
    arr, kept, failures = store.embed(spaces.get("mini:clap"), "audio", items, progress=False,
                                      on_error="skip")
    assert kept.tolist() == [0, 1, 2] and arr.shape == (3, 32)
    assert [f.item for f in failures] == [f"{tmp_path / 'bad.tar'}::000003.wav"]
    assert "cannot decode audio" in failures[0].reason


def test_datasets_folder(forms, tmp_path):
    pytest.importorskip("datasets")
    from datasets import Audio, Dataset, Image

    rows = {"audio": [{"bytes": p.read_bytes(), "path": None} for p in forms["audio"][:5]],
            "image": [{"bytes": p.read_bytes(), "path": None} for p in forms["image"][:5]],
            "caption": forms["texts"][:4] + [None]}
    ds = Dataset.from_dict(rows).cast_column("audio", Audio()).cast_column("image", Image())
    ds.save_to_disk(str(tmp_path / "ds"))
    audio = readers.read_pool("audio", tmp_path / "ds").items["audio"]   # the Audio feature
    assert [m.key for m in audio] == [file_key(p) for p in forms["audio"][:5]]
    np.testing.assert_array_equal(media.load_audio(audio[2], 16000),
                                  media.load_audio(forms["audio"][2], 16000))
    image = readers.read_pool("image", tmp_path / "ds").items["image"]
    assert [m.key for m in image] == [file_key(p) for p in forms["image"][:5]]
    got = readers.read_pool("text", tmp_path / "ds")
    assert got.items["text"] == forms["texts"][:4] and got.nulls == 1
    assert text_key(got.items["text"][0]) == text_key(forms["texts"][0])
    with pytest.raises(UsageError, match="no column 'x'; the columns are audio, image, "
                                         "caption"):
        readers.read_pool("text", tmp_path / "ds", column="x")


def test_pools_json_accepts_every_form(forms, tmp_path):
    from freebind.build.pools import read_pools_file, resolve_pools

    spec = {"audio": forms["audio_tars"], "image": forms["image_tars"],
            "text": {"path": str(forms["tables"]["parquet"]), "column": "caption"}}
    (tmp_path / "pools.json").write_text(json.dumps(spec))
    assert read_pools_file(tmp_path / "pools.json")["text"]["column"] == "caption"
    pools = resolve_pools(pools=tmp_path / "pools.json")
    assert pools.counts() == {"audio": N, "image": N, "text": N}
    assert pools.items["text"] == forms["texts"]


def test_compressed_shards_are_refused_with_what_to_do(tmp_path):
    (tmp_path / "a.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(UsageError, match=r"a\.tar\.gz: compressed shards cannot be read in "
                                         r"place .*decompress them"):
        readers.read_pool("audio", tmp_path / "a.tar.gz")


def test_embed_cli_reads_shards_and_a_caption_table(forms, tmp_path):
    from typer.testing import CliRunner

    from freebind_cli.main import app

    r = CliRunner().invoke(app, ["embed", "mini:clap", forms["audio_tars"], "--texts",
                                 str(forms["tables"]["jsonl"]), "--text-column", "caption",
                                 "-o", str(tmp_path / "out"), "--cache-dir",
                                 str(tmp_path / "c"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["counts"] == {"audio": N, "text": N} and rep["skipped"] == []
    import pyarrow.parquet as pq

    meta = pq.read_table(tmp_path / "out" / "metadata" / "metadata_1.parquet").to_pydict()
    assert meta["path"][:2] == [f"{forms['tables']['jsonl']}::caption[0]",
                                f"{forms['tables']['jsonl']}::caption[1]"]
