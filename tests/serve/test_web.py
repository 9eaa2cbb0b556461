"""freebind.serve.localhost: Host/Origin checks, the streamed body limit, JSON errors, the head
timeout."""

import json
import socket
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from freebind.util.errors import UsageError  # noqa: E402
from freebind.serve.localhost import (ApiError, Guard, HostPolicy, check_bind_host,  # noqa: E402
                                      install_errors, is_loopback, read_json)
from live_server import LiveServer, send_chunks_until_answered  # noqa: E402


def make_app(**guard):
    app = FastAPI()
    install_errors(app)

    @app.post("/echo")
    async def echo(request: Request):
        body = await read_json(request, "echo")
        return {"got": body}

    @app.post("/upload")
    async def upload(request: Request):
        n = 0
        async for chunk in request.stream():
            n += len(chunk)
        return {"bytes": n}

    @app.get("/boom")
    def boom():
        raise RuntimeError("/secret/path/inside")

    @app.get("/teapot")
    def teapot():
        raise ApiError(418, "short and stout")

    return Guard(app, **{"max_body": 1000, "limits": {"/upload": 5000}, **guard})


def client(app, host="127.0.0.1:8765"):
    return TestClient(app, base_url=f"http://{host}", raise_server_exceptions=False)


def test_host_names():
    p = HostPolicy("127.0.0.1")
    for ok in ("127.0.0.1:8765", "localhost", "LOCALHOST:1", "[::1]:80", "app.localhost",
               "127.0.0.5"):
        assert p.allows(ok), ok
    for bad in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "", None,
                "192.168.1.4"):
        assert not p.allows(bad), bad
    lan = HostPolicy("0.0.0.0", ["box.lan", ".example.org"])
    assert lan.allows("box.lan:8765") and lan.allows("a.example.org") \
        and lan.allows("example.org") and lan.allows("localhost")
    assert not lan.allows("0.0.0.0") and not lan.allows("other.lan") \
        and not lan.allows("badexample.org")
    assert HostPolicy("192.168.1.4").allows("192.168.1.4:8765")
    assert HostPolicy("0.0.0.0", ["*"]).allows("anything.example")


def test_foreign_host_and_origin_are_refused():
    c = client(make_app())
    assert c.post("/echo", json={"a": 1}).json() == {"got": {"a": 1}}
    r = client(make_app(), host="evil.example").post("/echo", json={"a": 1})
    assert r.status_code == 400 and "--allowed-host" in r.json()["error"]
    r = c.post("/echo", json={"a": 1}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json() == {"error": "cross-origin requests are refused"}
    r = c.post("/echo", json={"a": 1}, headers={"Origin": "http://127.0.0.1:8765"})
    assert r.status_code == 200
    r = c.post("/echo", json={"a": 1}, headers={"Origin": "null"})
    assert r.status_code == 403
    assert client(make_app(allowed_hosts=["box.lan"]), "box.lan:8765") \
        .post("/echo", json={}).status_code == 200
    assert r.headers["x-content-type-options"] == "nosniff"


def test_json_only_and_json_errors():
    c = client(make_app())
    r = c.post("/echo", content=b'{"a": 1}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = c.post("/echo", content=b"[" * 100_000 + b"]" * 100_000,
               headers={"Content-Type": "application/json"})
    assert r.status_code == 413  # over the 1000-byte limit first
    deep = client(make_app(max_body=1 << 20))
    r = deep.post("/echo", content=b"[" * 100_000 + b"]" * 100_000,
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    r = c.post("/echo", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "echo: the body is not JSON"
    r = c.get("/boom")
    assert r.status_code == 500 and r.json() == {"error": "internal error (RuntimeError)"}
    assert c.get("/teapot").json() == {"error": "short and stout"}
    r = c.get("/nothing-here")
    assert r.status_code == 404 and "error" in r.json()
    assert r.headers["x-content-type-options"] == "nosniff"


def test_streamed_bodies_are_limited_while_they_stream():
    c = client(make_app())
    assert c.post("/upload", content=b"x" * 5000).json() == {"bytes": 5000}
    sent = []

    def chunks(n):
        for _ in range(n):
            sent.append(1)
            yield b"y" * 1000

    r = c.post("/upload", content=chunks(3))  # chunked: no Content-Length
    assert r.status_code == 200 and r.json() == {"bytes": 3000}
    sent.clear()
    r = c.post("/upload", content=chunks(10_000))
    assert r.status_code == 413 and "5000 bytes" in r.json()["error"]
    r = c.post("/upload", content=b"z" * 6000)  # honest header: refused before reading
    assert r.status_code == 413
    r = c.post("/echo", content=b"1" * 1001, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_bind_host_checks():
    with pytest.raises(UsageError, match="--host"):
        check_bind_host("")
    with pytest.raises(UsageError):
        check_bind_host("  ")
    for local in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert check_bind_host(local) is None, local
        assert is_loopback(local)
    assert "every machine" in check_bind_host("0.0.0.0")
    assert "every machine" in check_bind_host("192.168.1.4")


def test_half_open_connections_time_out():
    pytest.importorskip("uvicorn")
    with LiveServer(make_app(), head_timeout=0.5, lifespan="off") as srv:
        port = srv.port
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /teapot HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 3
        s.close()
        s = socket.create_connection(("127.0.0.1", port))  # a complete request still works
        s.sendall(b"GET /teapot HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        assert b"418" in data.split(b"\r\n")[0] and b"short and stout" in data
        body = data.split(b"\r\n\r\n", 1)[1]
        assert json.loads(body) == {"error": "short and stout"}
        s.close()
        # a chunked body past the limit: the 413 comes while the client is still sending
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        s.settimeout(0.2)
        data, sent = send_chunks_until_answered(s, b"y" * 1000, 20_000)  # up to 20 MB
        assert data.startswith(b"HTTP/1.1 413"), data[:80]
        assert sent < 1_000_000, sent
        s.close()
