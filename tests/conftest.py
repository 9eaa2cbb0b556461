"""Shared fixtures of the test tree (which mirrors the package: tests/build/ for
freebind/build/, …). The helpers several test folders use (worlds of tiny spaces, reference
implementations) live in tests/support/, importable by name from every test module."""

import os
import sys
from pathlib import Path

import pytest

#: tests/support: the shared worlds and references (``from build_world import …``)
SUPPORT = Path(__file__).resolve().parent / "support"
sys.path.insert(0, str(SUPPORT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: the FREEBIND_HOME a user's real weights live in (the real-weight tests read it)
REAL_HOME = os.environ.get("FREEBIND_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                             "freebind")
# Tests never write into the user's FREEBIND_HOME (caches, the last build's record): unless
# FREEBIND_HOME is set, the session uses a fresh one.
if "FREEBIND_HOME" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["FREEBIND_HOME"] = tempfile.mkdtemp(prefix="freebind-test-home-")
    atexit.register(shutil.rmtree, os.environ["FREEBIND_HOME"], True)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty FREEBIND_HOME under tmp_path, which is also the working folder."""
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
