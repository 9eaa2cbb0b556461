"""``freebind import`` of a clip-retrieval output folder: seconds and peak anonymous memory
per size, and the time ratio between the largest and the smallest size.

The folder is clip-retrieval's layout, written once per size (block by block) under
``--folder``::

    embeddings/text_emb/text_emb_<k>.npy    float16 [rows, 512] unit rows
    embeddings/metadata/metadata_<k>.parquet   caption, url, key, similarity (k's rows)

(``--partition-rows`` rows a partition, clip-retrieval's ``write_batch_size``). Every caption
is distinct, so every row is keyed (SHA-256 of its text), checked and written to the store
(``CLIP-B32``, 512-d, under a declared identity; nothing is loaded). Each size runs in a
fresh process; peak RssAnon (sampled every 5 ms: the memory-mapped partitions and the page
cache are not counted) and seconds are printed::

    .venv/bin/python benchmarks/bench_import.py --rows 500000 2000000 --json

Target: the largest size takes at most (largest / smallest) x 1.125 the time of the
smallest (2M rows: at most 4.5 x 500k), peak anonymous memory under 1 GB. Wall time is
mostly writing the store's shards (float32: 2 KB a row) and follows the disk; the CPU-time
ratio is printed beside it (run on a quiet machine for the wall-time ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from anon_memory import Peak, in_fresh_process

SPACE, DIM = "CLIP-B32", 512


def write_folder(folder: Path, n: int, per_part: int) -> Path:
    """A clip-retrieval output of ``n`` caption rows (written once; reused after)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = folder / f"cr-{n}-{per_part}" / "embeddings"
    done = out.parent / "done"
    if done.exists():
        return out
    shutil.rmtree(out.parent, ignore_errors=True)
    (out / "text_emb").mkdir(parents=True)
    (out / "metadata").mkdir()
    rng = np.random.default_rng(0)
    for k, s in enumerate(range(0, n, per_part)):
        rows = min(per_part, n - s)
        emb = np.lib.format.open_memmap(out / "text_emb" / f"text_emb_{k}.npy", "w+",
                                        np.float16, (rows, DIM))
        for b in range(0, rows, 65536):
            x = rng.standard_normal((min(65536, rows - b), DIM)).astype(np.float32)
            emb[b:b + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        emb.flush()
        del emb
        ids = np.arange(s, s + rows)
        writer = None
        for b in range(0, rows, 65536):
            i = ids[b:b + 65536]
            table = pa.table({"caption": [f"a photo of item {j} in a LAION-like pool" for j in i],
                              "url": [f"https://example.org/img/{j}.jpg" for j in i],
                              "key": [f"{j:09d}" for j in i],
                              "similarity": rng.random(len(i)).astype(np.float32)})
            if writer is None:
                writer = pq.ParquetWriter(out / "metadata" / f"metadata_{k}.parquet",
                                          table.schema)
            writer.write_table(table)
        writer.close()
    done.write_text("ok")
    return out


def one(n: int, per_part: int, folder: Path) -> dict:
    from freebind.run.importer import import_embeddings

    source = write_folder(folder, n, per_part)
    cache = folder / f"cache-{n}"
    shutil.rmtree(cache, ignore_errors=True)
    with Peak() as m:
        report = import_embeddings(SPACE, source, cache_dir=cache, progress=False)
    seconds, cpu = m.seconds, m.cpu
    assert report.rows == {"text": n} and report.written == {"text": n}, report.rows
    shutil.rmtree(cache, ignore_errors=True)
    return {"rows": n, "partitions": -(-n // per_part), "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2), "rows_per_second": round(n / seconds),
            "base_anon_mb": round(m.base / 2**20, 1),
            "peak_anon_mb": round(m.peak / 2**20, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[500_000, 2_000_000])
    ap.add_argument("--partition-rows", type=int, default=250_000)
    ap.add_argument("--folder", default=None, help="where the folders go (default: tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated folders")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    folder = Path(args.folder or Path(tempfile.gettempdir()) / "freebind-bench-import")
    folder.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one(args.rows[0], args.partition_rows, folder)))
        return
    runs = []
    for n in args.rows:                          # a fresh process per size: a clean peak
        runs.append(in_fresh_process(__file__, ["--rows", n, "--partition-rows",
                                                args.partition_rows, "--folder", folder],
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"}))
        if not args.keep:
            shutil.rmtree(folder / f"cr-{n}-{args.partition_rows}", ignore_errors=True)
    first, last = runs[0], runs[-1]
    ratio = last["seconds"] / first["seconds"] if len(runs) > 1 else None
    allowed = 1.125 * last["rows"] / first["rows"] if len(runs) > 1 else None
    cpu = last["cpu_seconds"] / first["cpu_seconds"] if len(runs) > 1 else None
    result = {"runs": runs, "time_ratio": None if ratio is None else round(ratio, 2),
              "cpu_ratio": None if cpu is None else round(cpu, 2),
              "time_ratio_allowed": allowed,
              "peak_anon_mb_max": max(r["peak_anon_mb"] for r in runs)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'rows':>9} {'parts':>5} {'seconds':>8} {'cpu s':>8} {'rows/s':>8} "
          f"{'peak anon MB':>13}")
    for r in runs:
        print(f"{r['rows']:>9} {r['partitions']:>5} {r['seconds']:>8} {r['cpu_seconds']:>8} "
              f"{r['rows_per_second']:>8} {r['peak_anon_mb']:>13}")
    if ratio is not None:
        print(f"time ratio {ratio:.2f} (target <= {allowed:.2f}; CPU time {cpu:.2f}); peak "
              f"{result['peak_anon_mb_max']:.0f} MB (target < 1024)")


if __name__ == "__main__":
    main()
