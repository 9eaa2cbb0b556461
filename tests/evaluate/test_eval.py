"""`freebind.evaluate` end to end on fixtures in real layouts, with test spaces whose answers
are known: a space that decodes the tone of each file exactly (perfect retrieval) and one
that confuses pairs of tones (ties everywhere: the pessimistic policy gives known values).
The CLI's parsing and printing: test_eval_cli.py."""

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

runner = CliRunner()
N_TONES = 6
RATE = 16000


def tone_of_wav(path) -> int:
    from freebind.data.media import load_audio

    wave = load_audio(path, RATE)          # MediaError for files it cannot decode
    spectrum = np.abs(np.fft.rfft(wave))
    freq = np.argmax(spectrum) * RATE / len(wave)
    return int(round((freq - 200) / 100))


def tone_of_png(path) -> int:
    return int(np.asarray(Image.open(path))[0, 0, 0]) // 40


def tone_of_text(text: str) -> int:
    return int(text.split("tone ")[1].split()[0].strip(".,"))


class ToneSpace:
    """Embeds every item on the axis of its tone (``fold`` merges tones pairwise)."""

    def __init__(self, name, modalities, dim, fold=1, rotate=0):
        self.name, self.modalities, self.dim = name, modalities, dim
        self.fold, self.rotate = fold, rotate
        self.fingerprint = f"{name}-v1"
        self.calls = 0

    def encode(self, modality, items, batch_size=32):
        self.calls += len(items)
        of = {"audio": tone_of_wav, "image": tone_of_png, "text": tone_of_text}[modality]
        out = torch.zeros(len(items), self.dim)
        for i, x in enumerate(items):
            out[i, (of(x) // self.fold + self.rotate) % self.dim] = 1.0
        return out


TEST_SPACES = {
    "test:tone": ToneSpace("test:tone", ("audio", "image", "text"), 8),
    "test:half": ToneSpace("test:half", ("audio", "image", "text"), 8, fold=2),
    "test:expert": ToneSpace("test:expert", ("audio", "text"), 6, rotate=1),
}
for _ref, _sp in TEST_SPACES.items():
    spaces.register(SpaceInfo(name=_ref, family="test", modalities=_sp.modalities, dim=_sp.dim,
                              loader=lambda info, **o: TEST_SPACES[info.name]), replace=True)


def write_wav(path: Path, tone: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(RATE // 10) / RATE
    sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 100 * tone) * t)).astype(np.float32), RATE)


def write_png(path: Path, tone: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (tone * 40 + 5, 0, 0)).save(path)


def make_audiocaps(root: Path, n: int = N_TONES) -> Path:
    rows = ["audiocap_id,youtube_id,start_time,caption"]
    for k in range(n):
        ytid = f"yt{k:09d}"
        write_wav(root / "audio" / f"{ytid}.wav", k)
        rows += [f"{1000 + 5 * k + j},{ytid},0,a tone {k} heard take {j}" for j in range(5)]
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    return root


def make_esc50(root: Path) -> Path:
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    names = [f"tone {k} sound" for k in range(N_TONES)]
    for k in range(N_TONES):
        for j in range(2):
            fn = f"{j + 1}-{k}-A-{k}.wav"
            write_wav(root / "audio" / fn, k)
            rows.append(f"{fn},{j + 1},{k},{names[k].replace(' ', '_')},False,{k},A")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return root


def make_vggss(root: Path) -> Path:
    entries = []
    for k in range(N_TONES):
        write_wav(root / "audio" / f"clip{k}.wav", k)
        write_png(root / "frames" / f"clip{k}.png", k)
        entries.append({"file": f"clip{k}"})
    (root / "vggss.json").write_text(json.dumps(entries))
    return root


def make_bundle(path: Path, expression="test:tone + c(test:expert)", seed=0) -> Path:
    import freebind
    from freebind.fusion.fused import FusedSpace
    from freebind.fusion.projector import ProjectorGroup

    plan = freebind.plan(expression)
    torch.manual_seed(seed)
    groups = {}
    for job in plan.jobs:
        g = ProjectorGroup(len(job.data_modes), job.source_dim, job.target_dim, hidden=16)
        g.eval()
        groups[job.id] = g
    FusedSpace.from_plan(plan, groups).save(path)
    return path


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "220"})
    return result


def ev(targets, suites, data, **kw):
    import freebind

    kw.setdefault("progress", False)
    as_list = lambda x: x if isinstance(x, list) else [x]  # noqa: E731
    return freebind.evaluate(as_list(targets), as_list(suites), as_list(data), **kw)


