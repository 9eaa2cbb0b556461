"""``freebind push --dry-run``: the repository folder and its model card, parsed as Markdown;
the folder put in huggingface_hub's cache layout makes ``hf:ORG/NAME`` work, and the card's
own Python example runs against it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from hub_cache import put  # noqa: E402

import freebind  # noqa: E402
from freebind.algebra import plan  # noqa: E402
from freebind.fusion.fused import FusedSpace  # noqa: E402
from freebind.fusion.projector import ProjectorGroup  # noqa: E402
from freebind_cli.main import app  # noqa: E402

EXPR = "IB + d(mini:vl) + c(mini:clap, a=0.7)"
EVAL = {"audiocaps": {"default": {"metrics": {"t2a_R@1": 0.1234567, "a2t_R@1": 0.25},
                                  "task": "retrieval"},
                      "versatile": {"metrics": {"t2a_R@1": 0.3}, "task": "retrieval"}},
        "esc50": {"default": {"metrics": {"acc1": 0.5}, "task": "classification"}}}
DATA = {"audio": {"items": 120, "fingerprint": "f00d"},
        "text": {"items": 300, "fingerprint": "beef"}}


def make(path: Path, expr=EXPR, evaluation=EVAL, data=DATA) -> Path:
    p = plan(expr)
    g = torch.Generator().manual_seed(0)
    proj = {j.id: ProjectorGroup(2, j.source_dim, j.target_dim, hidden=16, generator=g).eval()
            for j in p.jobs}
    spaces = {r: {**m, "fingerprint": f"fp-{r}"} for r, m in p.spaces.items()}
    meta = {"spaces": spaces, "data": data}
    if evaluation:
        meta["evaluation"] = evaluation
    return FusedSpace(p, proj, meta).save(path)


def parse_card(text: str):
    """(front matter, headings, tables [[row cells]], fences {info: [code]})"""
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(body)
    headings, tables, fences, row, table = [], [], {}, None, None
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            headings.append((tok.tag, tokens[i + 1].content))
        elif tok.type == "table_open":
            table = []
        elif tok.type == "table_close":
            tables.append(table)
        elif tok.type == "tr_open":
            row = []
        elif tok.type == "tr_close":
            table.append(row)
        elif tok.type == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            row.append(tok.content)
        elif tok.type == "fence":
            fences.setdefault(tok.info, []).append(tok.content)
    return yaml.safe_load(front), headings, tables, fences


def test_dry_run_writes_the_bundle_and_a_card_that_parses(tmp_path):
    bundle = make(tmp_path / "b.safetensors")
    result = CliRunner().invoke(app, ["push", str(bundle), "org/fused", "--dry-run",
                                      str(tmp_path / "repo"), "--json"])
    assert result.exit_code == 0, result.output
    repo = tmp_path / "repo"
    assert sorted(p.name for p in repo.iterdir()) == ["README.md", "fused.safetensors"]
    assert (repo / "fused.safetensors").read_bytes() == bundle.read_bytes()
    front, headings, tables, fences = parse_card((repo / "README.md").read_text())

    assert front["library_name"] == "freebind"
    assert front["license"] == "cc-by-nc-4.0"         # ImageBind's weights are non-commercial
    assert {"freebind", "audio", "image", "text"} <= set(front["tags"])
    assert headings[0] == ("h1", "org/fused")
    assert [h for t, h in headings if t == "h2"] == ["Spaces", "Bonds and presets",
                                                     "Training data", "Evaluation", "Use"]
    by_head = {tuple(t[0]): t[1:] for t in tables}
    spaces = by_head[("space", "family", "dim", "modalities", "licence", "fingerprint")]
    assert ["`IB`", "imagebind", "1024", "audio, image, text, video, depth, thermal, imu",
            "CC-BY-NC-4.0", "`fp-IB`"] in spaces
    assert ["`mini:clap`", "mini", "32", "audio, text", "MIT", "`fp-mini:clap`"] in spaces
    bonds = by_head[("bond", "kind", "experts", "factors", "route")]
    assert bonds == [["`b1`", "displacement", "`mini:vl`", "image=0.8, text=0.8", "fixed"],
                     ["`b2`", "combination", "`mini:clap`", "audio=0.7, text=0.5", "fixed"]]
    presets = dict(by_head[("preset", "factors")])
    assert presets["`default`"] == "(the expression's factors)"
    assert presets["`at-expertise`"] == "b1.image=0.8 b1.text=0.8 b2.audio=0.8 b2.text=0.5"
    assert by_head[("modality", "items", "fingerprint")] == [["audio", "120", "`f00d`"],
                                                             ["text", "300", "`beef`"]]
    assert by_head[("setting", "a2t_R@1", "t2a_R@1")] == [["default", "0.25", "0.1235"],
                                                          ["versatile", "-", "0.3"]]
    assert by_head[("setting", "acc1")] == [["default", "0.5"]]
    assert ("h3", "audiocaps") in headings and ("h3", "esc50") in headings
    assert "freebind embed hf:org/fused media/ -o embeddings/" in fences["bash"][0]
    assert 'freebind.open("hf:org/fused")' in fences["python"][0]


def test_card_python_example_runs_against_the_pushed_folder(tmp_path, monkeypatch):
    """Publish (dry run), lay the folder out as huggingface_hub's cache does after a
    download, and run the card's own Python block: it encodes with the hub reference."""
    bundle = make(tmp_path / "b.safetensors", "mini:bind + c(mini:clap)", evaluation=None,
                  data=None)
    freebind.push(bundle, "org/mini", dry_run=tmp_path / "repo")
    text = (tmp_path / "repo" / "README.md").read_text()
    _, headings, tables, fences = parse_card(text)
    assert "No results are stored in the bundle yet" in text
    assert "records no training data" in text
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    put(tmp_path / "hf", "org/mini", {p.name: p for p in (tmp_path / "repo").iterdir()},
        commit="c" * 40)
    scope: dict = {}
    exec(fences["python"][0], scope)                   # noqa: S102  (the card's example)
    rows = scope["rows"].numpy()
    assert rows.shape == (1, 64)
    want = freebind.load(bundle).encode("text", ["a dog barking"]).numpy()
    np.testing.assert_array_equal(rows, want)


