"""Loader options on the verbs that encode (``--device``, ``--precision``, ``--space-option``)
reach every ``spaces.get`` of embed, build, eval and tune; bad ones are one-line usage errors;
``embed --as MODALITY`` forces the modality of the files given (depth PNGs, IMU .npy, …)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from typer.testing import CliRunner

from freebind import spaces
from freebind.spaces.protocol import SpaceInfo
from freebind_cli.main import app

LATENT = 8
N = 24
#: every loader call of the test spaces: (space name, options)
LOADS: list[tuple[str, dict]] = []


def tone_of(modality: str, item) -> int:
    """The integer a fixture file or text carries."""
    if modality == "text":
        return int(item.split("tone ")[1].split()[0])
    path = Path(item)
    if path.suffix == ".npy":
        return int(np.load(path).ravel()[0])
    if path.suffix == ".png":
        return int(np.asarray(Image.open(path))[0, 0])
    data, _ = sf.read(str(path), dtype="int16")
    return int(data[0])


class OptSpace:
    """Each item's tone mapped to a fixed latent vector, through a space-specific map."""

    family = "test"

    def __init__(self, name, modalities, dim, options):
        self.name, self.modalities, self.dim = name, tuple(modalities), dim
        self.options = dict(options)
        self.fingerprint = f"{name}-v1"
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        self.map = np.random.default_rng(seed).normal(size=(LATENT, dim))

    def encode(self, modality, items, batch_size=32):
        z = np.stack([np.random.default_rng(tone_of(modality, x)).normal(size=LATENT)
                      for x in items]) if items else np.zeros((0, LATENT))
        e = z @ self.map
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        return torch.from_numpy(e.astype(np.float32))


SPACES = {
    "opt:base": (("audio", "image", "text", "depth"), 12),
    "opt:expert": (("audio", "text"), 10),
}


def recording_loader(info, **options):
    LOADS.append((info.name, dict(options)))
    mods, dim = SPACES[info.name]
    return OptSpace(info.name, mods, dim, options)


for _name, (_mods, _dim) in SPACES.items():
    spaces.register(SpaceInfo(name=_name, family="test", modalities=_mods, dim=_dim,
                              description="records its loader options",
                              loader=recording_loader, checker=lambda info: (True, "")),
                    replace=True)


def loads_since(mark: int) -> list[tuple[str, dict]]:
    """The loader calls after ``mark``, in name order."""
    return sorted(LOADS[mark:], key=lambda call: call[0])


def write_wav(path: Path, tone: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.full(160, tone, dtype=np.int16), 16000, subtype="PCM_16")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("opts")
    for k in range(N):
        write_wav(root / "pool" / "audio" / f"a{k:03d}.wav", k)
    (root / "pool" / "texts.txt").write_text("".join(f"a tone {k} here\n" for k in range(N)))
    rows = ["audiocap_id,youtube_id,start_time,caption"]
    for k in range(6):
        ytid = f"yt{k:09d}"
        write_wav(root / "ac" / "audio" / f"{ytid}.wav", 100 + k)
        rows += [f"{1000 + 5 * k + j},{ytid},0,a tone {100 + k} take {j}" for j in range(5)]
    (root / "ac" / "test.csv").write_text("\n".join(rows) + "\n")
    depth = root / "depth"
    depth.mkdir()
    for k in range(3):  # grey disparity PNGs and one .npy map: extensions cannot say "depth"
        Image.fromarray(np.full((4, 4), 200 + k, dtype=np.uint8)).save(depth / f"d{k}.png")
    np.save(depth / "d3.npy", np.full((4, 4), 203, dtype=np.float32))
    (depth / ".DS_Store").write_bytes(b"\0junk")
    return root


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


# --- parsing ------------------------------------------------------------------------------

