import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty FREEBIND_HOME under tmp_path, which is also the working folder."""
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
