"""A run killed for real: a Python script started in a subprocess and SIGKILLed part way
through its work (where the resume tests start from)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def run_and_kill(script: Path, ready: Callable[[], bool], *, timeout: float, poll: float,
                 settle: float, env: dict | None = None) -> None:
    """Run ``script`` with this Python (environment ``env``); once ``ready()`` holds (looked at
    every ``poll`` seconds, for at most ``timeout`` seconds), wait ``settle`` seconds and
    SIGKILL it. Fails when the script ended before it was killed."""
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            break
        time.sleep(poll)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
