"""The non-finite output guard: the check itself, and ``freebind embed`` reporting and skipping
an item whose embedding came out NaN (each family's adapter is checked in its own test file
through tests/nan_guard.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from freebind.util.errors import MediaError
from freebind.spaces.guard import NonFiniteEmbedding, check_finite, item_label


def test_finite_output_is_returned_unchanged():
    out = torch.randn(3, 4)
    assert check_finite(out, "S", "text", ["a", "b", "c"]) is out
    arr = np.ones((2, 4), dtype=np.float32)
    assert check_finite(arr, "S", "image", ["x", "y"]) is arr
    empty = torch.zeros(0, 4)
    assert check_finite(empty, "S", "text", []) is empty


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_first_offending_row_is_named(bad, kind):
    out = np.zeros((4, 3), dtype=np.float32)
    out[2, 1] = bad
    out[3, 0] = bad
    out = torch.from_numpy(out) if kind == "torch" else out
    items = [Path("/m/a.png"), Path("/m/b.png"), Path("/m/c.png"), Path("/m/d.png")]
    with pytest.raises(NonFiniteEmbedding) as err:
        check_finite(out, "IB", "image", items)
    msg = str(err.value)
    assert msg.startswith("/m/c.png: space IB produced a non-finite")
    assert "image embedding for item 2 (and 1 more); the batch is refused" in msg
    assert "\n" not in msg
    assert isinstance(err.value, MediaError)  # the store's skip policy applies


def test_text_labels_are_one_short_line():
    text = "a caption\nover two lines " + "x" * 200
    label = item_label(text)
    assert "\n" not in label and len(label) == 80 and label.startswith("a caption over two")
    with pytest.raises(NonFiniteEmbedding) as err:
        check_finite(torch.tensor([[float("nan")]]), "minilm", "text", [text])
    assert "\n" not in str(err.value) and str(err.value).startswith(label + ": space minilm")


def test_embed_cli_reports_and_skips_a_nan_item(tmp_path, monkeypatch):
    from freebind.mini.spaces import MiniSpace
    from freebind_cli.main import app

    run = MiniSpace._run

    def poisoned(self, modality, items, prepare, batch_size):
        out = run(self, modality, items, prepare, batch_size)
        rows = [i for i, t in enumerate(items) if modality == "text" and t == "zz poisoned"]
        if rows:
            out = out.clone()
            out[rows] = float("nan")
        return out

    monkeypatch.setattr(MiniSpace, "_run", poisoned)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in (("a.txt", "a dog barks"), ("b.txt", "zz poisoned"), ("c.txt", "rain")):
        (docs / name).write_text(text)
    out = tmp_path / "o"
    args = ["embed", "mini:bind", str(docs), "-o", str(out), "--cache-dir", str(tmp_path / "c"),
            "--metadata-format", "jsonl"]
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert [(Path(s["path"]).name, "non-finite" in s["reason"]) for s in rep["skipped"]] == \
        [("b.txt:1", True)]
    arr = np.load(out / "text_emb" / "text_emb_0.npy")
    assert arr.shape == (2, 64) and np.isfinite(arr).all()
    rows = [json.loads(x) for x in (out / "metadata" / "metadata_0.jsonl").read_text().split("\n")
            if x]
    assert [Path(r_["path"]).name for r_ in rows] == ["a.txt:1", "c.txt:1"]
    strict = CliRunner().invoke(app, [*args[:4], str(tmp_path / "o2"), *args[5:], "--strict",
                                      "-q"])
    assert strict.exit_code == 1 and "b.txt" in strict.output
