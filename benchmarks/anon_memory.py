"""Peak anonymous memory (RssAnon: what the process holds, not the page cache that
memory-mapped reads leave behind) for the benchmarks: a sampler around one call, stages of
a long run, and one size per fresh process (a clean peak)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time


def anon_bytes() -> int:
    """RssAnon of this process (bytes)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def trim() -> None:
    """glibc's ``malloc_trim(0)``: return freed heap memory to the OS, so that memory an
    earlier stage freed is not counted as held by the next (no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Peak:
    """``with Peak() as p: ...``: wall and CPU seconds of the block, RssAnon at its start
    (``base``) and its peak (``peak``, bytes), sampled every 5 ms."""

    def __enter__(self):
        self.base = anon_bytes()
        self._peak, self._stop = self.base, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, anon_bytes())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._c0
        self._stop.set()
        self._thread.join()
        self.peak = max(self._peak, anon_bytes())
        return False


class Stages:
    """Seconds and peak anonymous memory per stage, sampled every few milliseconds."""

    def __init__(self):
        self.rows: list[dict] = []
        self._name, self._t0, self._peak = None, 0.0, 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.005):
            a = anon_bytes()
            with self._lock:
                self._peak = max(self._peak, a)

    def begin(self, name: str) -> None:
        self.end()
        trim()    # what the last stage freed goes back to the OS: a stage's peak is its own
        with self._lock:
            self._name, self._t0, self._peak = name, time.perf_counter(), anon_bytes()

    def end(self) -> None:
        with self._lock:
            if self._name is None:
                return
            peak = max(self._peak, anon_bytes())
            self.rows.append({"stage": self._name,
                              "seconds": round(time.perf_counter() - self._t0, 2),
                              "peak_anon_mb": round(peak / 2**20, 1)})
            # each stage as it ends (stderr), so a long run that is stopped still tells
            print(json.dumps(self.rows[-1]), file=sys.stderr, flush=True)
            self._name = None

    def close(self) -> None:
        self.end()
        self._stop.set()
        self._thread.join()


def in_fresh_process(script: str, args: list, env=None) -> dict:
    """Run ``script --one ARGS`` in a fresh Python (a clean peak); the JSON of its last
    stdout line."""
    out = subprocess.run([sys.executable, script, "--one", *map(str, args)],
                         check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])
