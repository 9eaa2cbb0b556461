"""The local engine: chunks encoded in this process, through the store."""

from __future__ import annotations

import os
import socket
import time

import numpy as np

from freebind.util.progress import bar


def run(chunks, spaces, store, report, batch_size: int = 64, progress: bool = True) -> None:
    """Encode ``chunks`` here; each becomes one store shard (what ``store.embed`` writes for
    exactly those items)."""
    from freebind.run.engines.options import WorkerStats

    stats = WorkerStats(f"{socket.gethostname()}:{os.getpid()} (local)")
    from freebind.util.text import reason

    with bar(total=sum(len(c.todo) for c in chunks), unit="item", desc="embed (local)",
             disable=not progress) as pbar:
        for chunk in chunks:
            t = time.perf_counter()
            before = store.encoded
            space = spaces[chunk.ref]
            # the store's own encoding loop over exactly the chunk's items: one shard
            bad = store._encode_missing(space, chunk.modality, chunk.todo_items,
                                        chunk.todo_keys, np.arange(len(chunk.todo_keys)),
                                        store.modality_dir(space, chunk.modality),
                                        batch_size, False, "skip")
            stats.seconds += time.perf_counter() - t
            stats.items += len(chunk.todo)
            stats.failures += len(bad)
            report.encoded += store.encoded - before
            if store.encoded > before:
                report.written += 1
            report.failures += [{"path": it, "reason": reason(bad[k], it),
                                 "modality": chunk.modality}
                                for k, it in chunk.todo if k in bad]
            pbar.update(len(chunk.todo))
    report.workers.append(stats)
