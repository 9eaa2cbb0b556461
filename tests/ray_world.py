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
    """Processes of this machine's Ray actors whose title names ``name``."""
    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if cmd.startswith("ray::") and name in cmd and p.info["pid"] != os.getpid():
            pids.append(p.info["pid"])
    return sorted(pids)