def test_push_errors_are_one_line(tmp_path, monkeypatch):
    runner = CliRunner()
    bundle = make(tmp_path / "b.safetensors")
    bad_repo = runner.invoke(app, ["push", str(bundle), "fused", "--dry-run",
                                   str(tmp_path / "r")])
    assert bad_repo.exit_code == 2 and "a repository is named ORG/NAME" in bad_repo.output
    (tmp_path / "not.safetensors").write_bytes(b"nope")
    not_bundle = runner.invoke(app, ["push", str(tmp_path / "not.safetensors"), "o/n",
                                     "--dry-run", str(tmp_path / "r")])
    assert not_bundle.exit_code == 1 and "not a safetensors file" in not_bundle.output
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = runner.invoke(app, ["push", str(bundle), "o/n"])
    assert offline.exit_code == 1
    assert offline.output.strip() == ("error: push o/n: downloads and uploads are off "
                                      "(HF_HUB_OFFLINE/FREEBIND_OFFLINE); use --dry-run DIR "
                                      "to write the folder only")
    for result in (bad_repo, not_bundle, offline):
        assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("ref, local", [("mini:bind", False), ("bundle:x.safetensors", True),
                                        ("clap:/data/ckpt.pt", True), ("hf:o/n", False),
                                        ("x.safetensors@versatile", True)])
def test_local_space_references_are_flagged(ref, local):
    from freebind.share.push import _is_local_ref

    assert _is_local_ref(ref) is local


def test_push_uploads_the_folder_it_would_write(tmp_path, monkeypatch):
    """The upload step: create_repo (private when asked, existing repos kept) and one
    upload_folder of the same two files the dry run writes; a refusal is one line. The Hub
    is not reachable here, so huggingface_hub's HfApi is replaced by a recorder."""
    import huggingface_hub
    from huggingface_hub import errors

    from freebind.util.errors import SpaceError
    from freebind.share.push import push

    calls = []

    class Recorder:
        def __init__(self, token=None, library_name=None):
            calls.append(("init", token, library_name))

        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, repo_id, folder_path, **kw):
            files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            calls.append(("upload_folder", repo_id, files, kw))
            return type("Info", (), {"commit_url": f"https://hub.test/{repo_id}/commit/1"})()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("FREEBIND_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    bundle = make(tmp_path / "b.safetensors")
    report = push(bundle, "org/fused", private=True, token="tok")
    assert report.uploaded and report.private and report.folder is None
    assert report.url == "https://hub.test/org/fused/commit/1"
    assert calls[0] == ("init", "tok", "freebind")
    assert calls[1] == ("create_repo", "org/fused", {"private": True, "exist_ok": True,
                                                     "repo_type": "model"})
    _, repo, files, kw = calls[2]
    dry = push(bundle, "org/fused", dry_run=tmp_path / "dry")
    assert files == {p.name: p.read_bytes() for p in Path(dry.folder).iterdir()}
    assert kw == {"repo_type": "model", "commit_message": "freebind push b.safetensors"}

    class Refusing(Recorder):
        def create_repo(self, repo_id, **kw):
            import httpx

            response = httpx.Response(403, request=httpx.Request("POST", "https://hub.test"))
            raise errors.HfHubHTTPError("403 Forbidden: no write access", response=response)

    monkeypatch.setattr(huggingface_hub, "HfApi", Refusing)
    with pytest.raises(SpaceError, match=r"^push org/fused: the Hub refused \(403 Forbidden: "
                                         r"no write access\); log in"):
        push(bundle, "org/fused")
