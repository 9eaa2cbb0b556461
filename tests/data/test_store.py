"""The embedding store: content addressing, caching, failures, and kill-and-resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from freebind.util.errors import MediaError
from freebind.data.store import EmbeddingStore, default_root

FAKE_SPACE = textwrap.dedent('''
    import hashlib, os, time
    import numpy as np
    import torch

    class FakeSpace:
        """Deterministic encoder: a unit vector seeded by the item's content."""
        name = "fake"
        modalities = ("image", "text")
        dim = 16

        def __init__(self, fingerprint="fake-v1", delay=0.0, log=None):
            self.fingerprint = fingerprint
            self.delay = delay
            self.log = log
            self.calls = 0
            self.items = 0

        def _vec(self, data):
            seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)
            return v / np.linalg.norm(v)

        def encode(self, modality, items, batch_size=32):
            from freebind.data.media import load_image
            if self.delay:
                time.sleep(self.delay)
            rows = []
            for it in items:
                if modality == "text":
                    rows.append(self._vec(it.encode()))
                else:
                    rows.append(self._vec(np.asarray(load_image(it)).tobytes()))
            self.calls += 1
            self.items += len(items)
            if self.log:
                with open(self.log, "a") as fh:
                    fh.write(f"{len(items)}\\n")
                    fh.flush()
            return torch.from_numpy(np.stack(rows))
''')

ns: dict = {}
exec(FAKE_SPACE, ns)
FakeSpace = ns["FakeSpace"]


def texts(n):
    return [f"caption number {i}" for i in range(n)]


def test_default_root_follows_freebind_home(monkeypatch, tmp_path):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    assert default_root() == tmp_path / "cache"
    assert EmbeddingStore().root == tmp_path / "cache"


def test_embed_returns_rows_in_item_order_and_caches(tmp_path):
    store = EmbeddingStore(tmp_path, shard_size=5)
    space = FakeSpace()
    items = texts(12)
    a = store.embed(space, "text", items, batch_size=4, progress=False)
    assert a.dtype == np.float32 and a.shape == (12, 16)
    expected = np.stack([space._vec(t.encode()) for t in items])
    np.testing.assert_array_equal(a, expected)
    assert space.items == 12 and store.encoded == 12
    # three shards of at most 5 items
    assert len(list(store.modality_dir(space, "text").glob("shard-*.npz"))) == 3
    # reversed order, duplicates, a subset: nothing re-encoded
    again = store.embed(space, "text", items[::-1] + items[:2], progress=False)
    np.testing.assert_array_equal(again, np.concatenate([expected[::-1], expected[:2]]))
    assert space.items == 12
    # a new item encodes only itself
    store.embed(space, "text", items + ["new one"], progress=False)
    assert space.items == 13
    assert store.cached(space, "text") == 13


def test_fingerprint_and_modality_key_the_cache(tmp_path):
    store = EmbeddingStore(tmp_path)
    s1, s2 = FakeSpace("fp-1"), FakeSpace("fp-2")
    store.embed(s1, "text", texts(3), progress=False)
    store.embed(s2, "text", texts(3), progress=False)
    assert s1.items == 3 and s2.items == 3
    assert store.space_dir(s1) != store.space_dir(s2)


def test_files_are_keyed_by_content_not_name(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 10, 200)).save(root / f"{i}.png")
    (root / "copy.png").write_bytes((root / "1.png").read_bytes())
    store = EmbeddingStore(tmp_path / "cache")
    space = FakeSpace()
    paths = sorted(root.glob("*.png"))
    out = store.embed(space, "image", paths, progress=False)
    assert space.items == 3  # the copy shares its original's key
    names = [p.name for p in paths]
    np.testing.assert_array_equal(out[names.index("copy.png")], out[names.index("1.png")])


def test_bad_files_raise_or_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "good.png")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(root / "full.png")
    data = (root / "full.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "mislabelled.png").write_text("I am text, not an image")
    Image.new("RGB", (8, 8), (5, 6, 7)).save(root / "good2.png")
    paths = [root / n for n in ("good.png", "truncated.png", "mislabelled.png", "missing.png",
                                "good2.png")]
    store = EmbeddingStore(tmp_path / "cache")
    space = FakeSpace()
    with pytest.raises(MediaError, match="truncated.png|mislabelled.png|missing.png"):
        store.embed(space, "image", paths, progress=False)
    out, kept, failures = store.embed(space, "image", paths, progress=False, on_error="skip")
    assert kept.tolist() == [0, 4]
    assert out.shape == (2, 16)
    assert [f.index for f in failures] == [1, 2, 3]
    assert all(f.item.endswith(n) for f, n in zip(failures, ("truncated.png", "mislabelled.png",
                                                            "missing.png")))
    assert "cannot read file" in failures[2].reason
    assert all(f.reason for f in failures)
    single = store.embed(space, "image", [root / "good2.png"], progress=False)
    np.testing.assert_array_equal(single[0], out[1])


def test_a_missing_modality_is_an_error(tmp_path):
    from freebind.util.errors import FreebindError

    with pytest.raises(FreebindError, match="no 'audio' encoder"):
        EmbeddingStore(tmp_path).embed(FakeSpace(), "audio", ["x.wav"], progress=False)


def test_killed_run_resumes_with_at_most_one_shard_recomputed(tmp_path):
    """Really kill a subprocess in the middle of a shard, then resume in this process."""
    n, shard, batch = 96, 8, 4
    log = tmp_path / "encoded.log"
    cache = tmp_path / "cache"
    script = tmp_path / "run.py"
    script.write_text(FAKE_SPACE + textwrap.dedent(f'''
        from freebind.data.store import EmbeddingStore
        store = EmbeddingStore({str(cache)!r}, shard_size={shard})
        items = [f"caption number {{i}}" for i in range({n})]
        store.embed(FakeSpace(delay=0.03, log={str(log)!r}), "text", items,
                    batch_size={batch}, progress=False)
        print("finished")
    '''))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    space = FakeSpace()
    mdir = EmbeddingStore(cache).modality_dir(space, "text")
    deadline = time.time() + 60
    while time.time() < deadline:
        if len(list(mdir.glob("shard-*.npz"))) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.005)
    time.sleep(0.05)  # into the next shard (one batch of the 2 per shard)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()

    encoded_before = sum(int(x) for x in log.read_text().split())
    store = EmbeddingStore(cache, shard_size=shard)
    cached = store.cached(space, "text")
    assert 0 < cached < n and cached % shard == 0
    lost = encoded_before - cached
    assert 0 <= lost <= shard  # at most one shard's work is lost ...
    items = texts(n)
    resumed = store.embed(space, "text", items, batch_size=batch, progress=False)
    assert space.items == n - cached  # ... and only missing items are recomputed

    fresh_space = FakeSpace()
    uninterrupted = EmbeddingStore(tmp_path / "fresh", shard_size=shard).embed(
        fresh_space, "text", items, batch_size=batch, progress=False)
    assert resumed.tobytes() == uninterrupted.tobytes()
    # same shard layout as the uninterrupted run: identical shard file names
    fresh_dir = EmbeddingStore(tmp_path / "fresh").modality_dir(fresh_space, "text")
    assert sorted(p.name for p in mdir.glob("shard-*.npz")) == \
        sorted(p.name for p in fresh_dir.glob("shard-*.npz"))
