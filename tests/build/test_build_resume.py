"""A ``freebind build`` really killed mid-run resumes: nothing re-encoded, finished jobs
reused, and the bundle equals an uninterrupted build's byte for byte."""

from __future__ import annotations

import textwrap
from pathlib import Path

from build_world import register_world, write_world  # noqa: E402
from killed_run import run_and_kill  # noqa: E402

HERE = Path(__file__).resolve().parents[1] / "support"
EXPR = "test:base + d(test:vl) + c(test:at)"
HYPER = {"hidden": 64, "batch": 32, "epochs": 15, "patience": 15, "threads": 1}


def test_killed_build_resumes_to_the_uninterrupted_bundle(tmp_path):
    register_world()
    root = tmp_path / "world"
    write_world(root, n=120)
    cache = tmp_path / "cache"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from build_world import register_world
        register_world()
        import freebind
        freebind.build({EXPR!r}, pools={str(root)!r}, output={str(tmp_path / 'k.safetensors')!r},
                       cache_dir={str(cache)!r}, hyper={HYPER!r}, progress=False)
    """))
    # killed once j1 is finished, while j2 trains
    run_and_kill(script, lambda: bool(list((cache / "jobs").glob("*.safetensors"))),
                 timeout=120, poll=0.01, settle=0.3)
    assert not (tmp_path / "k.safetensors").exists()
    assert len(list((cache / "jobs").glob("*.safetensors"))) == 1

    from freebind.build.orchestrator import build

    resumed = build(EXPR, pools=root, output=tmp_path / "r.safetensors", cache_dir=cache,
                    hyper=HYPER, progress=False)
    rep = resumed.build_report
    assert rep.encoded == 0
    assert [j.cached for j in rep.jobs] == [True, False]
    fresh = build(EXPR, pools=root, output=tmp_path / "f.safetensors",
                  cache_dir=tmp_path / "fresh", hyper=HYPER, progress=False)
    assert [j.cached for j in fresh.build_report.jobs] == [False, False]
    assert (tmp_path / "r.safetensors").read_bytes() == (tmp_path / "f.safetensors").read_bytes()
