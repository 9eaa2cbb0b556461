"""``freebind.run.partitions`` killed mid-run (a real SIGKILL) resumes to the uninterrupted
result."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from build_world import register_world, write_world  # noqa: E402
from killed_run import run_and_kill  # noqa: E402

import freebind  # noqa: E402

HERE = Path(__file__).resolve().parents[1] / "support"


def test_killed_embed_resumes_to_the_uninterrupted_result(tmp_path):
    register_world()
    root = tmp_path / "world"
    write_world(root, n=48)
    cache, out, log = tmp_path / "cache", tmp_path / "out", tmp_path / "encoded.log"
    options = dict(shard_size=8, batch_size=4, partition_size=24, progress=False)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from build_world import register_world
        register_world()
        import freebind
        freebind.embed("test:base", [{str(root / "image")!r}], output={str(out)!r},
                       cache_dir={str(cache)!r}, **{options!r})
    """))
    env = {**os.environ, "FREEBIND_TEST_DELAY": "0.04", "FREEBIND_TEST_LOG": str(log)}
    shard_glob = "*/image/shard-*.npz"
    run_and_kill(script, lambda: len(list(cache.glob(shard_glob))) >= 3, env=env, timeout=60,
                 poll=0.005, settle=0.05)
    assert not (out / "image_emb" / "image_emb_1.npy").exists()  # killed before the end
    encoded_before = sum(int(x) for x in log.read_text().split())
    cached = 8 * len(list(cache.glob(shard_glob)))
    assert 0 <= encoded_before - cached <= 8  # at most one shard's work lost

    from freebind import spaces

    space = spaces.get("test:base")
    calls_before = space.calls
    freebind.embed("test:base", [root / "image"], output=out, cache_dir=cache, **options)
    assert space.calls - calls_before == (48 - cached) // 4  # only the missing batches

    fresh = tmp_path / "fresh"
    freebind.embed("test:base", [root / "image"], output=fresh, cache_dir=tmp_path / "c2",
                   **options)
    for k in (0, 1):
        a = np.load(out / "image_emb" / f"image_emb_{k}.npy")
        b = np.load(fresh / "image_emb" / f"image_emb_{k}.npy")
        assert a.tobytes() == b.tobytes()
    assert (out / "metadata" / "metadata_1.parquet").read_bytes() == \
        (fresh / "metadata" / "metadata_1.parquet").read_bytes()