def test_eval_perfect_and_tied_spaces_side_by_side(home):
    data = make_audiocaps(home / "audiocaps")
    recs = {x["model"]: x for x in ev(["test:tone", "test:half"], "audiocaps", data,
                                      output="results/{model}/{dataset}.json")}
    tone, half = recs["test:tone"]["metrics"], recs["test:half"]["metrics"]
    assert tone["t2a_R@1"] == tone["a2t_R@1"] == tone["t2a_mAP@10"] == 1.0
    # test:half puts two clips on one axis: a caption ties its clip with one other clip
    # (pessimistic: rank 1); a clip ties its 5 captions with 5 others (first hit at rank 5)
    assert half["t2a_R@1"] == 0.0 and half["t2a_R@5"] == 1.0
    assert half["t2a_mAP@10"] == pytest.approx(0.5)
    assert half["a2t_R@1"] == 0.0 and half["a2t_R@5"] == 0.0 and half["a2t_R@10"] == 1.0
    rec = recs["test:tone"]
    assert rec["dataset"] == "audiocaps" and rec["task"] == "retrieval"
    assert rec["protocol"]["tasks"][0]["n_items"] == N_TONES
    assert rec["protocol"]["tasks"][0]["n_captions"] == 5 * N_TONES
    written = json.loads(Path(rec["path"]).read_text())
    assert written["metrics"] == tone
    assert Path(rec["path"]) == Path("results/test_tone/audiocaps.json")


def test_eval_several_suites_under_one_root(home):
    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    make_vggss(home / "sets" / "vggss")
    recs = ev(["test:tone", "test:half"], ["audiocaps", "esc50", "vggss"], home / "sets")
    assert [(r["dataset"], r["model"]) for r in recs] == [
        (s, m) for s in ("audiocaps", "esc50", "vggss") for m in ("test:tone", "test:half")]
    by = {(r["dataset"], r["model"]): r["metrics"] for r in recs}
    assert "t2a_R@1" in by["audiocaps", "test:tone"] and "acc1" in by["esc50", "test:tone"]
    assert by["vggss", "test:tone"]["a2i_R@1"] == 1.0
    assert not (home / "results").exists() and "path" not in recs[0]


def test_eval_cache_means_no_reencoding(home):
    data = make_audiocaps(home / "ac")
    sp = TEST_SPACES["test:tone"]
    before = sp.calls
    ev("test:tone", "audiocaps", data)
    first = sp.calls - before
    assert first == N_TONES + 5 * N_TONES
    (rec,) = ev("test:tone", "audiocaps", data)
    assert sp.calls - before == first and rec["encoded"] == 0


def test_eval_bundle_factors_match_direct_fusion(home):
    data = make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    (rec,) = ev(str(bundle), "audiocaps", data, factors=["a=0.3"],
                output="out/{model}-{dataset}.json")
    assert rec["factors"]["b1"]["factors"] == {"audio": 0.3, "text": 0.5}
    assert rec["model"] == "b[a=0.3]" and Path(rec["path"]) == Path("out/b_a=0.3-audiocaps.json")
    assert Path(rec["path"]).is_file()
    # the same numbers from the library: encode with the bundle, then the metric
    import freebind
    from freebind.evaluate.metrics import paired_retrieval_metrics
    from freebind.evaluate.suites import load_suite

    fused = freebind.load(bundle, factors=["a=0.3"])
    es = load_suite("audiocaps", data)
    task = es.tasks[0]
    a = fused.encode("audio", task.items).numpy()
    t = fused.encode("text", task.captions).numpy()
    want = paired_retrieval_metrics(t @ a.T, task.caption_item)
    assert rec["metrics"] == pytest.approx(want)
    # another factor: nothing is encoded again (base spaces' embeddings are cached)
    expert = TEST_SPACES["test:expert"]
    calls = expert.calls
    (rec2,) = ev(str(bundle), "audiocaps", data, factors=["a=0.9"])
    assert rec2["encoded"] == 0 and expert.calls == calls
    assert rec2["factors"]["b1"]["factors"]["audio"] == 0.9
    # presets stored in the bundle, inline or with preset=; a resolved target works too
    (m3,) = ev(f"{bundle}@at-expertise", "audiocaps", data)
    (m4,) = ev(str(bundle), "audiocaps", data, preset="at-expertise")
    (m5,) = ev([freebind.open(f"{bundle}@at-expertise")], "audiocaps", data)
    assert m3["metrics"] == m4["metrics"] == m5["metrics"] and m3["preset"] == "at-expertise"
    assert m3["factors"]["b1"]["factors"] == {"audio": 0.8, "text": 0.5}


def test_eval_errors_name_the_problem(home):
    from freebind.util.errors import FreebindError

    data = make_audiocaps(home / "ac")
    make_vggss(home / "vg")
    for args, kw, message in (
            (("test:tone", "nosuch", data), {}, "unknown suite"),
            (("test:tone", "audiocaps", home / "nowhere"), {}, "no such folder"),
            (("test:tone", "audiocaps", data), {"factors": ["a=0.5"]}, "plain space"),
            (("test:expert", "vggss", home / "vg"), {}, "no image modality"),
            (("test:tone", "audiocaps", data), {"suite_options": {"folds": "1"}},
             "no chosen suite takes it"),
            # no target: the default bundle (freebind.run.implicit), and here there is none
            (([], "audiocaps", data), {}, "no target given, no build recorded"),
            (("test:tone", ["audiocaps", "esc50"], [data, data, data]), {}, "data folders")):
        with pytest.raises(FreebindError, match=message) as info:
            ev(*args, **kw)
        assert info.value.exit_code == 2 and "--" not in str(info.value)


