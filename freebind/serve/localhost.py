"""Localhost-safe building blocks for freebind's HTTP servers (``freebind serve`` and any
other ASGI app the project runs on this machine).

A local web tool is reachable by every page the user's browser opens: DNS rebinding makes a
foreign page talk to ``127.0.0.1`` under its own host name, and a plain ``<form>`` can POST
to it blind. The pieces here refuse both, bound every request body while it streams, and
turn every error into a JSON ``{"error": message}`` that never carries a server path or a
traceback::

    from freebind.serve.localhost import ApiError, Guard, json_app, read_json, run_guarded

    app = json_app("my tool")                 # every error → JSON 4xx/5xx
    guarded = Guard(app, host="127.0.0.1", allowed_hosts=["box.lan"],
                    max_body=64 * 1024, limits={"/api/upload": 50 << 20})
    run_guarded(guarded, "127.0.0.1", 8765, log_level="warning", head_timeout=10)

API (small on purpose):

* :class:`ApiError` ``(status, message)``: raise it in a handler; the client gets
  ``{"error": message}`` with that status.
* :func:`json_error` ``(status, message, headers=None)``: the ASGI response itself.
* :func:`install_errors` ``(app)``: JSON handlers on a FastAPI/Starlette app for ApiError,
  HTTPException, validation errors, ``RecursionError`` (JSON nested too deeply → 400) and
  anything else (:func:`internal_error`: 500 naming only the exception type).
* :func:`json_app` ``(title, lifespan=None)``: a FastAPI app without documentation pages, its
  errors installed.
* :func:`require_web_packages` ``(purpose, extra, packages=WEB_PACKAGES)``: a UsageError
  naming the missing web packages (``pip install 'freebind[EXTRA]'``), before any work
  starts.
* :class:`Guard` ``(app, host, allowed_hosts=(), max_body, limits={path prefix: bytes})``: pure
  ASGI middleware (not ``@app.middleware("http")``, which wraps errors in an ExceptionGroup):

  - the ``Host`` header must name the bound address, a loopback name (``localhost``,
    ``127.0.0.1``, ``::1``, ``*.localhost``) or an ``allowed_hosts`` entry (``*`` accepts any;
    ``.example.org`` accepts the domain and its subdomains), else 400;
  - an ``Origin`` header must be the page's own (``http(s)://<Host>``), else 403;
  - the body is limited while it streams (chunked bodies included): a ``Content-Length``
    over the limit is refused before reading, a stream that passes it stops with 413;
  - every response gets ``X-Content-Type-Options: nosniff``.
* :func:`read_json` ``(request, what)``: the body of a request that must be
  ``application/json`` (else 415) as a parsed value (malformed or too deep → 400).
* :func:`check_bind_host` ``(host)``: refuses an empty host (UsageError); returns a warning
  line for a non-loopback address (None for loopback).
* :func:`guarded_protocol` ``(head_timeout)``: a uvicorn HTTP protocol class that closes a
  connection whose request head does not arrive within ``head_timeout`` seconds (idle and
  half-open connections, slow headers) or whose body stalls that long between reads.
* :func:`run_guarded` ``(app, host, port, log_level=, head_timeout=, **uvicorn_options)``:
  uvicorn serving ``app`` with :func:`guarded_protocol`, until interrupted.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Iterable, Mapping

from freebind.util.errors import UsageError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
DEFAULT_MAX_BODY = 64 * 1024
#: the packages every server needs: module → what to pip install
WEB_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn"}


def require_web_packages(purpose: str, extra: str,
                         packages: Mapping[str, str] = WEB_PACKAGES) -> None:
    """Name the missing web packages before any work starts: ``PURPOSE needs fastapi, …
    (pip install 'freebind[EXTRA]')``."""
    import importlib.util

    missing = [pkg for mod, pkg in packages.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise UsageError(f"{purpose} needs {', '.join(missing)} (pip install "
                         f"'freebind[{extra}]')")


class ApiError(Exception):
    """An error the client caused (or is told about): ``status`` and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message


