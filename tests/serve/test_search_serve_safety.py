"""freebind serve as an attacker and a crowd would use it: foreign hosts and origins, blind
text/plain posts, odd ids and bodies, symlinked files, decoding bombs, chunked floods, many
uploads, a busy decoder, the temporary folder at shutdown."""

import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from freebind.search import Index  # noqa: E402
from freebind.serve.search_server import Uploads, create_app  # noqa: E402
from live_server import LiveServer, free_port, send_chunks_until_answered  # noqa: E402
from search_world import make_index  # noqa: E402

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    return root, make_index(root)


@pytest.fixture(scope="module")
def served(world):
    root, index_dir = world
    index = Index.load(index_dir)
    app = create_app(index, max_upload=200_000, upload_dir=str(root / "uploads"),
                     max_pixels=10_000, max_seconds=1.0)
    return TestClient(app, base_url=BASE, raise_server_exceptions=False), index, root


def wav_bytes(seconds=0.5, rate=16000, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=int(seconds * rate)) * 3000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width × height pixels but holds almost no data (a bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def assert_json_error(r, status=None):
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert "error" in r.json()
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    assert "/tmp" not in r.text and "freebind-serve" not in r.text


# --- localhost safety -------------------------------------------------------------------------
def test_foreign_host_is_refused(served):
    client, _, _ = served
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example"):
        r = client.get("/api/info", headers={"Host": host})
        assert 400 <= r.status_code < 500, host
        assert_json_error(r)
        assert "expression" not in r.text
    assert client.get("/api/info", headers={"Host": "localhost:8765"}).status_code == 200


def test_blind_cross_site_posts_are_refused(served):
    client, _, _ = served
    r = client.post("/api/search", content=b'{"text": "dog"}',
                    headers={"Content-Type": "text/plain"})
    assert_json_error(r, 415)
    r = client.post("/api/search", json={"text": "dog"},
                    headers={"Origin": "http://evil.example"})
    assert_json_error(r, 403)
    r = client.post("/api/search", json={"text": "dog"}, headers={"Origin": BASE})
    assert r.status_code == 200


def test_info_has_no_server_paths(served, world):
    client, _, _ = served
    root, _ = world
    assert str(root) not in client.get("/api/info").text


# --- errors -----------------------------------------------------------------------------------
def test_odd_ids_and_deep_json_are_4xx(served):
    client, _, _ = served
    for bad in ("%C2%B2", "%D9%A3", "%EF%BC%91", "１"):
        r = client.get(f"/api/media/{bad}")
        assert_json_error(r, 404)
    deep = b"[" * 100_000 + b"]" * 100_000
    r = client.post("/api/search", content=deep, headers={"Content-Type": "application/json"})
    assert_json_error(r)
    assert r.status_code == 400
    r = client.post("/api/search", content=b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                    headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500


def test_range_errors_are_json_and_head_works(served):
    client, index, _ = served
    i = next(j for j, it in enumerate(index.items) if it["modality"] == "audio")
    size = os.path.getsize(index.items[i]["path"])
    r = client.get(f"/api/media/{i}", headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and len(r.content) == 10
    r = client.get(f"/api/media/{i}", headers={"Range": f"bytes={size + 10}-"})
    assert_json_error(r, 416)
    r = client.get(f"/api/media/{i}", headers={"Range": "bytes=abc"})
    assert_json_error(r, 400)
    r = client.head(f"/api/media/{i}")
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == size
    assert r.headers["x-content-type-options"] == "nosniff"
    for path in ("/", "/api/info", "/static/app.js", "/favicon.ico"):
        assert client.head(path).status_code == 200, path


def test_decode_errors_name_the_upload_not_the_server(served):
    client, _, root = served
    r = client.post("/api/upload", files={"file": ("holiday.png", b"\x89PNG broken",
                                                   "image/png")})
    assert_json_error(r, 422)
    assert "holiday.png" in r.json()["error"]
    r = client.post("/api/upload", files={"file": ("song.wav", b"RIFF....WAVEfmt junk",
                                                   "audio/wav")})
    assert_json_error(r, 422)
    assert "song.wav" in r.json()["error"] and str(root) not in r.text


# --- uploads ----------------------------------------------------------------------------------
def test_images_refused_by_pixels_before_decoding(served):
    client, _, _ = served
    r = client.post("/api/upload", files={"file": ("bomb.png", png_header_only(30000, 30000),
                                                   "image/png")})
    assert_json_error(r, 413)
    assert "MP" in r.json()["error"] and "bomb.png" in r.json()["error"]
    r = client.post("/api/upload", files={"file": ("wide.png", png_header_only(200, 100),
                                                   "image/png")})
    assert_json_error(r, 413)  # 20,000 pixels over this server's 10,000


def test_audio_refused_by_duration(served):
    client, _, _ = served
    r = client.post("/api/upload", files={"file": ("long.wav", wav_bytes(3.0), "audio/wav")})
    assert_json_error(r, 413)
    assert "3 s" in r.json()["error"]
    r = client.post("/api/upload", files={"file": ("short.wav", wav_bytes(0.5), "audio/wav")})
    assert r.status_code == 200, r.text


def test_many_uploads_each_followed_by_its_search(served):
    """Tokens are not a count of 64: 200 uploads then their 200 searches all succeed."""
    client, _, _ = served
    tokens = []
    for i in range(200):
        r = client.post("/api/upload", files={"file": (f"c{i}.wav", wav_bytes(0.2, seed=i),
                                                       "audio/wav")})
        assert r.status_code == 200, r.text
        tokens.append(r.json()["upload"])
    for t in tokens:
        r = client.post("/api/search", json={"upload": t, "k": 2})
        assert r.status_code == 200, r.text


def test_upload_tokens_by_budget_and_age():
    now = [0.0]
    up = Uploads(budget=3 * (1000 + 256), ttl=60, clock=lambda: now[0])
    a = up.add({"bytes": 1000})
    b = up.add({"bytes": 1000})
    c = up.add({"bytes": 1000})
    assert all(up.get(t) for t in (a, b, c))
    d = up.add({"bytes": 1000})  # over the budget: the oldest goes
    assert up.get(a) is None and up.get(d) is not None
    now[0] = 30.0
    e = up.add({"bytes": 10})
    now[0] = 61.0  # b, c, d are 61 s old, e 31 s
    assert up.get(b) is None and up.get(d) is None and up.get(e) is not None


def test_temp_folder_removed_when_the_app_stops(world):
    root, index_dir = world
    app = create_app(Index.load(index_dir), upload_dir=str(root / "up2"))
    tmp = app.state.upload_dir
    with TestClient(app, base_url=BASE) as client:
        r = client.post("/api/upload", files={"file": ("a.wav", wav_bytes(0.3), "audio/wav")})
        assert r.status_code == 200 and tmp.is_dir()
    assert not tmp.exists()


# --- only indexed files -----------------------------------------------------------------------
def test_symlinks_and_swapped_folders_are_not_served(tmp_path):
    index_dir = make_index(tmp_path, n=4)
    index = Index.load(index_dir)
    images = [i for i, it in enumerate(index.items) if it["modality"] == "image"]
    audios = [i for i, it in enumerate(index.items) if it["modality"] == "audio"]
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret")
    victim = Path(index.items[images[0]]["path"])
    victim.unlink()
    victim.symlink_to(secret)
    client = TestClient(create_app(index, upload_dir=str(tmp_path / "u")), base_url=BASE,
                        raise_server_exceptions=False)
    r = client.get(f"/api/media/{images[0]}")
    assert_json_error(r, 404)
    assert "secret" not in r.text
    assert client.get(f"/api/media/{images[1]}").status_code == 200
    # the audio folder swapped for a link to another folder holding the same names
    audio_dir = Path(index.items[audios[0]]["path"]).parent
    assert client.get(f"/api/media/{audios[0]}").status_code == 200
    other = tmp_path / "elsewhere"
    shutil.copytree(audio_dir, other)
    (other / Path(index.items[audios[0]]["path"]).name).write_bytes(b"RIFF evil")
    shutil.rmtree(audio_dir)
    audio_dir.symlink_to(other)
    r = client.get(f"/api/media/{audios[0]}")
    assert_json_error(r, 404)


# --- a real server ----------------------------------------------------------------------------
def test_chunked_upload_stops_at_the_limit(world):
    root, index_dir = world
    app = create_app(Index.load(index_dir), max_upload=100_000, upload_dir=str(root / "u3"))
    with LiveServer(app, head_timeout=10) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked"
                  b"\r\nContent-Type: multipart/form-data; boundary=XX\r\n\r\n")
        head = (b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\""
                b"\r\nContent-Type: audio/wav\r\n\r\n")
        s.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        s.settimeout(0.05)
        data, sent = send_chunks_until_answered(s, b"x" * 16384, 2000)  # up to 32 MB
        s.close()
        assert data.startswith(b"HTTP/1.1 413"), data[:100]
        assert sent < 5_000_000, sent
        leftovers = [p for p in app.state.upload_dir.iterdir()]
        assert leftovers == []


def test_info_answers_while_uploads_decode(world):
    """Decoding runs in a pool: /api/info answers while slow decodes are under way."""
    root, index_dir = world
    index = Index.load(index_dir)
    original = index._query_leaves

    def slow(*args, **kwargs):
        time.sleep(1.5)  # a large file being decoded
        return original(*args, **kwargs)

    index._query_leaves = slow
    app = create_app(index, upload_dir=str(root / "u4"))
    import httpx

    with LiveServer(app, head_timeout=10) as srv:
        results = []

        def send(i):
            with httpx.Client() as c:
                r = c.post(srv.url("/api/upload"), files={
                    "file": (f"s{i}.wav", wav_bytes(0.2, seed=100 + i), "audio/wav")},
                    timeout=60)
                results.append(r.status_code)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.4)
        waits = []
        with httpx.Client() as c:
            for _ in range(5):
                t0 = time.perf_counter()
                assert c.get(srv.url("/api/info"), timeout=30).status_code == 200
                waits.append(time.perf_counter() - t0)
        for t in threads:
            t.join()
        assert results == [200] * 4
        assert max(waits) < 1.0, waits


def test_host_checks_in_the_cli(monkeypatch, world):
    from typer.testing import CliRunner

    import freebind.serve.search_server as serve_mod
    from freebind_cli.main import app

    calls = []
    monkeypatch.setattr(serve_mod, "serve", lambda *a, **k: calls.append(k))
    _, index_dir = world
    r = CliRunner().invoke(app, ["serve", str(index_dir), "--host", ""])
    assert r.exit_code != 0 and "--host" in r.output and not calls
    r = CliRunner().invoke(app, ["serve", str(index_dir), "--host", "127.0.0.2"])
    assert r.exit_code == 0 and "warning" not in r.output
    n = len(calls)
    r = CliRunner().invoke(app, ["serve", str(index_dir), "--host", "0.0.0.0",
                                 "--allowed-host", "box.lan"])
    assert r.exit_code != 0 and "needs an API key" in r.output and "--no-auth" in r.output
    assert len(calls) == n and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["serve", str(index_dir), "--host", "0.0.0.0",
                                 "--allowed-host", "box.lan", "--no-auth"])
    assert r.exit_code == 0 and "warning" in r.output and "--no-auth" in r.output
    assert calls[-1]["allowed_hosts"] == ["box.lan"] and calls[-1]["keys"] == []
    key = "k" * 24
    r = CliRunner().invoke(app, ["serve", str(index_dir), "--host", "0.0.0.0",
                                 "--api-key", key])
    assert r.exit_code == 0 and "warning" not in r.output and key not in r.output
    assert calls[-1]["keys"] == [key] and calls[-1]["no_auth"] is False


@pytest.mark.slow
def test_sigterm_removes_the_upload_folder(world, tmp_path):
    _, index_dir = world
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "freebind_cli.main", "serve", str(index_dir),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        assert list(tmp_path.glob("freebind-serve-*"))
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert not list(tmp_path.glob("freebind-serve-*"))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_first_searches_from_several_threads(world):
    """A fresh process whose first searches arrive together (the page asks for every
    modality at once): the space catalog is filled once, not raced."""
    _, index_dir = world
    code = f"""
import threading
from freebind.search import Index
index = Index.load({str(index_dir)!r})
errors = []
def go(m):
    try:
        index.search("a dog", modality=m, k=2)
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=go, args=(m,)) for m in ("audio", "image") * 3]
[t.start() for t in threads]
[t.join() for t in threads]
print("errors:", errors)
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert "errors: []" in out.stdout, out.stdout + out.stderr[-2000:]
