"""`freebind eval` end to end on fixtures in real layouts, with test spaces whose answers are
known: a space that decodes the tone of each file exactly (perfect retrieval) and one that
confuses pairs of tones (ties everywhere: the pessimistic policy gives known values)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from typer.testing import CliRunner

from freebind import spaces
from freebind.spaces.base import SpaceInfo
from freebind_cli.main import app

runner = CliRunner()
N_TONES = 6
RATE = 16000


def tone_of_wav(path) -> int:
    from freebind.media import load_audio

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
    from freebind.fused import FusedSpace
    from freebind.projector import ProjectorGroup

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


def test_eval_perfect_and_tied_spaces_side_by_side(home):
    data = make_audiocaps(home / "audiocaps")
    r = run("eval", "test:tone", "test:half", "--suite", "audiocaps", "--data", data, "--json")
    assert r.exit_code == 0, r.output
    recs = {x["model"]: x for x in json.loads(r.stdout)}
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


def test_eval_table_and_several_suites_under_one_root(home):
    make_audiocaps(home / "sets" / "audiocaps")
    make_esc50(home / "sets" / "esc50")
    make_vggss(home / "sets" / "vggss")
    r = run("eval", "test:tone", "test:half", "-s", "audiocaps", "-s", "esc50", "-s", "vggss",
            "-d", home / "sets", "--output", "")
    assert r.exit_code == 0, r.output
    assert "audiocaps" in r.stdout and "t2a_R@1" in r.stdout and "acc1" in r.stdout
    assert "a2i_R@1" in r.stdout and "100.0" in r.stdout
    assert not (home / "results").exists()


def test_eval_cache_means_no_reencoding(home):
    data = make_audiocaps(home / "ac")
    sp = TEST_SPACES["test:tone"]
    before = sp.calls
    assert run("eval", "test:tone", "-s", "audiocaps", "-d", data, "--json").exit_code == 0
    first = sp.calls - before
    assert first == N_TONES + 5 * N_TONES
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "--json")
    assert sp.calls - before == first and json.loads(r.stdout)[0]["encoded"] == 0


def test_eval_bundle_factors_match_direct_fusion(home):
    data = make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    r = run("eval", bundle, "-s", "audiocaps", "-d", data, "--json", "-f", "a=0.3",
            "--output", "out/{model}-{dataset}.json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)[0]
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
    r2 = run("eval", bundle, "-s", "audiocaps", "-d", data, "--json", "-f", "a=0.9")
    rec2 = json.loads(r2.stdout)[0]
    assert rec2["encoded"] == 0 and expert.calls == calls
    assert rec2["factors"]["b1"]["factors"]["audio"] == 0.9
    # presets stored in the bundle, inline or with --preset
    r3 = run("eval", f"{bundle}@at-expertise", "-s", "audiocaps", "-d", data, "--json")
    r4 = run("eval", bundle, "--preset", "at-expertise", "-s", "audiocaps", "-d", data,
             "--json")
    m3, m4 = json.loads(r3.stdout)[0], json.loads(r4.stdout)[0]
    assert m3["metrics"] == m4["metrics"] and m3["preset"] == "at-expertise"
    assert m3["factors"]["b1"]["factors"] == {"audio": 0.8, "text": 0.5}


def test_eval_errors_are_one_line(home):
    data = make_audiocaps(home / "ac")
    r = run("eval", "test:tone", "-s", "nosuch", "-d", data)
    assert r.exit_code == 2 and "unknown suite" in r.output and "Traceback" not in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", home / "nowhere")
    assert r.exit_code == 2 and "no such folder" in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "-f", "a=0.5")
    assert r.exit_code == 2 and "plain space" in r.output
    make_vggss(home / "vg")
    r = run("eval", "test:expert", "-s", "vggss", "-d", home / "vg")
    assert r.exit_code == 2 and "no image modality" in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "-o", "split")
    assert r.exit_code == 2 and "KEY=VALUE" in r.output
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "-o", "folds=1")
    assert r.exit_code == 2 and "no chosen suite takes it" in r.output


def test_eval_reports_missing_and_unreadable(home):
    data = make_audiocaps(home / "ac")
    (data / "audio" / "yt000000000.wav").unlink()
    (data / "audio" / "yt000000001.wav").write_bytes(b"not a wav file")
    r = run("eval", "test:tone", "-s", "audiocaps", "-d", data, "--json")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.stdout)[0]
    assert rec["protocol"]["missing"] == 2
    assert rec["protocol"]["tasks"][0]["n_items"] == N_TONES - 2
    assert any("unreadable" in m for m in rec["protocol"]["missing_examples"])
    assert rec["metrics"]["t2a_R@1"] == 1.0


def test_eval_record_keeps_results_in_the_bundle(home):
    import freebind

    data = make_audiocaps(home / "ac")
    bundle = make_bundle(home / "b.safetensors")
    for extra in ([], ["--preset", "at-expertise"], ["-f", "a=0.2"]):
        r = run("eval", bundle, "-s", "audiocaps", "-d", data, "--record", "--output", "",
                "--json", *extra)
        assert r.exit_code == 0, r.output
    ev = freebind.load(bundle).metadata["evaluation"]["audiocaps"]
    assert set(ev) == {"default", "at-expertise", "default[a=0.2]"}
    last = json.loads(r.stdout)[0]["metrics"]
    assert ev["default[a=0.2]"]["metrics"] == last
    r = run("info", bundle)
    assert r.exit_code == 0 and "audiocaps" in r.stdout