def test_parse_values_and_flags():
    from freebind_cli.common import parse_space_options

    got = parse_space_options("cuda:1", "BF16", [
        "checkpoint=/path/x.pt", "trust_remote_code=true", "workers=4", "scale=0.5",
        "download=No", "tag=laion2b_s34b_b79k", "offset=-3", "eps=1e-3"])
    assert got == {"checkpoint": "/path/x.pt", "trust_remote_code": True, "workers": 4,
                   "scale": 0.5, "download": False, "tag": "laion2b_s34b_b79k",
                   "offset": -3, "eps": 0.001, "device": "cuda:1", "precision": "bf16"}
    assert type(got["workers"]) is int and type(got["trust_remote_code"]) is bool
    # only what was given: nothing at all leaves the spaces' defaults (and FREEBIND_*)
    assert parse_space_options(None, None, []) == {}
    # the same value given twice ways is fine
    assert parse_space_options("cpu", None, ["device=cpu"]) == {"device": "cpu"}


@pytest.mark.parametrize("args, needle", [
    (["--space-option", "workers"], "expected KEY=VALUE"),
    (["--space-option", "=4"], "expected KEY=VALUE"),
    (["--space-option", "checkpoint="], "expected KEY=VALUE"),
    (["--space-option", "bad-key=1"], "not an option name"),
    (["--space-option", "workers=2", "--space-option", "workers=3"], "given twice"),
    (["--device", "cpu", "--space-option", "device=cuda"], "contradicts"),
    (["--precision", "fp64"], "use one of fp32, fp16, bf16"),
    (["--space-option", "precision=half"], "use one of fp32, fp16, bf16"),
])
@pytest.mark.parametrize("verb", ["embed", "build", "eval", "tune"])
def test_bad_options_exit_2_with_one_line(world, home, verb, args, needle):
    mark = len(LOADS)
    head = {
        "embed": ["embed", "opt:base", world / "depth", "-o", home / "o"],
        "build": ["build", "opt:base + c(opt:expert)", "--audio", world / "pool" / "audio"],
        "eval": ["eval", "opt:base", "-s", "audiocaps", "-d", world / "ac"],
        "tune": ["tune", home / "unread.safetensors", "-s", "audiocaps", "-d", world / "ac"],
    }[verb]
    (home / "unread.safetensors").write_bytes(b"")  # an option is checked before a bundle
    r = run(*head, *args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.output
    assert "Traceback" not in r.output
    assert loads_since(mark) == []       # rejected before anything was loaded
    assert not (home / "o").exists()


# --- the options reach the loaders ----------------------------------------------------------

def test_options_reach_every_loader_of_every_verb(world, home):
    common = ["--device", "cpu", "--precision", "bf16", "--space-option", "workers=4",
              "--space-option", "trust_remote_code=true",
              "--space-option", "checkpoint=/path/x.pt"]
    want = {"device": "cpu", "precision": "bf16", "workers": 4, "trust_remote_code": True,
            "checkpoint": "/path/x.pt"}

    def expect(run_tag, names):
        opts = {**want, "run": run_tag}
        return [(n, opts) for n in sorted(names)]

    # build: both spaces of the expression (embedding pools, then the bundle's fingerprints)
    mark = len(LOADS)
    bundle = home / "f.safetensors"
    r = run("build", "opt:base + c(opt:expert)", "--audio", world / "pool" / "audio",
            "--texts", world / "pool" / "texts.txt", "-o", bundle, "--hyper", "epochs=1",
            "--hyper", "hidden=8", "--hyper", "batch=8", "-q", "--json",
            *common, "--space-option", "run=build")
    assert r.exit_code == 0, r.output
    assert loads_since(mark) == expect("build", ["opt:base", "opt:expert"])
    # ... and the spaces that were used are the ones loaded with these options
    for name in ("opt:base", "opt:expert"):
        assert spaces.get(name, **want, run="build").options == {**want, "run": "build"}

    # embed: a plain space and a bundle (its base spaces)
    mark = len(LOADS)
    r = run("embed", "opt:base", world / "pool" / "audio", "-o", home / "e1", "-q",
            *common, "--space-option", "run=embed1")
    assert r.exit_code == 0, r.output
    assert loads_since(mark) == expect("embed1", ["opt:base"])
    mark = len(LOADS)
    r = run("embed", bundle, "--texts", world / "pool" / "texts.txt", "-o", home / "e2", "-q",
            *common, "--space-option", "run=embed2")
    assert r.exit_code == 0, r.output
    assert loads_since(mark) == expect("embed2", ["opt:base", "opt:expert"])
    # fused rows equal the library's own encode with the same options
    texts = [f"a tone {k} here" for k in range(N)]
    import freebind

    direct = freebind.load(bundle).encode("text", texts, **want, run="embed2").numpy()
    np.testing.assert_allclose(np.load(home / "e2" / "text_emb" / "text_emb_0.npy"), direct,
                               rtol=1e-5, atol=1e-6)

    # eval: a plain space, then the bundle
    mark = len(LOADS)
    r = run("eval", "opt:base", "-s", "audiocaps", "-d", world / "ac", "--output", "",
            "--json", *common, "--space-option", "run=eval1")
    assert r.exit_code == 0, r.output
    assert loads_since(mark) == expect("eval1", ["opt:base"])
    assert json.loads(r.stdout)[0]["metrics"]["t2a_R@1"] == 1.0  # same latent per tone
    mark = len(LOADS)
    r = run("eval", bundle, "-s", "audiocaps", "-d", world / "ac", "--output", "", "--json",
            *common, "--space-option", "run=eval2")
    assert r.exit_code == 0, r.output
    assert loads_since(mark) == expect("eval2", ["opt:base", "opt:expert"])

    # tune: the bundle's base spaces
    mark = len(LOADS)
    r = run("tune", bundle, "-s", "audiocaps", "-d", world / "ac", "--grid", "a=0,1",
            "--no-save", "--out", home / "t", "--json",
            *common, "--space-option", "run=tune")
    assert r.exit_code == 0, r.output
    assert loads_since(mark) == expect("tune", ["opt:base", "opt:expert"])


def test_no_options_load_with_defaults(world, home):
    spaces._LOADED.pop(("opt:base", ()), None)  # force a fresh load with no options
    mark = len(LOADS)
    r = run("embed", "opt:base", world / "pool" / "audio", "-o", home / "e", "-q")
    assert r.exit_code == 0, r.output
    assert loads_since(mark) == [("opt:base", {})]


def test_library_functions_take_space_options(world, home):
    from freebind.build.orchestrator import build
    from freebind.evaluate.runner import evaluate, load_target

    mark = len(LOADS)
    fused = build("opt:base + c(opt:expert)", audio=world / "pool" / "audio",
                  text=world / "pool" / "texts.txt", save=False, progress=False,
                  hyper={"epochs": 1, "hidden": 8, "batch": 8},
                  space_options={"device": "cpu", "run": "lib"})
    assert fused.build_report.jobs
    assert loads_since(mark) == [("opt:base", {"device": "cpu", "run": "lib"}),
                                         ("opt:expert", {"device": "cpu", "run": "lib"})]
    target = load_target("opt:expert", space_options={"precision": "fp32", "run": "lib"})
    assert target.space.options == {"precision": "fp32", "run": "lib"}
    mark = len(LOADS)
    rec = evaluate("opt:base", "audiocaps", world / "ac", progress=False,
                   space_options={"run": "lib-eval"})
    assert loads_since(mark) == [("opt:base", {"run": "lib-eval"})]
    assert rec["metrics"]["a2t_R@1"] == 1.0


# --- mini spaces take device/precision ------------------------------------------------------

def test_mini_spaces_accept_device_and_precision(home):
    from freebind.util.errors import UsageError

    plain = spaces.get("mini:vl")
    tuned = spaces.get("mini:vl", device="cpu", precision="bf16", workers=3)
    assert tuned.fingerprint == plain.fingerprint  # mini spaces always run in float32
    texts = ["a red square", "two blue circles"]
    np.testing.assert_array_equal(tuned.encode("text", texts).numpy(),
                                  plain.encode("text", texts).numpy())
    with pytest.raises(UsageError, match="unknown precision"):
        spaces.get("mini:vl", precision="fp64")
    with pytest.raises(UsageError, match="unknown option"):
        spaces.get("mini:vl", checkpoint="/x.pt")
    r = run("embed", "mini:vl", "--texts", _texts(home, texts), "-o", home / "m", "-q",
            "--device", "cpu", "--precision", "bf16", "--space-option", "workers=2")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(home / "m" / "text_emb" / "text_emb_0.npy"),
                                  plain.encode("text", texts).numpy())


