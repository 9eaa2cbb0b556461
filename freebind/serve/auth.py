"""API keys for freebind's servers (``freebind api`` and ``freebind serve``).

* :func:`gather_keys` ``(keys, key_file, environ)``: the keys given with ``--api-key``
  (repeatable), ``FREEBIND_API_KEY`` (several separated by commas) and ``--api-key-file``
  (one a line; blank lines and ``#`` comments skipped), checked (no blanks, at least
  :data:`MIN_KEY_LENGTH` characters).
* :class:`KeyRing`: holds only the SHA-256 digests of the keys; :meth:`KeyRing.matches`
  compares a candidate with every key in constant time (``hmac.compare_digest``), and its
  ``repr`` shows a count, never a key.
* :func:`check_exposure` ``(host, ring, no_auth)``: a server that other machines can reach
  refuses to start without a key, unless ``no_auth`` (``--no-auth``) says so on purpose.
* :class:`KeyGuard`: ASGI middleware. ``mode="bearer"`` (the embeddings API) wants
  ``Authorization: Bearer KEY`` on every request, as OpenAI clients send it, and answers 401
  ``{"error": …}`` with ``WWW-Authenticate: Bearer``. ``mode="session"`` (the search page)
  takes the key once at ``/login`` (a form, POSTed: the key never sits in a URL or a log)
  and then holds a random session token in an ``HttpOnly; SameSite=Strict`` cookie
  (``Secure`` behind https); the page, the JSON API and the files all need it (or a
  Bearer header, for scripts). ``POST /logout`` ends the session. ``open_paths`` (``/health``
  and ``/metrics`` when the user asks) answer without a key.

A failed attempt waits :data:`FAIL_DELAY` seconds before its answer (on the event loop, so
it holds nobody else), which slows guessing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Mapping

from freebind.util.errors import UsageError

KEY_ENV = "FREEBIND_API_KEY"
MIN_KEY_LENGTH = 12
COOKIE = "freebind_session"
SESSION_TTL = 12 * 3600.0
MAX_SESSIONS = 10_000
FAIL_DELAY = 0.25
LOGIN_PAGE = Path(__file__).parent / "static" / "login.html"


def gather_keys(keys: Iterable[str] = (), key_file: str | os.PathLike | None = None,
                environ: Mapping[str, str] | None = None) -> list[str]:
    """Every key from the options, the environment and the key file, in that order."""
    environ = os.environ if environ is None else environ
    found = [("--api-key", k) for k in keys]
    env = environ.get(KEY_ENV)
    if env is not None:
        found += [(KEY_ENV, k) for k in env.split(",")]
    if key_file is not None:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--api-key-file {key_file}: cannot read it "
                             f"({type(exc).__name__})") from None
        found += [(f"--api-key-file {key_file}", line) for line in lines
                  if line.strip() and not line.lstrip().startswith("#")]
        if not any(where.startswith("--api-key-file") for where, _ in found):
            raise UsageError(f"--api-key-file {key_file}: the file holds no key")
    out = []
    for where, key in found:
        key = key.strip()
        if len(key) < MIN_KEY_LENGTH or not key.isprintable() or " " in key:
            raise UsageError(f"{where}: a key is at least {MIN_KEY_LENGTH} printable "
                             f"characters without spaces (python -c \"import secrets; "
                             f"print(secrets.token_urlsafe(32))\" makes one)")
        out.append(key)
    return out


class KeyRing:
    """The accepted keys, as SHA-256 digests only; compared in constant time."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[str] = ()):
        self._digests = [hashlib.sha256(k.encode("utf-8")).digest() for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._digests)} key{'s' if len(self._digests) != 1 else ''})"

    def matches(self, candidate: str | bytes | None) -> bool:
        if candidate is None or not self._digests:
            return False
        raw = candidate if isinstance(candidate, bytes) else candidate.encode("utf-8",
                                                                                "replace")
        digest = hashlib.sha256(raw).digest()
        ok = False
        for known in self._digests:   # every key compared: the time does not say which
            ok |= hmac.compare_digest(digest, known)
        return ok


def check_exposure(host: str, ring: KeyRing, no_auth: bool = False) -> str | None:
    """None for a loopback bind or a keyed server; a warning line for ``--no-auth`` on a
    reachable address; a UsageError for a reachable address with no key."""
    from freebind.serve.localhost import is_loopback

    if is_loopback(host) or ring:
        return None
    if no_auth:
        return (f"warning: listening on {host} with --no-auth: every machine that can reach "
                f"it can use this server")
    raise UsageError(f"--host {host}: other machines can reach this address, so the server "
                     f"needs an API key (--api-key, {KEY_ENV} or --api-key-file); pass "
                     f"--no-auth to serve without one on purpose")