def test_eval_reports_missing_and_unreadable(home):
    data = make_audiocaps(home / "ac")
    (data / "audio" / "yt000000000.wav").unlink()
    (data / "audio" / "yt000000001.wav").write_bytes(b"not a wav file")
    warnings = []
    (rec,) = ev("test:tone", "audiocaps", data, warn=warnings.append)
    assert rec["protocol"]["missing"] == 2
    assert rec["protocol"]["tasks"][0]["n_items"] == N_TONES - 2
    assert any("unreadable" in m for m in rec["protocol"]["missing_examples"])
    assert rec["metrics"]["t2a_R@1"] == 1.0
    assert len(warnings) == 1 and warnings[0].startswith("audiocaps: 1 of ")


def test_eval_record_keeps_results_in_the_bundle(home):
    import freebind

    data = make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    for extra in ({}, {"preset": "at-expertise"}, {"factors": ["a=0.2"]}):
        (last,) = ev(str(bundle), "audiocaps", data, record=True, **extra)
    ev_ = freebind.load(bundle).metadata["evaluation"]["audiocaps"]
    assert set(ev_) == {"default", "at-expertise", "default[a=0.2]"}
    assert ev_["default[a=0.2]"]["metrics"] == last["metrics"]
    r = run("info", bundle)
    assert r.exit_code == 0 and "audiocaps" in r.stdout


def test_output_folder_without_fields_holds_one_file_per_result():
    from freebind.evaluate.runner import output_path

    rec = {"dataset": "audiocaps", "model": "mini:bind", "task": "t2a"}
    assert output_path("out", rec) == Path("out") / "mini_bind" / "audiocaps.json"
    assert output_path("r/{dataset}.json", rec) == Path("r/audiocaps.json")
    assert output_path("one.json", rec) == Path("one.json")


def test_eval_streams_embeddings_fusion_and_metrics(home, monkeypatch):
    """Memory-mapped base rows, fusion in chunks of 2 rows into a memory-mapped scratch file
    and metric blocks of 3 rows give the numbers of whole arrays."""
    from freebind.evaluate import runner as rn
    from freebind.evaluate.metrics import paired_retrieval_metrics
    from freebind.evaluate.suites import load_suite
    from freebind.data.store import PoolView

    import freebind

    data = make_audiocaps(home / "ac")
    make_esc50(home / "esc50")
    bundle = make_bundle(home / "b.safetensors")
    whole = {r["dataset"]: r["metrics"] for r in ev(str(bundle), ["audiocaps", "esc50"],
                                                    [data, home / "esc50"])}
    # the whole-array reference: fuse every row at once, one similarity matrix
    fused = freebind.load(bundle)
    task = load_suite("audiocaps", data).tasks[0]
    a = fused.encode("audio", task.items).numpy()
    t = fused.encode("text", task.captions).numpy()
    assert whole["audiocaps"] == paired_retrieval_metrics(t @ a.T, task.caption_item)

    made = []
    real_scratch = rn.scratch_array

    def tracked(n, dim, folder=None):
        arr = real_scratch(n, dim, folder)
        made.append(arr)
        return arr

    real_blocks = freebind.FusedSpace.fuse_blocks
    seen = []

    def small_chunks(self, embeddings, *args, **kw):
        seen.extend(type(v).__name__ for mods in embeddings.values() for v in mods.values())
        kw["chunk_rows"] = 2
        return real_blocks(self, embeddings, *args, **kw)

    monkeypatch.setattr(rn, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(rn, "scratch_array", tracked)
    monkeypatch.setattr(freebind.FusedSpace, "fuse_blocks", small_chunks)
    streamed = {r["dataset"]: r["metrics"] for r in ev(str(bundle), ["audiocaps", "esc50"],
                                                       [data, home / "esc50"], block_rows=3)}
    assert streamed == whole
    assert made and all(isinstance(x, np.memmap) for x in made)
    assert set(seen) == {PoolView.__name__}
    scratch = Path(made[0].filename).parent
    assert scratch.name == "scratch"                     # next to the embedding cache
    assert not list(scratch.glob("fused-*.npy"))        # names removed at once


def test_scratch_array_in_memory_or_a_nameless_map(tmp_path, monkeypatch):
    from freebind.evaluate import runner as rn

    small = rn.scratch_array(4, 3, tmp_path)
    assert not isinstance(small, np.memmap) and small.shape == (4, 3)
    monkeypatch.setattr(rn, "IN_MEMORY_BYTES", 0)
    big = rn.scratch_array(5, 2, tmp_path / "s")
    big[:] = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert isinstance(big, np.memmap) and big[4, 1] == 9.0
    assert list((tmp_path / "s").iterdir()) == []
