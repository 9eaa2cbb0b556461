"""freebind.data.readers without silent losses: a named ``.json`` field wins over a
``.txt`` caption whatever their order, a pattern's missing shard is an error naming it (or a
listed problem with ``allow_missing``), members that webdataset's first-dot grouping merges
are reported with their counts, text locators are read back without holding a column of
Python objects, and webdataset samples are found again by key and url."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from freebind.data import readers
from freebind.data.store import file_key
from freebind.util.errors import UsageError


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _caption_json(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize("txt_first", [True, False])
def test_a_named_json_field_wins_over_the_txt_in_either_order(tmp_path, txt_first):
    members = []
    for i in range(3):
        txt = (f"{i:03d}.txt", f"txt caption {i}".encode())
        js = (f"{i:03d}.json", _caption_json(caption=f"json caption {i}", alt=f"alt {i}"))
        members += [txt, js] if txt_first else [js, txt]
    shard = _tar(tmp_path / "caps.tar", members)
    got = readers.read_pool("text", shard, column="alt")
    assert got.items["text"] == ["alt 0", "alt 1", "alt 2"]
    assert got.sources[1] == f"{shard}::001.json#alt"   # the field, to read it back
    assert readers.text_of(got.sources[1]) == "alt 1"
    # no field named: the .txt caption, as before
    assert readers.read_pool("text", shard).items["text"] == [f"txt caption {i}"
                                                             for i in range(3)]
    # embed's inputs (every modality of the shard) honour the column the same way
    _, listing = readers.read_inputs([shard], columns={"text": "alt"})
    assert listing.items["text"] == ["alt 0", "alt 1", "alt 2"]


def test_a_missing_shard_of_a_pattern_is_named_or_listed(tmp_path):
    for s in (0, 2):
        _tar(tmp_path / f"a-{s:05d}.tar", [(f"{s}{i}.wav", bytes([s, i]) * 50)
                                           for i in range(4)])
    pattern = str(tmp_path / "a-{00000..00002}.tar")
    with pytest.raises(UsageError, match=r"1 of its 3 shards missing: .*a-00001\.tar; pass "
                                         r"--allow-missing"):
        readers.read_pool("audio", pattern)
    got = readers.read_pool("audio", pattern, allow_missing=True)
    assert len(got.items["audio"]) == 8
    assert [p["reason"] for p in got.problems] == [
        f"1 shard(s) missing (read without them: --allow-missing): "
        f"{tmp_path / 'a-00001.tar'}"]
    # a pools.json entry / build flag says it as {"path", "allow_missing"}
    got = readers.read_pool("audio", {"path": pattern, "allow_missing": True})
    assert len(got.items["audio"]) == 8 and got.problems
    with pytest.raises(UsageError, match="a-00001.tar"):
        readers.read_inputs([pattern])
    _, listing = readers.read_inputs([pattern], allow_missing=True)
    assert len(listing.items["audio"]) == 8 and "a-00001.tar" in listing.problems[0]["reason"]


def test_members_merged_by_the_first_dot_are_reported(tmp_path):
    # webdataset's key is the name up to the first dot: x.1/x.2/x.3 are one sample x,
    # y.a/y.b one sample y; z is alone
    names = ["x.1.png", "x.2.png", "x.3.png", "y.a.png", "y.b.png", "z.png"]
    shard = _tar(tmp_path / "dots.tar", [(n, n.encode() * 20) for n in names])
    got = readers.read_pool("image", shard)
    assert [str(m).rpartition("::")[2] for m in got.items["image"]] == \
        ["x.1.png", "y.a.png", "z.png"]
    (problem,) = got.problems
    assert problem["path"] == str(shard)
    assert problem["reason"].startswith("5 members were merged into 2 sample(s) and 3 of them "
                                        "not used: webdataset groups")
    assert "x.1.png and x.2.png are both sample 'x'" in problem["reason"]
    # names without extra dots: nothing to report
    clean = _tar(tmp_path / "clean.tar", [(f"{i}.png", bytes([i]) * 20) for i in range(3)])
    assert readers.read_pool("image", clean).problems == []


def test_text_locators_read_back_without_python_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    texts = [f"caption {i}" for i in range(50)]
    table = pa.table({"id": list(range(50)), "caption": texts})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=8)
    pcsv.write_csv(table, tmp_path / "t.csv")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"caption": t}) + "\n"
                                              for t in texts))
    for name in ("t.parquet", "t.csv", "t.jsonl"):
        for row in (0, 17, 49):
            assert readers.text_of(f"{tmp_path / name}::caption[{row}]") == texts[row]
    # parquet: one row group of the column is held; csv/jsonl: an Arrow array, not a list
    ident, lo, hi, col = readers._ROW_GROUPS["last"]
    assert (lo, hi) == (48, 50) and len(col) == 2
    held = readers._TEXT_COLUMN["last"][1]
    assert isinstance(held, pa.ChunkedArray) and len(held) == 50
    from freebind.util.errors import MediaError
    with pytest.raises(MediaError, match=r"t\.csv::caption\[50\]: no text there"):
        readers.text_of(f"{tmp_path / 't.csv'}::caption[50]")
    with pytest.raises(MediaError, match=r"cannot read the text"):
        readers.text_of(f"{tmp_path / 't.parquet'}::nocol[1]")


def test_sample_index_finds_members_by_key_and_url(tmp_path):
    def member(i):
        return hashlib.sha256(f"image {i}".encode()).digest() * 4

    for s in range(2):
        _tar(tmp_path / f"w-{s}.tar",
             [m for i in range(s * 3, s * 3 + 3) for m in (
                 (f"{i:09d}.jpg", member(i)),
                 (f"{i:09d}.json", _caption_json(url=f"https://x.org/{i}.jpg",
                                                 caption=f"c{i}")))])
    index = readers.SampleIndex.of(str(tmp_path / "w-{0..1}.tar"), ["image"])
    want = [readers._content_digest(member(i)).hex() for i in range(6)]
    got = index.lookup("image", "key", [f"{i:09d}" for i in (4, 0, 5)] + ["nope", None])
    assert [g.decode() for g in got] == [want[4], want[0], want[5], "", ""]
    got = index.lookup("image", "url", [f"https://x.org/{i}.jpg" for i in range(6)])
    assert [g.decode() for g in got] == want
    # the content key is the one a file with those bytes has
    (tmp_path / "f.jpg").write_bytes(member(2))
    assert want[2] == file_key(tmp_path / "f.jpg")
    assert index.problems == []
    # members merged by the first dot are counted here too
    _tar(tmp_path / "d.tar", [("k.1.jpg", b"one" * 9), ("k.2.jpg", b"two" * 9)])
    index = readers.SampleIndex.of(str(tmp_path / "d.tar"), ["image"])
    assert index.lookup("image", "key", ["k"])[0].decode() == \
        readers._content_digest(b"one" * 9).hex()
    assert index.problems[0]["reason"].startswith("1 member(s) merged into samples")


def test_cli_allow_missing_for_embed_and_build(tmp_path):
    from typer.testing import CliRunner

    from freebind.mini import write_pools
    from freebind_cli.main import app

    write_pools(tmp_path / "pools", n_audio=8, n_image=2, n_text=8, seed=1)
    audio = sorted((tmp_path / "pools" / "audio").iterdir())
    for s in (0, 2):
        _tar(tmp_path / "sh" / f"a-{s}.tar", [(f"{s}{i}{p.suffix}", p.read_bytes())
                                              for i, p in enumerate(audio[4 * (s // 2):][:4])])
    pattern = str(tmp_path / "sh" / "a-{0..2}.tar")
    args = ["embed", "mini:clap", pattern, "-o", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "c"), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "a-1.tar" in r.output and "--allow-missing" in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, args + ["--allow-missing"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["rows"] == 8 and "a-1.tar" in rep["skipped"][0]["reason"]
    # build: the flag makes the pool spec say it, as a pools.json entry would
    from freebind_cli.build import _with_column

    spec = _with_column("audio", pattern, None, allow_missing=True)
    assert spec == {"path": pattern, "allow_missing": True}
    assert len(readers.read_pool("audio", spec).items["audio"]) == 8
