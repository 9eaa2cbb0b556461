"""Progress bars that survive a pipe.

On a terminal :func:`bar` is a tqdm bar. Written to a file or a pipe (a CI log, ``2> log``,
``| tee``), tqdm's carriage-return frames would flood the log, so the bar is replaced by a
quiet stand-in that writes one line when its stage ends (``embed mini:bind audio: 2000
item in 3.1s``). ``FREEBIND_PROGRESS`` overrides the choice: ``bar`` (always tqdm),
``line`` (always the one-line form) or ``off``.
"""

from __future__ import annotations

import os
import sys
import time


class LineProgress:
    """tqdm's interface (``update``, ``close``, ``set_postfix``, context manager), writing
    one line at ``close`` instead of redrawing."""

    def __init__(self, total=None, desc: str = "", unit: str = "it", stream=None,
                 unit_scale: bool = False, **_ignored):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.unit_scale = unit_scale
        self.start = time.perf_counter()
        self.postfix = ""
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args, **kwargs) -> None:
        items = dict(*args, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.n == 0:
            return
        if self.unit_scale and self.n >= 1e6:
            count = f"{self.n / 1e6:.1f} M{self.unit}"
        elif self.unit.isalpha() and len(self.unit) > 1 and self.n != 1:
            plural = self.unit[:-1] + "ies" if self.unit.endswith("y") \
                and self.unit[-2] not in "aeiou" else self.unit + "s"
            count = f"{self.n} {plural}"
        else:
            count = f"{self.n} {self.unit}"
        tail = f" ({self.postfix})" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        self.stream.write(f"{head}{count} in {time.perf_counter() - self.start:.1f}s{tail}\n")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mode(stream) -> str:
    env = os.environ.get("FREEBIND_PROGRESS", "").strip().lower()
    if env in ("bar", "line", "off"):
        return env
    try:
        return "bar" if stream.isatty() else "line"
    except (AttributeError, ValueError):
        return "line"


def bar(total=None, desc: str = "", unit: str = "it", disable: bool = False,
        leave: bool = False, **kwargs):
    """A progress bar for one stage (see the module doc); ``disable`` gives a silent one."""
    stream = kwargs.pop("file", None) or sys.stderr
    mode = "off" if disable else _mode(stream)
    if mode == "bar":
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream, **kwargs)
    progress = LineProgress(total, desc, unit, stream, **kwargs)
    if mode == "off":
        progress.closed = True
    return progress
