"""The embedding library (freebind.run.partitions): plans of shards that round-trip through JSON,
partitions written atomically and idempotently, the write half alone, the decode/encode
halves of a target, the CLI and the API giving the same bytes, ``bundle@preset``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from build_world import world_folder  # noqa: E402

import freebind  # noqa: E402
from freebind.run import partitions as E  # noqa: E402
from freebind.util.errors import EmbedSkipped, MediaError, UsageError  # noqa: E402
from freebind_cli.main import app  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return world_folder(tmp_path_factory, n=30)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "embed.json"}


def test_plan_is_deterministic_and_round_trips_through_json(world, tmp_path):
    kw = dict(output=tmp_path / "o", partition_size=12, cache_dir=tmp_path / "c")
    a = E.plan_embed("test:base", [world / "image", world / "audio"], world / "texts.txt", **kw)
    b = E.plan_embed("test:base", [world / "audio", world / "image"], world / "texts.txt", **kw)
    assert a.to_dict() == b.to_dict()
    # 30 items per modality in partitions of 12: audio 0-2, image 3-5, text 6-8
    assert [(s.index, s.modality, len(s.items)) for s in a.shards] == [
        (0, "audio", 12), (1, "audio", 12), (2, "audio", 6), (3, "image", 12),
        (4, "image", 12), (5, "image", 6), (6, "text", 12), (7, "text", 12), (8, "text", 6)]
    assert a.shards[6].items[0] == "caption 0"
    assert a.shards[6].sources[0] == f"{world / 'texts.txt'}:1"
    text = json.dumps(a.to_dict())
    c = E.EmbedPlan.from_dict(json.loads(text))
    assert c.to_dict() == a.to_dict() and c.shards == a.shards
    assert c.manifest() == a.manifest()
    assert (a.name, a.dim, a.dtype) == ("test:base", 24, "float32")
    assert not (tmp_path / "o").exists()  # planning writes nothing


def test_run_shard_is_idempotent_and_the_write_half_gives_the_same_bytes(world, tmp_path):
    plan = E.plan_embed("test:base", [world / "image"], output=tmp_path / "o",
                        partition_size=10, cache_dir=tmp_path / "c", progress=False)
    E.begin(plan)
    shard = plan.shards[1]
    assert not E.shard_done(plan, shard)
    r = E.run_shard(plan, shard)
    assert r.written and r.rows == 10 and E.shard_done(plan, shard)
    first = tree(tmp_path / "o")
    again = E.run_shard(plan, shard)       # done: read back, nothing written
    assert not again.written and again.rows == 10
    for f in Path(tmp_path / "o").rglob("*_1.*"):
        f.unlink()
    E.run_shard(plan, shard)               # rewritten: the same bytes
    assert tree(tmp_path / "o") == first
    # the write half alone, from rows computed elsewhere (here by the target's halves)
    remote = E.EmbedPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    remote = E.EmbedPlan.from_dict({**remote.to_dict(), "output": str(tmp_path / "o2")})
    tgt = freebind.open("test:base")
    prepared = [tgt.prepare("image", it) for it in shard.items]
    rows = tgt.encode_prepared("image", prepared)
    want = np.load(tmp_path / "o" / "image_emb" / "image_emb_1.npy")
    np.testing.assert_allclose(rows, want, rtol=1e-6, atol=1e-7)
    E.write_shard(remote, shard, want, np.arange(10), [])
    assert tree(tmp_path / "o2") == first


def test_failures_in_write_shard_and_bad_files_in_prepare(world, tmp_path):
    src = tmp_path / "media"
    shutil.copytree(world / "image", src)
    (src / "zz_bad.png").write_bytes(b"not a png")
    tgt = freebind.open("mini:bind")
    with pytest.raises(MediaError, match="zz_bad.png: cannot decode image"):
        tgt.prepare("image", str(src / "zz_bad.png"))
    plan = E.plan_embed("mini:bind", [src], output=tmp_path / "o", cache_dir=tmp_path / "c",
                        progress=False, metadata="jsonl")
    shard = plan.shards[0]
    assert shard.items[-1].endswith("zz_bad.png")
    r = E.run_shard(plan, shard)
    assert r.rows == 30 and r.skipped == [{"path": str(src / "zz_bad.png"),
                                           "reason": r.skipped[0]["reason"]}]
    assert "cannot decode image" in r.skipped[0]["reason"]
    first = tree(tmp_path / "o")
    # an engine that decoded in one stage and encoded in another writes the same files
    good, rows, fails = [], [], []
    for i, item in enumerate(shard.items):
        try:
            good.append((i, tgt.prepare("image", item)))
        except MediaError as exc:
            fails.append((i, str(exc).split(": ", 1)[1]))
    rows = tgt.encode_prepared("image", [p for _, p in good])
    got = np.load(tmp_path / "o" / "image_emb" / "image_emb_0.npy")
    np.testing.assert_allclose(rows, got, rtol=1e-5, atol=1e-6)
    other = E.EmbedPlan.from_dict({**plan.to_dict(), "output": str(tmp_path / "o2")})
    E.write_shard(other, shard, got, [i for i, _ in good], fails)
    assert tree(tmp_path / "o2") == first


def test_cli_and_api_write_byte_identical_partitions(world, tmp_path):
    args = [world / "audio", world / "image"]
    rep = freebind.embed("mini:bind", args, world / "texts.txt", output=tmp_path / "api",
                         partition_size=16, cache_dir=tmp_path / "c", progress=False)
    r = CliRunner().invoke(app, ["embed", "mini:bind", *map(str, args), "--texts",
                                 str(world / "texts.txt"), "-o", str(tmp_path / "cli"),
                                 "--partition-size", "16", "--cache-dir",
                                 str(tmp_path / "c2"), "--json"])
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "api") == tree(tmp_path / "cli")
    assert json.loads(r.stdout)["rows"] == rep.rows == 90
    assert rep.modalities["audio"] == {"files": 30, "rows": 30, "partitions": 2, "kept": 30,
                                       "skipped": 0}
    assert [s["metadata"] for s in rep.shards][:2] == ["metadata/metadata_0.parquet",
                                                      "metadata/metadata_1.parquet"]
    saved = json.loads((tmp_path / "api" / "embed.json").read_text())
    assert saved["report"]["rows"] == 90 and len(saved["partitions"]) == 6
    # a rerun keeps every partition and reports them as reused
    again = freebind.embed("mini:bind", args, world / "texts.txt", output=tmp_path / "api",
                           partition_size=16, cache_dir=tmp_path / "c", progress=False)
    assert (again.written, again.reused) == (0, 6)


def test_bundle_at_preset_equals_the_preset_option(world, tmp_path):
    from freebind.build.orchestrator import build

    bundle = tmp_path / "f.safetensors"
    build("test:base + c(test:at)", pools=world, output=bundle, cache_dir=tmp_path / "c",
          hyper={"hidden": 32, "epochs": 2, "batch": 32, "threads": 1}, progress=False)
    kw = dict(cache_dir=tmp_path / "c", progress=False)
    freebind.embed(f"{bundle}@versatile", texts=world / "texts.txt",
                   output=tmp_path / "a", **kw)
    freebind.embed(bundle, texts=world / "texts.txt", output=tmp_path / "b",
                   preset="versatile", **kw)
    freebind.embed(bundle, texts=world / "texts.txt", output=tmp_path / "n", **kw)
    assert tree(tmp_path / "a") == tree(tmp_path / "b") != tree(tmp_path / "n")
    r = CliRunner().invoke(app, ["embed", f"{bundle}@versatile", "--texts",
                                 str(world / "texts.txt"), "-o", str(tmp_path / "cli"),
                                 "--cache-dir", str(tmp_path / "c"), "-q"])
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "cli") == tree(tmp_path / "a")
    with pytest.raises(UsageError, match="also given"):
        freebind.open(f"{bundle}@versatile", preset="at-expertise")
    # a fused target is a space: encode equals the FusedSpace's, and it decodes in halves
    tgt = freebind.open(f"{bundle}@versatile")
    fused = freebind.load(bundle, preset="versatile")
    texts = ["caption 3", "caption 8"]
    want = fused.encode("text", texts).numpy()
    np.testing.assert_allclose(tgt.encode("text", texts).numpy(), want, rtol=1e-5, atol=1e-6)
    halves = tgt.encode_prepared("text", [tgt.prepare("text", t) for t in texts])
    np.testing.assert_allclose(halves, want, rtol=1e-5, atol=1e-6)
    assert set(tgt.prepare("text", "caption 3")) == {(r, "text") for r in
                                                     fused.inputs_needed("text")}


def test_fused_encode_skip_returns_rows_and_kept(world, tmp_path):
    from freebind.build.orchestrator import build

    bundle = tmp_path / "f.safetensors"
    fused = build("test:base + c(test:at)", pools=world, output=bundle,
                  cache_dir=tmp_path / "c",
                  hyper={"hidden": 32, "epochs": 1, "batch": 32, "threads": 1}, progress=False)
    files = sorted((world / "audio").glob("*.wav"))[:4]
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000")
    rows, kept = fused.encode("audio", [files[0], bad, files[1], files[2]], on_error="skip")
    assert kept.tolist() == [0, 2, 3]
    want = fused.encode("audio", [files[0], files[1], files[2]]).numpy()
    np.testing.assert_allclose(rows.numpy(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(MediaError):
        fused.encode("audio", [files[0], bad])


def test_strict_engines_and_argument_errors(world, tmp_path):
    src = tmp_path / "media"
    src.mkdir()
    shutil.copy(world / "image" / "v0001.png", src / "a.png")
    (src / "b.png").write_bytes(b"junk")
    with pytest.raises(EmbedSkipped) as info:
        freebind.embed("test:base", [src], output=tmp_path / "o", strict=True,
                       cache_dir=tmp_path / "c", progress=False)
    assert info.value.exit_code == 1 and info.value.report.rows == 1
    assert E.shard_done(E.plan_embed("test:base", [src], output=tmp_path / "o",
                                     cache_dir=tmp_path / "c"), E.plan_embed(
        "test:base", [src], output=tmp_path / "o").shards[0])
    with pytest.raises(UsageError, match="engine='nope'"):
        freebind.embed("test:base", [src], output=tmp_path / "x", engine="nope")
    seen = []

    def engine(plan, tag):
        seen.append((tag, len(plan.shards)))
        return E.run_local(plan)

    E.register_engine("test-engine", engine)
    try:
        rep = freebind.embed("test:base", [src], output=tmp_path / "y", engine="test-engine",
                             engine_options={"tag": "t"}, cache_dir=tmp_path / "c",
                             progress=False)
    finally:
        del E.ENGINES["test-engine"]
    assert seen == [("t", 1)] and rep.rows == 1
    for kwargs, message in ((dict(partition_size=0), "partition_size=0"),
                            (dict(as_modality="smell"), "as_modality='smell'"),
                            (dict(metadata="csv"), "metadata='csv'"),
                            (dict(factors=["t=0.5"]), "apply to fused bundles")):
        with pytest.raises(UsageError, match=message) as exc:
            freebind.embed("test:base", [src], output=tmp_path / "z", **kwargs)
        assert "--" not in str(exc.value)
    # the folder of another run is refused
    with pytest.raises(UsageError, match="another run"):
        freebind.embed("test:vl", [src], output=tmp_path / "y", cache_dir=tmp_path / "c",
                       progress=False)


def test_a_resolved_target_plans_like_its_reference(world, tmp_path):
    tgt = freebind.open("test:base")
    a = E.plan_embed(tgt, [world / "image"], output=tmp_path / "o")
    b = E.plan_embed("test:base", [world / "image"], output=tmp_path / "o")
    assert a.to_dict() == b.to_dict() and a.open_target() is tgt


def test_plan_holds_packed_inputs_equal_to_the_inputs(world, tmp_path, monkeypatch):
    """Inputs are gathered packed a few strings at a time (tiny blocks, tiny partitions):
    the shards hold exactly the inputs, the sources and the digests the lists gave, a text
    file that cannot be decoded is one failed entry of its partition, an empty one a
    problem, and a shard pickles as its own strings only."""
    import hashlib
    import pickle

    from freebind.data import items as items_mod
    from freebind.data.items import StringArray

    monkeypatch.setattr(items_mod, "_PACK", 2)
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("one\n\n  two  \nthree\r\nfour\n", encoding="utf-8")
    (folder / "b.txt").write_bytes(b"fine\n\xff broken\n")
    (folder / "c.txt").write_text("\n \n", encoding="utf-8")
    (folder / "d.txt").write_text("five\nsix\n", encoding="utf-8")
    extra = tmp_path / "extra.txt"
    extra.write_text("seven\neight\nnine\n", encoding="utf-8")
    plan = E.plan_embed("test:base", [folder, world / "image"], extra, output=tmp_path / "o",
                        partition_size=3, cache_dir=tmp_path / "c", progress=False)
    a, d = folder / "a.txt", folder / "d.txt"
    texts = [(f"{a}:1", "one"), (f"{a}:2", "two"), (f"{a}:3", "three"), (f"{a}:4", "four"),
             (str(folder / "b.txt"), None), (f"{d}:1", "five"), (f"{d}:2", "six"),
             (f"{extra}:1", "seven"), (f"{extra}:2", "eight"), (f"{extra}:3", "nine")]
    shards = [s for s in plan.shards if s.modality == "text"]
    assert [len(s.items) + len(s.failed) for s in shards] == [3, 3, 3, 1]
    for k, s in enumerate(shards):
        part = texts[3 * k:3 * k + 3]
        assert isinstance(s.items, StringArray) and isinstance(s.sources, StringArray)
        assert list(s.items) == [t for _, t in part if t is not None]
        assert list(s.sources) == [src for src, t in part if t is not None]
        assert [src for src, _ in s.failed] == [src for src, t in part if t is None]
        assert s.digest == hashlib.sha256(
            "\n".join(src for src, _ in part).encode()).hexdigest()[:16]
    assert "cannot read texts" in shards[1].failed[0][1]
    assert plan.counts["text"] == 10 and plan.counts["image"] == 30
    assert {"path": str(folder / "c.txt"), "reason": "no text in the file"} in plan.skipped
    image = [s for s in plan.shards if s.modality == "image"]
    assert [p for s in image for p in s.items] == \
        sorted(str(p) for p in (world / "image").iterdir())
    assert all(s.sources is s.items for s in image)   # a file's item is its source
    back = pickle.loads(pickle.dumps(shards[2]))
    assert back == shards[2] and back.items.data.nbytes == len("sixseveneight")
    assert E.EmbedPlan.from_dict(json.loads(json.dumps(plan.to_dict()))).shards == plan.shards