def _texts(home: Path, texts: list[str]) -> Path:
    path = home / "texts.txt"
    path.write_text("\n".join(texts) + "\n")
    return path


# --- embed --as ---------------------------------------------------------------------------

def test_embed_as_depth_writes_depth_partitions(world, home):
    import pyarrow.parquet as pq

    depth = world / "depth"
    r = run("embed", "opt:base", depth, "--as", "depth", "-o", home / "d", "-q")
    assert r.exit_code == 0, r.output
    files = sorted(p for p in depth.iterdir() if not p.name.startswith("."))
    arr = np.load(home / "d" / "depth_emb" / "depth_emb_0.npy")
    want = spaces.get("opt:base").encode("depth", files).numpy()
    np.testing.assert_allclose(arr, want, rtol=1e-6)
    assert arr.shape == (4, 12)
    meta = pq.read_table(home / "d" / "metadata" / "metadata_0.parquet").to_pylist()
    assert [m["path"] for m in meta] == [str(f) for f in files]   # hidden file left out
    assert {m["modality"] for m in meta} == {"depth"}
    assert not (home / "d" / "image_emb").exists()
    manifest = json.loads((home / "d" / "embed.json").read_text())
    assert [p["modality"] for p in manifest["partitions"]] == ["depth"]
    # without --as the PNGs are images (and the .npy nothing)
    r = run("embed", "opt:base", depth, "-o", home / "i", "-q", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"image": 3}


