"""The documented Python API works as written whatever the package layout behind it:
``freebind.load/open/embed/evaluate/tune/push/Index/build``, the ``freebind.embed`` module's
shard API, ``freebind.api.EmbeddingService`` and ``freebind.export.export``. Each runs in a
fresh interpreter, so the order of imports is the user's, not the test session's."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str, cwd) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, cwd=cwd, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_the_curated_names_resolve(tmp_path):
    out = run("""
        import freebind
        names = ["load", "open", "embed", "evaluate", "tune", "push", "Index", "build",
                 "plan", "parse", "format", "import_embeddings", "FusedSpace", "Target",
                 "FreebindError", "spaces"]
        assert all(callable(getattr(freebind, n)) or n == "spaces" for n in names)
        from freebind.embed import EmbedPlan, begin, finish, plan_embed, run_shard
        from freebind.api import EmbeddingService, serve
        from freebind.export import default_feeds, export
        print(freebind.__version__)
        """, tmp_path)
    assert out.strip() == "0.1.0"


def test_modules_named_like_functions_stay_callable(tmp_path):
    """``freebind.embed``, ``freebind.build`` and ``freebind.evaluate`` are both modules (or
    packages) and functions: after importing the module the call still works."""
    run(f"""
        import numpy as np
        import freebind
        import freebind.embed, freebind.build.orchestrator, freebind.evaluate.entrypoints
        assert all(callable(m) for m in (freebind.embed, freebind.build, freebind.evaluate))
        open(r"{tmp_path}/t.txt", "w").write("a dog barks\\nrain\\n")
        plan = freebind.embed.plan_embed("mini:clap", texts=r"{tmp_path}/t.txt",
                                         output=r"{tmp_path}/a")
        report = freebind.embed("mini:clap", texts=r"{tmp_path}/t.txt",
                                output=r"{tmp_path}/b", progress=False)
        assert isinstance(plan, freebind.embed.EmbedPlan) and report.rows == 2
        a = np.load(r"{tmp_path}/b/text_emb/text_emb_0.npy")
        assert a.shape == (2, report.dim) and np.isfinite(a).all()
        """, tmp_path)