class BodyTooLarge(ApiError):
    """Raised from ``receive`` when a streamed body passes its limit."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")
        self.limit = limit


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None):
    """A JSON ``{"error": message}`` response (Starlette's JSONResponse)."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def install_errors(app) -> None:
    """Register JSON error handlers on a FastAPI or Starlette ``app``."""
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def _api(request, exc: ApiError):
        return json_error(exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def _http(request, exc):
        return json_error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    try:
        from fastapi.exceptions import RequestValidationError
    except ImportError:  # pragma: no cover - plain Starlette
        RequestValidationError = None
    if RequestValidationError is not None:
        @app.exception_handler(RequestValidationError)
        async def _validation(request, exc):
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(x) for x in first.get("loc", ()))
            return json_error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(RecursionError)
    async def _deep(request, exc):
        return json_error(400, "the request is nested too deeply")

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return internal_error(exc)


def internal_error(exc: BaseException):
    """The 500 answer to an unexpected error: its type only (no message, path or traceback)."""
    return json_error(500, f"internal error ({type(exc).__name__})")


def json_app(title: str, lifespan=None):
    """A FastAPI app without documentation pages or OpenAPI schema, every error answered as
    JSON (:func:`install_errors`)."""
    from fastapi import FastAPI

    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    install_errors(app)
    return app


async def read_json(request, what: str = "request") -> Any:
    """The parsed JSON body of ``request``; it must be sent as ``application/json`` (a page on
    another site cannot send that without a CORS preflight, which this server never grants)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, f"{what}: send the body as application/json")
    body = await request.body()
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(400, f"{what}: the JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, f"{what}: the body is not JSON") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, brackets allowed) is this machine only."""
    h = host.strip().strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_bind_host(host: str) -> str | None:
    """Refuse an empty bind address; a warning line for a non-loopback one (else None)."""
    if host is None or not str(host).strip():
        raise UsageError("--host: give an address to listen on (127.0.0.1 keeps the server "
                         "on this machine; 0.0.0.0 listens on every interface)")
    if is_loopback(host):
        return None
    return (f"warning: listening on {host}: every machine that can reach it can use this "
            f"server")


def _split_host(value: str) -> str:
    """The name of a Host header value, without the port, lower case."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        return v[1:end] if end > 0 else v
    if v.count(":") == 1:
        v = v.split(":", 1)[0]
    return v.rstrip(".")


class HostPolicy:
    """Which ``Host`` names a server bound to ``host`` accepts."""

    def __init__(self, host: str, allowed_hosts: Iterable[str] = ()):
        self.bound = _split_host(host) if host else ""
        self.allowed = [a.strip().lower() for a in allowed_hosts if a and a.strip()]
        self.any = "*" in self.allowed

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        if not header:
            return False
        name = _split_host(header)
        if not name:
            return False
        if is_loopback(name):
            return True
        if self.bound and self.bound not in WILDCARDS and name == self.bound:
            return True
        for a in self.allowed:
            if a.startswith(".") and (name == a[1:] or name.endswith(a)):
                return True
            if name == _split_host(a):
                return True
        return False


class Guard:
    """Pure ASGI middleware: Host and Origin checks, a streamed body limit, ``nosniff``."""

    def __init__(self, app, host: str = "127.0.0.1", allowed_hosts: Iterable[str] = (),
                 max_body: int = DEFAULT_MAX_BODY, limits: Mapping[str, int] | None = None):
        self.app = app
        self.policy = HostPolicy(host, allowed_hosts)
        self.max_body = int(max_body)
        self.limits = sorted(dict(limits or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        for prefix, n in self.limits:
            if path.startswith(prefix):
                return int(n)
        return self.max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host")
        if not self.policy.allows(host):
            return await json_error(400, "this server does not answer to that Host name "
                                         "(start it with --allowed-host NAME to accept it)"
                                    )(scope, receive, _nosniff(send))
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, host):
            return await json_error(403, "cross-origin requests are refused")(
                scope, receive, _nosniff(send))
        limit = self.limit_for(scope.get("path", ""))
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit() or not length.isascii():
                return await json_error(400, "malformed Content-Length")(
                    scope, receive, _nosniff(send))
            if int(length) > limit:
                return await json_error(413, BodyTooLarge(limit).message)(
                    scope, receive, _nosniff(send))
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await _nosniff(send)(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:
                await json_error(413, exc.message)(scope, receive, _nosniff(send))


def _same_origin(origin: str, host: str | None) -> bool:
    if not host:
        return False
    o = origin.strip().lower()
    return o in (f"http://{host.lower()}", f"https://{host.lower()}")


def _nosniff(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            hdrs = [h for h in message.get("headers", [])
                    if h[0].lower() != b"x-content-type-options"]
            hdrs.append((b"x-content-type-options", b"nosniff"))
            message = {**message, "headers": hdrs}
        await send(message)
    return wrapped


def guarded_protocol(head_timeout: float = 10.0):
    """A uvicorn h11 protocol class that closes connections whose request head is not
    complete within ``head_timeout`` seconds of connecting or of the previous response."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _head_timer = None

        def _arm_head(self):
            self._disarm_head()
            self._head_timer = self.loop.call_later(head_timeout, self._head_expired)

        def _disarm_head(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_expired(self):
            self._head_timer = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self.transport.close()

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm_head()

        def connection_lost(self, exc):
            self._disarm_head()
            super().connection_lost(exc)

        def handle_events(self):
            super().handle_events()
            if self.conn.their_state is h11.SEND_BODY:
                self._arm_head()  # a body that stalls as long as a head may: closed
            elif self.conn.their_state is not h11.IDLE:
                self._disarm_head()

        def on_response_complete(self):
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head()

    return GuardedH11Protocol


def run_guarded(app, host: str, port: int, *, log_level: str, head_timeout: float,
                **uvicorn_options) -> None:
    """Serve ``app`` with uvicorn until interrupted, connections under
    :func:`guarded_protocol` (``head_timeout``); ``uvicorn_options`` go to ``uvicorn.run``."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level,
                http=guarded_protocol(head_timeout), **uvicorn_options)
