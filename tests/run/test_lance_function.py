"""The LanceDB embedding function ``freebind``: a real LanceDB table whose source column mixes
audio paths, image paths and texts is embedded on ``add`` exactly as ``freebind.open``
encodes, queries too; the function's configuration survives reopening the table."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from search_world import make_bundle

import freebind

pytest.importorskip("lancedb")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from freebind.mini.writers import write_pools

    root = tmp_path_factory.mktemp("lance-fn")
    write_pools(root / "pools", n_audio=3, n_image=3, n_text=0, seed=7)
    return root, make_bundle(root / "fused.safetensors")


def test_rows_and_queries_are_the_targets_embeddings(world):
    import lancedb
    from lancedb.embeddings import get_registry
    from lancedb.pydantic import LanceModel, Vector

    import freebind.run.lance_function  # noqa: F401  (registers "freebind")

    root, bundle = world
    fb = get_registry().get("freebind").create(target=str(bundle), preset="at-expertise")
    assert fb.ndims() == freebind.load(str(bundle)).dim

    class Item(LanceModel):
        src: str = fb.SourceField()
        vector: Vector(fb.ndims()) = fb.VectorField()

    table = lancedb.connect(root / "db").create_table("items", schema=Item)
    wavs = sorted(str(p) for p in (root / "pools" / "audio").glob("*.wav"))
    pngs = sorted(str(p) for p in (root / "pools" / "image").glob("*.png"))
    texts = ["a dog barking", "a red circle"]
    table.add([{"src": s} for s in wavs + pngs + texts])
    got = {r["src"]: np.asarray(r["vector"]) for r in table.to_arrow().to_pylist()}
    tgt = freebind.open(str(bundle), preset="at-expertise")
    for m, items in (("audio", wavs), ("image", pngs), ("text", texts)):
        want = tgt.encode(m, items).numpy()
        np.testing.assert_allclose(np.stack([got[s] for s in items]), want, atol=1e-6)
    q = tgt.encode("text", ["a dog barking"]).numpy()[0]
    hits = table.search("a dog barking").limit(3).to_list()
    order = sorted(got, key=lambda s: -float(got[s] @ q))[:3]
    assert [h["src"] for h in hits] == order


def test_a_reopened_table_embeds_queries_in_a_new_process(world):
    root, bundle = world
    script = textwrap.dedent(f"""
        import lancedb, numpy as np
        import freebind, freebind.run.lance_function
        t = lancedb.connect({str(root / "db")!r}).open_table("items")
        hit = t.search("a red circle").limit(1).to_list()[0]
        want = freebind.open({str(bundle)!r}, preset="at-expertise").encode(
            "text", ["a red circle"]).numpy()[0]
        print(hit["src"] + "|" + str(float(np.abs(np.asarray(hit["vector"]) - want).max())))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    src, diff = out.stdout.strip().splitlines()[-1].split("|")
    assert src == "a red circle" and float(diff) < 1e-6


def test_an_unknown_modality_is_refused(world):
    from lancedb.embeddings import get_registry

    import freebind.run.lance_function  # noqa: F401
    from freebind.util.errors import UsageError

    root, bundle = world
    fb = get_registry().get("freebind").create(target=str(bundle), modality="depth")
    with pytest.raises(UsageError, match="no depth modality"):
        fb.compute_source_embeddings(["x.png"])
