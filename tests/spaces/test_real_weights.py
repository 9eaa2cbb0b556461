"""Weight resolution and download, against a file server on the loopback interface."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from freebind.util.errors import SpaceError
from freebind.spaces import weights


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    (root / "model.bin").write_bytes(b"weights" * 1000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


def _file(url, name="model.bin"):
    return weights.WeightFile(filename=name, family="testfam", origin=url,
                              fetch=weights.url_fetch(f"{url}/{name}", name))


def test_download_goes_to_freebind_home_atomically(server, tmp_path, monkeypatch):
    url, httpd = server
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    for var in weights.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    path = weights.resolve(_file(url))
    assert path == tmp_path / "home" / "weights" / "testfam" / "model.bin"
    assert path.read_bytes() == b"weights" * 1000
    assert [p.name for p in path.parent.iterdir()] == ["model.bin"]  # no .part left
    assert not (tmp_path / "model.bin").exists()  # nothing in the working directory
    httpd.shutdown()
    assert weights.resolve(_file(url)) == path  # found locally, no second download


def test_offline_variable_forbids_download(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FREEBIND_OFFLINE", "1")
    with pytest.raises(SpaceError, match="model.bin not found \\(offline: FREEBIND_OFFLINE"):
        weights.resolve(_file(url))
    with pytest.raises(SpaceError, match="downloads disabled"):
        weights.resolve(_file(url), download=False)


def test_failed_download_is_one_line_and_leaves_nothing(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    for var in weights.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SpaceError) as err:
        weights.resolve(_file(url, "missing.bin"))
    assert "download failed" in str(err.value) and "\n" not in str(err.value)
    folder = tmp_path / "home" / "weights" / "testfam"
    assert not folder.exists() or not any(folder.iterdir())


def test_explicit_path_must_exist(tmp_path):
    with pytest.raises(SpaceError, match="does not exist \\(given explicitly\\)"):
        weights.resolve(_file("http://127.0.0.1:9"), tmp_path / "nope" / "x.bin")
    real = tmp_path / "x.bin"
    real.write_bytes(b"1")
    assert weights.resolve(_file("http://127.0.0.1:9"), real) == real


def test_unreachable_host_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("FREEBIND_HOME", str(tmp_path / "home"))
    for var in weights.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SpaceError, match="cannot reach 127.0.0.1"):
        weights.resolve(_file("http://127.0.0.1:9"))  # discard port: nothing listens
