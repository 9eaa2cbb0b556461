"""Listing a pool held in tar shards against the same pool as a folder of files: items per
second (one run each, same bytes) and the memory a listed item holds (tracemalloc), so a
pool of millions is keys and offsets, not media.

    .venv/bin/python benchmarks/bench_readers.py [ITEMS] [BYTES_PER_ITEM]"""

import io
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def main(n: int = 50_000, size: int = 4096, per_shard: int = 5000):
    from freebind.data.media import discover
    from freebind.data.readers import read_pool
    from freebind.data.store import EmbeddingStore

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "audio"
        folder.mkdir()
        shards = tmp / "shards"
        shards.mkdir()
        blobs = [rng.bytes(size) for _ in range(min(n, 512))]
        tf = None
        for i in range(n):
            data = blobs[i % len(blobs)][:-8] + i.to_bytes(8, "little")
            (folder / f"{i:08d}.wav").write_bytes(data)
            if i % per_shard == 0:
                if tf is not None:
                    tf.close()
                tf = tarfile.open(shards / f"{i // per_shard:06d}.tar", "w")
            info = tarfile.TarInfo(f"{i:08d}.wav")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        tf.close()
        pattern = str(shards / f"{{000000..{(n - 1) // per_shard:06d}}}.tar")

        t = time.perf_counter()
        files = discover([folder])["audio"]
        store = EmbeddingStore(tmp / "cache")
        folder_keys = [store.key("audio", p) for p in files]
        t_folder = time.perf_counter() - t

        t = time.perf_counter()
        items = read_pool("audio", pattern).items["audio"]
        t_tar = time.perf_counter() - t
        del items
        tracemalloc.start()          # memory in a second listing (tracemalloc slows it)
        items = read_pool("audio", pattern).items["audio"]
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        tar_keys = [m.key for m in items]
        assert tar_keys == folder_keys, "keys differ between the forms"
    print(f"{n} items of {size} bytes ({n * size / 1e6:.0f} MB)")
    print(f"folder: discover + key   {t_folder:6.2f} s  {n / t_folder:9.0f} items/s")
    print(f"tar shards: list + key   {t_tar:6.2f} s  {n / t_tar:9.0f} items/s  "
          f"(ratio folder/tar {t_folder / t_tar:.2f})")
    print(f"held per listed item     {held / n:6.0f} bytes (the list of Members; "
          f"1M items ≈ {held / n * 1e6 / 1e6:.0f} MB)")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)
