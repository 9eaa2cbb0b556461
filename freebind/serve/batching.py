"""Micro-batching: requests that arrive together are encoded together.

:class:`Batcher` ``(run, window=0.005, max_batch=64, lanes=("text", "media"))`` runs one
worker thread per lane. :meth:`Batcher.submit` ``(lane, key, items)`` (called from a request's
thread) queues a job and waits for its rows. A worker takes the oldest job, then — only while
other requests are being read and parsed (:meth:`Batcher.expect`), so a lone client never
waits — gathers more jobs for at most ``window`` seconds, up to ``max_batch`` items in all
(a bigger request runs on its own). Jobs of one ``key`` are concatenated and handed to
``run(key, items)``, which returns one row per item; each job gets its own rows back. When a
batch of several jobs fails, each job is run alone, so an error reaches only the request
that caused it.

Lanes keep a slow kind of work (decoding audio and images) from holding a fast one (text).
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Callable, Hashable, Sequence

import numpy as np


class _Job:
    __slots__ = ("key", "items", "future")

    def __init__(self, key, items):
        self.key, self.items, self.future = key, list(items), Future()


class Batcher:
    """See the module. ``on_batch(n)`` is told the size of every batch run."""

    def __init__(self, run: Callable[[Hashable, list], Any], window: float = 0.005,
                 max_batch: int = 64, lanes: Sequence[str] = ("text", "media"),
                 on_batch: Callable[[int], None] | None = None):
        self.run, self.window, self.max_batch = run, float(window), max(1, int(max_batch))
        self.on_batch = on_batch
        self._queues = {lane: queue.Queue() for lane in lanes}
        self._expected = 0
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, args=(q,), daemon=True,
                                          name=f"freebind-batch-{lane}")
                         for lane, q in self._queues.items()]
        for t in self._threads:
            t.start()

    @contextmanager
    def expect(self):
        """Around the reading of a request that will submit: workers wait for it."""
        with self._lock:
            self._expected += 1
        try:
            yield
        finally:
            with self._lock:
                self._expected -= 1

    @property
    def expected(self) -> int:
        return self._expected

    def submit(self, lane: str, key: Hashable, items: Sequence) -> np.ndarray:
        """The rows of ``items`` (run with others of the same ``key``); re-raises the
        error of the run."""
        if self._closed:
            raise RuntimeError("the batcher is closed")
        job = _Job(key, items)
        self._queues[lane].put(job)
        return job.future.result()

    def close(self) -> None:
        self._closed = True
        for q in self._queues.values():
            q.put(None)

    def _gather(self, q: queue.Queue, first: _Job) -> list[_Job]:
        jobs, size = [first], len(first.items)
        deadline = time.monotonic() + self.window
        while size < self.max_batch:
            try:
                job = q.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or self._expected <= 0:
                    break
                try:
                    job = q.get(timeout=min(left, 0.0005))
                except queue.Empty:
                    continue
            if job is None:
                q.put(None)
                break
            if size + len(job.items) > self.max_batch:
                q.put(job)   # next batch (order among waiting jobs matters little)
                break
            jobs.append(job)
            size += len(job.items)
        return jobs

    def _work(self, q: queue.Queue) -> None:
        while True:
            first = q.get()
            if first is None:
                return
            jobs = self._gather(q, first)
            groups: dict = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                self._run_group(key, group)

    def _run_group(self, key, group: list[_Job]) -> None:
        items = [x for job in group for x in job.items]
        try:
            rows = self.run(key, items)
        except BaseException as exc:  # noqa: BLE001  handed to the waiting requests
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            for job in group:          # find whose input failed: each alone
                self._run_group(key, [job])
            return
        if self.on_batch is not None:
            self.on_batch(len(items))
        start = 0
        for job in group:
            job.future.set_result(rows[start:start + len(job.items)])
            start += len(job.items)
