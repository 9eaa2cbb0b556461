"""Vector databases as search back ends: recall@10 of ``freebind index --to URI`` search against
the exact local index, on the mini world, under several factor settings, for LanceDB
(embedded), Qdrant (local mode) and Milvus Lite; and the time to write and to query.

    .venv/bin/python benchmarks/bench_vectordb.py [--items 2000] [--bundle FUSED.safetensors]
        [--engines lancedb,qdrant,milvus] [--queries 100] [--candidates 40]

Without --bundle the quick start's bundle is built first (mini:bind + d(mini:vl) +
c(mini:clap), about two minutes). ``--items`` audio clips, images and texts of the mini world
are embedded once; each engine gets the same index. The queries are items' own fused vectors
under each setting (every modality searched), as :func:`freebind.search.databases.measure_recall`
does; ``--candidates`` is how many rows each of the three columns (``vector``, ``a``, ``b``)
yields per modality before freebind's exact rescoring.
"""

import argparse
import tempfile
import time
from pathlib import Path

import freebind
from freebind.search import Index
from freebind.search import databases

EXPR = "mini:bind + d(mini:vl) + c(mini:clap)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--bundle")
    ap.add_argument("--engines", default="lancedb,qdrant,milvus")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=databases.MIN_CANDIDATES)
    args = ap.parse_args()
    from freebind.mini.writers import write_pools

    work = Path(tempfile.mkdtemp(prefix="bench-vectordb-"))
    bundle = args.bundle
    if bundle is None:
        t = time.time()
        bundle = str(work / "fused.safetensors")
        freebind.build(EXPR, output=bundle, progress=False)
        print(f"built {bundle} in {time.time() - t:.0f}s")
    n = args.items
    write_pools(work / "pools", n_audio=n, n_image=n, n_text=n, seed=11)
    t = time.time()
    freebind.embed(bundle, [work / "pools" / "audio", work / "pools" / "image"],
                   work / "pools" / "texts.txt", work / "emb", cache_dir=work / "cache",
                   progress=False)
    local = Index(bundle, store=work / "cache")
    local.add_embeddings(work / "emb", store=work / "cache")
    print(f"{3 * n} items embedded and indexed locally in {time.time() - t:.0f}s")
    databases.MIN_CANDIDATES = args.candidates
    uris = {"lancedb": f"lancedb:{work}/lance#bench", "qdrant": f"qdrant:{work}/qdrant#bench",
            "milvus": f"milvus:{work}/milvus.db#bench"}
    for engine in args.engines.split(","):
        uri = uris[engine]
        t = time.time()
        written = databases.write_index(local, uri)
        t_write = time.time() - t
        db = databases.DatabaseIndex(uri, store=work / "cache")
        t = time.time()
        recall = databases.measure_recall(local, db, n=args.queries)
        queries = 3 * min(args.queries, n) * len(recall)
        t_query = (time.time() - t) / queries
        db.close()
        cells = ", ".join(f"{label} {r:.3f}" for label, r in recall.items())
        print(f"{engine}: {written['rows']} rows written in {t_write:.1f}s; recall@10 "
              f"({args.candidates} candidates a column): {cells}; "
              f"{1000 * t_query:.0f} ms a query (with the exact local search it is "
              f"compared with)")


if __name__ == "__main__":
    main()