def test_embed_as_a_modality_the_target_lacks_is_skipped(world, home):
    r = run("embed", "opt:expert", world / "depth" / "d0.png", world / "depth" / "d3.npy",
            "--as", "depth", "-o", home / "x", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["rows"] == 0 and report["partitions"] == 0
    assert [s["path"] for s in report["skipped"]] == [str(world / "depth" / "d0.png"),
                                                      str(world / "depth" / "d3.npy")]
    assert all("no depth modality" in s["reason"] for s in report["skipped"])
    r = run("embed", "opt:expert", world / "depth" / "d0.png", "--as", "depth",
            "-o", home / "y", "--strict", "-q")
    assert r.exit_code == 1 and "skipped" in r.output
    r = run("embed", "opt:base", world / "depth", "--as", "smell", "-o", home / "z")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "unknown modality" in r.output


def test_video_extensions_are_discovered(tmp_path):
    from freebind.data.media import discover
    from freebind.util.vocab import modality_of

    for ext in ("mp4", "avi", "MOV", "mkv", "webm"):
        (tmp_path / f"clip.{ext}").write_bytes(b"x")
        assert modality_of(f"clip.{ext}") == "video"
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "m.npy").write_bytes(b"x")
    found = discover([tmp_path])
    assert [p.name for p in found["video"]] == sorted(f"clip.{e}" for e in
                                                      ("mp4", "avi", "MOV", "mkv", "webm"))
    assert [p.name for p in found["audio"]] == ["a.wav"]
    assert discover([tmp_path], as_modality="imu") == {"imu": sorted(tmp_path.iterdir())}
