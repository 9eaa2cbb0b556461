"""Helpers for tests on a local Ray: the setup hook Ray workers run (registers the test
world's spaces), and finding the encoder actors' processes to kill."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def setup():
    from build_world import register_world

    register_world()


def actor_pids(name: str = "FreebindEncoder") -> list[int]:
    """Processes of this machine's Ray actors whose title names ``name`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd.startswith(b"ray::") and name.encode() in cmd:
            pids.append(int(entry.name))
    return sorted(pids)
