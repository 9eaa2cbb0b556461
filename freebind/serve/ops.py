"""Health and metrics for freebind's servers, and the stack of middleware every server runs.

* :class:`Metrics` ``(routes)``: Prometheus metrics in a registry of their own
  (prometheus_client): ``freebind_requests_total{route,method,status}``,
  ``freebind_request_errors_total{route,status}`` (status ≥ 400),
  ``freebind_request_seconds{route}`` (a latency histogram), ``freebind_batch_size`` (inputs
  encoded together), ``freebind_items_encoded_total{modality}`` and
  ``freebind_requests_in_progress``. Routes are labelled by a fixed list of path prefixes
  (anything else is ``other``), so a scan of random paths cannot grow the label set.
* :class:`Measure`: ASGI middleware timing and counting every request.
* :class:`Ops`: ASGI middleware answering ``GET /health`` (JSON ``{"status": "ok", …}``)
  and ``GET /metrics`` (Prometheus' text format).
* :func:`harden` ``(app, …)``: ``Guard`` (Host, Origin, body limits) → ``Measure`` →
  :class:`~freebind.serve.auth.KeyGuard` → ``Ops`` → ``app``; ``/health`` and ``/metrics``
  pass the key check only with ``open_ops`` (``--public-health``).
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterable, Sequence

from freebind.util.errors import UsageError

OPS_PATHS = ("/health", "/metrics")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


def require_prometheus(extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec("prometheus_client") is None:
        raise UsageError(f"the /metrics endpoint needs prometheus-client (pip install "
                         f"'freebind[{extra}]')")


class Metrics:
    """One server's Prometheus metrics (a registry of its own: several servers in one
    process do not mix)."""

    def __init__(self, routes: Sequence[str]):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.routes = sorted(routes, key=len, reverse=True)
        self.registry = r = CollectorRegistry()
        self.requests = Counter("freebind_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=r)
        self.errors = Counter("freebind_request_errors", "HTTP requests answered with a "
                              "status of 400 or more", ["route", "status"], registry=r)
        self.latency = Histogram("freebind_request_seconds", "Time to answer a request",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("freebind_batch_size", "Inputs encoded together in one batch",
                               buckets=BATCH_BUCKETS, registry=r)
        self.items = Counter("freebind_items_encoded", "Inputs encoded", ["modality"],
                             registry=r)
        self.in_progress = Gauge("freebind_requests_in_progress", "Requests being answered",
                                 registry=r)

    def route(self, path: str) -> str:
        if path in OPS_PATHS:
            return path
        for prefix in self.routes:
            if prefix.endswith("/") and path.startswith(prefix) or path == prefix:
                return prefix
        return "other"

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        route = self.route(path)
        self.requests.labels(route, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def encoded(self, modality: str, n: int) -> None:
        self.items.labels(modality).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Measure:
    """ASGI middleware: every request timed and counted (``/health`` and ``/metrics``
    too)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        t0 = time.perf_counter()
        status = 500

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.observe(path, method, status, time.perf_counter() - t0)


class Ops:
    """ASGI middleware answering ``GET /health`` and ``GET /metrics``."""

    def __init__(self, app, metrics: Metrics, health: Callable[[], dict]):
        self.app, self.metrics, self.health = app, metrics, health

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in OPS_PATHS \
                or scope.get("method") not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        if path == "/health":
            body, ctype = json.dumps(self.health()).encode(), "application/json"
        else:
            body, ctype = self.metrics.exposition()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", ctype.encode()),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body",
                    "body": b"" if scope.get("method") == "HEAD" else body})


def harden(app, *, metrics: Metrics, health: Callable[[], dict], ring=None,
           mode: str = "bearer", open_ops: bool = False, host: str = "127.0.0.1",
           allowed_hosts: Iterable[str] = (), max_body: int, limits=None):
    """``Guard`` (Host, Origin, body limits) → :class:`Measure` → ``KeyGuard`` (``/health``
    and ``/metrics`` open only with ``open_ops``) → :class:`Ops` → ``app``."""
    from freebind.serve.auth import KeyGuard, KeyRing
    from freebind.serve.localhost import Guard

    keyed = KeyGuard(Ops(app, metrics, health), ring or KeyRing(), mode=mode,
                     open_paths=OPS_PATHS if open_ops else ())
    guard = Guard(Measure(keyed, metrics), host=host, allowed_hosts=allowed_hosts,
                  max_body=max_body, limits=limits)
    guard.keys = keyed
    return guard
