"""InternVL-C: permission for remote code and offline behaviour (no weights on this machine)."""

from __future__ import annotations

import pytest

import freebind.spaces as spaces
from freebind.errors import SpaceError
from freebind.spaces import internvl


def test_remote_code_needs_explicit_permission(monkeypatch):
    monkeypatch.delenv("FREEBIND_TRUST_REMOTE_CODE", raising=False)
    with pytest.raises(SpaceError, match="trust_remote_code=True"):
        spaces.info("InternVL").load()
    with pytest.raises(SpaceError, match="trust_remote_code"):
        internvl.load(None, trust_remote_code="false")


def test_missing_model_folder_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("FREEBIND_TRUST_REMOTE_CODE", "1")
    with pytest.raises(SpaceError) as err:
        internvl.load(None)
    msg = str(err.value)
    assert "OpenGVLab/InternVL-14B-224px" in msg
    assert str(tmp_path / "weights" / "internvl") in msg and "\n" not in msg
    assert not (tmp_path / "weights").exists()


def test_explicit_folder_must_be_a_model_folder(tmp_path):
    with pytest.raises(SpaceError, match="no config.json"):
        internvl.load(None, checkpoint=str(tmp_path), trust_remote_code=True)


def test_check_reports_without_importing_torch(tmp_path, monkeypatch):
    import subprocess
    import sys

    code = ("import sys, freebind.spaces as s; s.info('InternVL').check(); "
            "s.info('IB').check(); s.info('CLAP_g').check(); s.info('CLIP-B32').check(); "
            "s.info('minilm').check(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__('os').environ, "FREEBIND_HOME": str(tmp_path)})
    assert out.stdout.strip() == "False", out.stderr
