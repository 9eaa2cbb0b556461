"""``discover`` walks folders in path order and packs what it finds: the same files, in the
same order, as gathering every path and sorting them (what it did before), on a tree with
the cases that order and filtering hinge on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from freebind.data.items import ItemList
from freebind.data.media import Ignored, discover
from freebind.util.errors import MediaError
from freebind.util.vocab import EXTENSION_MODALITIES, modality_of


def gathered(paths, as_modality=None, ignored=None):
    """The reference: every path listed (``rglob``), then sorted and deduplicated."""
    found = {as_modality: []} if as_modality else {m: [] for m in EXTENSION_MODALITIES}
    for root in map(Path, paths):
        if root.is_file():
            candidates = [root]
        else:
            candidates = [p for p in root.rglob("*") if p.is_file() or (
                p.is_symlink() and not p.exists())]
            if as_modality:
                candidates = [p for p in candidates if not any(
                    part.startswith(".") for part in p.relative_to(root).parts)]
        for p in candidates:
            m = as_modality or modality_of(p)
            if m is not None:
                found[m].append(p)
            elif ignored is not None and not p.name.startswith("."):
                ignored.append(p)
    return {m: sorted(set(v)) for m, v in found.items()}


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    files = ["a/b/x.wav", "a/b.txt", "a/b.wav", "a/b-c/y.wav", "a/B.png", "a/0.jpg",
             "c.flac", "notes.csv", "pools.json", ".hidden.wav", ".git/x.png",
             "deep/er/est/z.mp3", "z/ünï.png", "z/a b.jpg", "z/.ds.csv"]
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (root / "dangling.wav").symlink_to(root / "gone.wav")
    (root / "linked").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "link.wav").symlink_to(root / "c.flac")
    return root


def _listed(found):
    return {m: list(v) for m, v in found.items()}


@pytest.mark.parametrize("as_modality", [None, "audio"])
def test_discover_equals_gathering_and_sorting(tree, as_modality):
    want_ignored, got_ignored = [], []
    want = gathered([tree], as_modality, want_ignored)
    got = discover([tree], as_modality=as_modality, ignored=got_ignored)
    assert all(isinstance(v, ItemList) for v in got.values())
    assert _listed(got) == want and got_ignored == sorted(want_ignored)
    assert want.get("audio") and (as_modality or want["image"] and want["text"])
    # several paths, overlapping (a folder, a file in it, a folder in it): merged in order
    roots = [tree / "z", tree / "a" / "b.wav", tree, tree / "a"]
    assert _listed(discover(roots, as_modality=as_modality)) == \
        gathered(roots, as_modality)
    few = Ignored(keep=1)
    discover([tree], as_modality=as_modality, ignored=few)
    assert len(few) == len(want_ignored) and few.examples == sorted(want_ignored)[:1]


def test_discover_relative_to_the_working_folder(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert _listed(discover(["."])) == gathered(["."])
    assert str(discover(["."])["audio"][0]) == str(gathered(["."])["audio"][0])
    assert not str(discover(["."])["audio"][0]).startswith("./")
    with pytest.raises(MediaError, match="nowhere: no such file or folder"):
        discover(["a", "nowhere"])
    assert _listed(discover([])) == {m: [] for m in EXTENSION_MODALITIES}