class Sessions:
    """Random session tokens → expiry, at most ``limit`` (the oldest dropped first)."""

    def __init__(self, ttl: float = SESSION_TTL, limit: int = MAX_SESSIONS,
                 clock=time.monotonic):
        self.ttl, self.limit, self.clock = float(ttl), int(limit), clock
        self._tokens: "OrderedDict[str, float]" = OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = self.clock() + self.ttl
            while len(self._tokens) > self.limit:
                self._tokens.popitem(last=False)
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._tokens.get(token)
            if expiry is None:
                return False
            if expiry < self.clock():
                self._tokens.pop(token, None)
                return False
            return True

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._tokens.pop(token or "", None)


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers", [])}


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, else None."""
    value = headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def cookie(headers: Mapping[str, str], name: str = COOKIE) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v.strip() or None
    return None


class KeyGuard:
    """ASGI middleware: every request but ``open_paths`` carries a key (see the module)."""

    def __init__(self, app, ring: KeyRing, mode: str = "bearer",
                 open_paths: Iterable[str] = (), sessions: Sessions | None = None):
        if mode not in ("bearer", "session"):
            raise ValueError(mode)
        self.app, self.ring, self.mode = app, ring, mode
        self.open_paths = frozenset(open_paths)
        self.sessions = sessions or Sessions()

    async def __call__(self, scope, receive, send):
        if not self.ring or scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":       # a websocket: no route takes one without a key
            return await send({"type": "websocket.close", "code": 1008})
        path = scope.get("path", "")
        headers = _headers(scope)
        if path in self.open_paths:
            return await self.app(scope, receive, send)
        token = bearer(headers)
        if token is not None:
            if self.ring.matches(token):
                return await self.app(scope, receive, send)
            await asyncio.sleep(FAIL_DELAY)
            return await self._refuse(scope, receive, send, "the API key is not valid")
        if self.mode == "session":
            if path == "/login":
                return await self._login(scope, receive, send, headers)
            if path == "/logout" and scope.get("method") == "POST":
                self.sessions.drop(cookie(headers))
                return await _redirect(send, "/login", clear=True)
            if self.sessions.valid(cookie(headers)):
                return await self.app(scope, receive, send)
            if scope.get("method") in ("GET", "HEAD") and path == "/":
                return await _redirect(send, "/login")
        return await self._refuse(scope, receive, send, "an API key is required (send "
                                  "'Authorization: Bearer KEY'" +
                                  (", or sign in at /login)" if self.mode == "session"
                                   else ")"))

    async def _refuse(self, scope, receive, send, message: str):
        from freebind.serve.localhost import json_error

        return await json_error(401, message, {"WWW-Authenticate": "Bearer"})(
            scope, receive, send)

    async def _login(self, scope, receive, send, headers):
        method = scope.get("method")
        if method in ("GET", "HEAD"):
            return await _page(send, 200, "")
        if method != "POST":
            return await _page(send, 405, "Use the form.")
        body = await _read_body(receive, 8192)
        if body is None:
            return await _page(send, 413, "The form is too large.")
        from urllib.parse import parse_qs

        key = (parse_qs(body.decode("utf-8", "replace")).get("key") or [""])[0]
        if not self.ring.matches(key.strip()):
            await asyncio.sleep(FAIL_DELAY)
            return await _page(send, 401, "That key is not valid.")
        secure = scope.get("scheme") == "https" \
            or headers.get("x-forwarded-proto", "").lower() == "https"
        return await _redirect(send, "/", token=self.sessions.new(),
                               max_age=int(self.sessions.ttl), secure=secure)


async def _read_body(receive, limit: int) -> bytes | None:
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body


async def _redirect(send, location: str, token: str | None = None, max_age: int = 0,
                    secure: bool = False, clear: bool = False):
    headers = [(b"location", location.encode()), (b"content-length", b"0"),
               (b"cache-control", b"no-store")]
    if token is not None or clear:
        value = f"{COOKIE}={token or ''}; Path=/; HttpOnly; SameSite=Strict; " \
                f"Max-Age={max_age if token else 0}" + ("; Secure" if secure else "")
        headers.append((b"set-cookie", value.encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _page(send, status: int, message: str):
    import html

    body = LOGIN_PAGE.read_text(encoding="utf-8").replace(
        "{{message}}", html.escape(message)).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
