"""Live HTTP servers for the serve tests: a free local port, an ASGI app run by uvicorn in a
thread, and a chunked body sent until the server answers."""

from __future__ import annotations

import socket
import threading
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a daemon thread: ``with
    LiveServer(app) as srv: httpx.get(srv.url("/api/info"))``, or ``start()`` … ``stop()``.
    ``head_timeout`` runs it under :func:`freebind.serve.localhost.guarded_protocol`; the
    other keywords go to ``uvicorn.Config`` (``log_level`` is "error" unless given)."""

    def __init__(self, app, head_timeout: float | None = None, **config):
        import uvicorn

        if head_timeout is not None:
            from freebind.serve.localhost import guarded_protocol

            config["http"] = guarded_protocol(head_timeout)
        config.setdefault("log_level", "error")
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    **config))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 30.0) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline:
                raise AssertionError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def send_chunks_until_answered(sock: socket.socket, chunk: bytes,
                               rounds: int) -> tuple[bytes, int]:
    """Send ``chunk`` again and again as HTTP/1.1 body chunks on ``sock`` (a request head
    with ``Transfer-Encoding: chunked`` already sent, a short timeout set) until the server
    answers, the connection breaks or ``rounds`` chunks went out: ``(what the server said so
    far, bytes of body sent)``."""
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    data, sent = b"", 0
    for _ in range(rounds):
        try:
            sock.sendall(frame)
            sent += len(chunk)
            data += sock.recv(4096)
        except (socket.timeout, BlockingIOError):
            continue
        except OSError:
            break
        if data:
            break
    return data, sent
