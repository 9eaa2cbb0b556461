"""``require_packages``: a missing reference library skips a test module on a laptop but
fails it in CI (``CI=true``), so a reference that setup.sh did not install never passes
unseen."""

from __future__ import annotations

import pytest

from real_helpers import require_packages


def test_skips_outside_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed: freebind_no_such_pkg"):
        require_packages("json", "freebind_no_such_pkg")


def test_fails_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_packages("freebind_no_such_pkg")
    require_packages("json")  # present: nothing happens
