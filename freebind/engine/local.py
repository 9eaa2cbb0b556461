"""The local engine: chunks encoded in this process, through the store."""

from __future__ import annotations

import os
import socket
import time


def run(chunks, spaces, store, report, batch_size: int = 64, progress: bool = True) -> None:
    """Encode ``chunks`` here; each becomes one store shard (what ``store.embed`` writes for
    exactly those items)."""
    from freebind.engine import WorkerStats

    stats = WorkerStats(f"{socket.gethostname()}:{os.getpid()} (local)")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(c.todo) for c in chunks), unit="item", desc="embed (local)")
    try:
        for chunk in chunks:
            t = time.perf_counter()
            before = store.encoded
            _, _, failures = store.embed(spaces[chunk.ref], chunk.modality, list(chunk.items),
                                         batch_size=batch_size, progress=False,
                                         on_error="skip")
            stats.seconds += time.perf_counter() - t
            stats.items += len(chunk.todo)
            stats.failures += len(failures)
            report.encoded += store.encoded - before
            if store.encoded > before:
                report.written += 1
            report.failures += [{"path": f.item, "reason": f.reason,
                                 "modality": chunk.modality} for f in failures]
            if bar is not None:
                bar.update(len(chunk.todo))
    finally:
        if bar is not None:
            bar.close()
    report.workers.append(stats)
