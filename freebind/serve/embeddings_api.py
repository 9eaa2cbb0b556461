"""An OpenAI-compatible embeddings endpoint over a target (``freebind api TARGET``).

``POST /v1/embeddings`` takes the OpenAI request — ``model``, ``input`` (a string or a list
of strings), ``encoding_format`` (``float`` or ``base64``: little-endian float32),
``dimensions`` (accepted only when equal to the space's), ``user`` (ignored) — and answers
``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": …}],
"model": …, "usage": {…}}``, so LangChain, LlamaIndex, vector databases and the official
``openai`` client use a fused space as they use OpenAI's. Beyond text, the same ``input``
list may hold audio and images (never fetched from a URL):

* a data URL string: ``"data:audio/wav;base64,…"``, ``"data:image/png;base64,…"``;
* OpenAI's content parts: ``{"type": "input_audio", "input_audio": {"data": B64,
  "format": "wav"}}``, ``{"type": "image_url", "image_url": {"url": "data:image/…"}}``,
  ``{"type": "text", "text": "…"}``;
* ``{"type": "audio" | "image", "data": B64, "format": "wav" | "png" | …}``.

Every row is in the same fused space, so a text and an audio clip of one request compare
directly. Extension fields (bundles): ``factors`` (``["a=0.8", "b2=off"]`` or
``{"a": 0.8}``) and ``preset``; a model id ``ID@PRESET`` selects a preset too. ``GET
/v1/models`` lists the served id and one id per preset. ``usage.prompt_tokens`` counts the
texts' tokens by the tokenizer of the space's text encoder (one per text where it has none)
plus one per audio or image input. Empty texts are refused, as OpenAI does.

Requests that arrive together are encoded together (:mod:`freebind.serve.batching`). With
API keys (:mod:`freebind.serve.auth`) every request carries ``Authorization: Bearer KEY``;
``GET /health`` and ``GET /metrics`` (Prometheus) answer beside the API
(:mod:`freebind.serve.ops`).

The server is :mod:`freebind.serve.localhost`'s: loopback by default, ``Host``/``Origin``
checks, the body limited while it streams, JSON errors — in OpenAI's shape, ``{"error":
{"message": …, "type": …, "param": null, "code": null}}``, which OpenAI clients show.
"""

# no ``from __future__ import annotations``: FastAPI reads the handlers' annotations
# (``Request``, imported inside create_app) as objects
import base64
import binascii
import os
import re
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from freebind.util.errors import FreebindError, MediaError, UsageError
from freebind.serve.localhost import (WEB_PACKAGES, ApiError, check_bind_host, json_app,
                                      read_json, require_web_packages, run_guarded)

DEFAULT_PORT = 8000
DEFAULT_MAX_BODY = 25 * 1024 * 1024
#: OpenAI's own limit on inputs per request
MAX_INPUTS = 2048
AUDIO_FORMATS = {"wav": ".wav", "x-wav": ".wav", "wave": ".wav", "flac": ".flac",
                 "mp3": ".mp3", "mpeg": ".mp3", "ogg": ".ogg", "x-flac": ".flac"}
IMAGE_FORMATS = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg", "webp": ".webp", "bmp": ".bmp"}
#: 3D shapes: ``{"type": "point", "data": BASE64, "format": "ply"}``
POINT_FORMATS = {f: f".{f}" for f in ("ply", "pcd", "obj", "off", "stl", "glb", "npy", "npz")}
_FORMATS = {"audio": (AUDIO_FORMATS, "wav"), "image": (IMAGE_FORMATS, "png"),
            "point": (POINT_FORMATS, "ply")}
_DATA_URL = re.compile(r"^data:(audio|image)/([A-Za-z0-9.+\-]+)(?:;[^,;]*)*;base64,(.*)$",
                       re.DOTALL)


#: the packages ``freebind api`` needs
require_packages = partial(require_web_packages, "the embeddings endpoint", "api",
                           {**WEB_PACKAGES, "prometheus_client": "prometheus-client"})


# --- requests ---------------------------------------------------------------------------

class Item:
    """One input: its modality and either a text or decoded media bytes with a suffix."""

    __slots__ = ("modality", "text", "data", "suffix")

    def __init__(self, modality: str, text: str | None = None, data: bytes | None = None,
                 suffix: str = ""):
        self.modality, self.text, self.data, self.suffix = modality, text, data, suffix


def _b64(payload: str, where: str) -> bytes:
    try:
        data = base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"{where}: the data is not valid base64") from None
    if not data:
        raise UsageError(f"{where}: the data is empty")
    return data


def _suffix(modality: str, fmt: str | None, where: str) -> str:
    table, default = _FORMATS[modality]
    fmt = (fmt or default).lower().lstrip(".")
    if fmt not in table:
        raise UsageError(f"{where}: {modality} format {fmt!r} is not one of "
                         f"{', '.join(sorted(set(table)))}")
    return table[fmt]


def _data_url(text: str, where: str) -> Item | None:
    match = _DATA_URL.match(text)
    if match is None:
        return None
    modality, fmt, payload = match.groups()
    return Item(modality, data=_b64(payload, where), suffix=_suffix(modality, fmt, where))


TOKEN_IDS = ("token ids are not accepted; send the text itself (LangChain's "
             "OpenAIEmbeddings sends token ids unless created with "
             "check_embedding_ctx_length=False)")


def _text(text: str, where: str) -> Item:
    if not text.strip():
        raise UsageError(f"{where}: the text is empty (OpenAI refuses empty inputs too)")
    return Item("text", text=text)


def parse_item(value: Any, i: int) -> Item:
    """One element of ``input`` (see the module's docstring); raises UsageError."""
    where = f"input[{i}]"
    if isinstance(value, str):
        if value.startswith("data:"):
            found = _data_url(value, where)
            if found is not None:
                return found
        return _text(value, where)
    if isinstance(value, Mapping):
        kind = value.get("type")
        if kind == "text" and isinstance(value.get("text"), str):
            return _text(value["text"], where)
        if kind == "image_url":
            url = value.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            if not isinstance(url, str):
                raise UsageError(f"{where}: image_url needs a url")
            found = _data_url(url, where)
            if found is None or found.modality != "image":
                raise UsageError(f"{where}: only data:image/…;base64 URLs are accepted "
                                 f"(nothing is downloaded)")
            return found
        if kind == "input_audio":
            part = value.get("input_audio")
            if not isinstance(part, Mapping) or not isinstance(part.get("data"), str):
                raise UsageError(f"{where}: input_audio needs {{\"data\": BASE64, "
                                 f"\"format\": \"wav\"}}")
            return Item("audio", data=_b64(part["data"], where),
                        suffix=_suffix("audio", part.get("format"), where))
        if kind in ("audio", "image", "point") and isinstance(value.get("data"), str):
            return Item(kind, data=_b64(value["data"], where),
                        suffix=_suffix(kind, value.get("format"), where))
        raise UsageError(f"{where}: an object input is {{\"type\": \"text\", \"text\": …}}, "
                         f"an input_audio or image_url part, or {{\"type\": \"audio\"|"
                         f"\"image\"|\"point\", \"data\": BASE64}}")
    if isinstance(value, (int, list)):
        raise UsageError(f"{where}: {TOKEN_IDS}")
    raise UsageError(f"{where}: expected a string or an object, got "
                     f"{type(value).__name__}")


def parse_inputs(raw: Any) -> list[Item]:
    if isinstance(raw, str):
        return [parse_item(raw, 0)]
    if not isinstance(raw, list):
        raise UsageError("input: a string or a list of inputs")
    if not raw:
        raise UsageError("input: the list is empty")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        raise UsageError(f"input: {TOKEN_IDS}")
    if len(raw) > MAX_INPUTS:
        raise UsageError(f"input: {len(raw)} inputs; at most {MAX_INPUTS} per request")
    return [parse_item(v, i) for i, v in enumerate(raw)]


def parse_factors(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return list(raw)
    if isinstance(raw, Mapping):
        out = []
        for k, v in raw.items():
            if not isinstance(v, (int, float, str)) or isinstance(v, bool):
                raise UsageError(f"factors.{k}: a number, 'on' or 'off'")
            out.append(f"{k}={v}")
        return out
    raise UsageError("factors: a list of overrides (\"a=0.8\") or an object {\"a\": 0.8}")


# --- the service (no web framework: testable on its own) --------------------------------

class EmbeddingService:
    """A target served under a model id: ``embed(body) -> response dict``.

    Requests that arrive together are encoded together (:class:`~freebind.serve.batching.
    Batcher`: ``window`` seconds, at most ``max_batch`` inputs; text and media in separate
    lanes). ``metrics`` (a :class:`~freebind.serve.ops.Metrics`) counts batches and inputs.
    Media are decoded under ``audio_limits`` (:mod:`freebind.data.audio_limits`)."""

    def __init__(self, target, model: str | None = None, batch_size: int = 32,
                 window: float = 0.005, max_batch: int = 64, metrics=None,
                 audio_limits=None):
        from freebind.data.audio_limits import AudioLimits
        from freebind.run.targets import open as open_target
        from freebind.serve.batching import Batcher

        self.target = open_target(target) if isinstance(target, (str, os.PathLike)) \
            else target
        self.model = model or self.target.label
        self.batch_size = int(batch_size)
        self.created = int(time.time())
        self.metrics = metrics
        self.audio_limits = audio_limits or AudioLimits(max_seconds=600.0)
        self._views: dict = {}
        self._views_lock = threading.Lock()
        self._count_tokens = token_counter(self.target)
        self.batcher = Batcher(self._run_batch, window=window, max_batch=max_batch,
                               on_batch=None if metrics is None else metrics.batch.observe)

    def close(self) -> None:
        self.batcher.close()

    @property
    def presets(self) -> list[str]:
        return list(self.target.fused.presets) if self.target.is_bundle else []

    def model_ids(self) -> list[str]:
        return [self.model, *(f"{self.model}@{p}" for p in self.presets)]

    def models(self) -> dict:
        return {"object": "list", "data": [self.model_card(m) for m in self.model_ids()]}

    def model_card(self, model_id: str) -> dict:
        if model_id not in self.model_ids():
            raise LookupError(model_id)
        preset = model_id[len(self.model) + 1:] if model_id != self.model else None
        return {"id": model_id, "object": "model", "created": self.created,
                "owned_by": "freebind",
                "freebind": {"target": self.target.name, "dimensions": self.target.dim,
                             "modalities": list(self.target.modalities),
                             "preset": preset or self.target.preset}}

    def _view_key(self, model: Any, factors: list[str], preset: Any):
        """``(factors, preset)`` of a request's encoder, or None for the target itself."""
        if not isinstance(model, str) or not model:
            raise UsageError("model: required (GET /v1/models lists the ids)")
        if model not in self.model_ids():
            raise LookupError(model)
        if model != self.model:
            at = model[len(self.model) + 1:]
            if preset is not None and preset != at:
                raise UsageError(f"model {model} names preset {at!r} but preset={preset!r}")
            preset = at
        if preset is not None and not isinstance(preset, str):
            raise UsageError("preset: a preset name")
        if not factors and preset is None:
            return None
        if not self.target.is_bundle:
            raise UsageError(f"factors and presets apply to fused bundles; {self.model} is "
                             f"the plain space {self.target.name}")
        key = (tuple(factors), preset)
        self._view(key)          # resolve now: a bad factor is this request's 400
        return key

    def _view(self, key):
        if key is None:
            return None
        with self._views_lock:
            view = self._views.get(key)
            if view is None:
                view = self.target.fused.with_factors(*key[0], preset=key[1])
                if len(self._views) >= 64:
                    self._views.pop(next(iter(self._views)))
                self._views[key] = view
        return view

    def embed(self, body: Any) -> dict:
        """The response to a ``/v1/embeddings`` request body. Raises UsageError (400),
        LookupError (404: unknown model) or MediaError (400)."""
        with self.batcher.expect():
            if not isinstance(body, Mapping):
                raise UsageError("the request body is a JSON object")
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise UsageError(f"encoding_format: 'float' or 'base64', not {fmt!r}")
            dims = body.get("dimensions")
            if dims is not None and dims != self.target.dim:
                raise UsageError(f"dimensions: this space has {self.target.dim} dimensions "
                                 f"and cannot return {dims!r} (no shortening)")
            key = self._view_key(body.get("model"), parse_factors(body.get("factors")),
                                 body.get("preset"))
            items = parse_inputs(body.get("input"))
            tokens = self.count_tokens(items)
        rows = self.encode(items, key)
        data = [{"object": "embedding", "index": i,
                 "embedding": _b64_row(r) if fmt == "base64" else r.tolist()}
                for i, r in enumerate(rows)]
        return {"object": "list", "data": data, "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def count_tokens(self, items: Sequence[Item]) -> int:
        """Tokens of the texts by the space's own tokenizer (where it has one; else one per
        text), plus one per audio or image input."""
        texts = [it.text for it in items if it.modality == "text"]
        media = len(items) - len(texts)
        if self._count_tokens is not None and texts:
            try:
                return int(self._count_tokens(texts)) + media
            except Exception:  # noqa: BLE001  a tokenizer of another shape: count texts
                self._count_tokens = None
        return len(texts) + media

    def encode(self, items: Sequence[Item], view_key=None) -> np.ndarray:
        """``[len(items), dim]`` float32 rows, modalities grouped and put back in order;
        encoded together with other requests' inputs of the same modality and factors."""
        mods = self.target.modalities
        for i, item in enumerate(items):
            if item.modality not in mods:
                raise UsageError(f"input[{i}]: {self.model} has no {item.modality} modality "
                                 f"(it has {', '.join(mods)})")
        out = np.zeros((len(items), self.target.dim), dtype=np.float32)
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.modality, []).append(i)
        with tempfile.TemporaryDirectory(prefix="freebind-api-") as tmp:
            for modality, idx in groups.items():
                if modality == "text":
                    batch = [items[i].text for i in idx]
                else:
                    batch = []
                    for i in idx:
                        path = Path(tmp) / f"input{i}{items[i].suffix}"
                        path.write_bytes(items[i].data)
                        batch.append(str(path))
                lane = "text" if modality == "text" else "media"
                try:
                    out[idx] = self.batcher.submit(lane, (modality, view_key), batch)
                except MediaError as exc:
                    raise MediaError(_hide_paths(str(exc), tmp)) from None
        return out

    def _run_batch(self, key, batch: list) -> np.ndarray:
        """One batch of one modality under one view (in a batcher's worker thread)."""
        from freebind.data.audio_limits import bounded

        modality, view_key = key
        view = self._view(view_key)
        with bounded(self.audio_limits):
            if view is None:
                rows = self.target.encode(modality, batch, batch_size=self.batch_size)
            else:
                rows = view.encode(modality, batch, batch_size=self.batch_size,
                                   **self.target.space_options)
        if hasattr(rows, "detach"):
            rows = rows.detach().cpu().numpy()
        if self.metrics is not None:
            self.metrics.encoded(modality, len(batch))
        return np.asarray(rows, dtype=np.float32)


def token_counter(target):
    """``count(texts) -> int`` by the tokenizer of the target's text encoder, or None when
    it has none (a plain callable tokenizer, a Hugging Face one, or the mini spaces')."""
    try:
        if target.is_bundle:
            from freebind import spaces

            refs = target.leaf_refs("text")
            if not refs:
                return None
            space = spaces.get(refs[0], **target.space_options)
        else:
            space = target.space
        tok = getattr(space, "tokenizer", None)
        if tok is not None and not hasattr(tok, "ids") and callable(tok) \
                and getattr(tok, "__self__", None) is space:
            tok = tok()            # a method that loads the tokenizer
    except Exception:  # noqa: BLE001  no tokenizer files: inputs are counted instead
        return None
    if tok is None:
        return None
    if hasattr(tok, "ids"):                      # freebind.mini's word tokenizer
        return lambda texts: sum(len(tok.ids(t)) for t in texts)
    if callable(tok):                            # a Hugging Face tokenizer
        def count(texts):
            enc = tok(list(texts), truncation=True)
            return sum(len(ids) for ids in enc["input_ids"])
        return count
    return None


def _b64_row(row: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode("ascii")


def _hide_paths(message: str, tmp: str) -> str:
    """``/tmp/freebind-api-x/input3.wav: cannot decode …`` → ``input[3]: cannot decode …``."""
    return re.sub(re.escape(str(Path(tmp))) + r"/input(\d+)\.\w+", r"input[\1]", message)


# --- the web app ------------------------------------------------------------------------

def create_app(service: EmbeddingService):
    """The FastAPI app (unguarded: :func:`guard` adds the Host/Origin checks and limits)."""
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    app = json_app("freebind embeddings")

    def unknown(model) -> ApiError:
        return ApiError(404, f"model {model!r} is not served here (GET /v1/models lists "
                             f"{', '.join(service.model_ids())})")

    @app.get("/v1/models")
    def models():
        return service.models()

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str):
        try:
            return service.model_card(model_id)
        except LookupError:
            raise unknown(model_id) from None

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await read_json(request, "embeddings")
        try:
            return await run_in_threadpool(service.embed, body)
        except LookupError as exc:
            raise unknown(str(exc.args[0]) if exc.args else "") from None
        except FreebindError as exc:
            raise ApiError(400, str(exc)) from None

    @app.get("/")
    def root():
        return {"object": "freebind.serve.embeddings_api", "model": service.model,
                "endpoints": ["POST /v1/embeddings", "GET /v1/models", "GET /health",
                              "GET /metrics"]}

    return app


#: the routes /metrics labels (anything else is "other")
ROUTES = ("/v1/embeddings", "/v1/models", "/v1/models/", "/")


def guard(app, host: str = "127.0.0.1", allowed_hosts: Sequence[str] = (),
          max_body: int = DEFAULT_MAX_BODY, *, service: EmbeddingService | None = None,
          keys: Sequence[str] = (), open_ops: bool = False):
    """``app`` behind the Host/Origin guard, ``/health`` and ``/metrics``, and the API keys
    (``Authorization: Bearer``; :func:`freebind.serve.ops.harden`), errors in OpenAI's
    shape. ``service`` supplies the metrics (its own, else new ones) and the health."""
    from freebind.serve.auth import KeyRing
    from freebind.serve.ops import Metrics, harden

    metrics = getattr(service, "metrics", None) or Metrics(ROUTES)
    started = time.monotonic()

    def health() -> dict:
        out = {"status": "ok", "uptime_s": round(time.monotonic() - started, 1)}
        if service is not None:
            out.update(model=service.model, dimensions=service.target.dim,
                       modalities=list(service.target.modalities))
        return out

    return OpenAIErrors(harden(app, metrics=metrics, health=health, ring=KeyRing(keys),
                               mode="bearer", open_ops=open_ops, host=host,
                               allowed_hosts=allowed_hosts, max_body=max_body))


class OpenAIErrors:
    """ASGI wrapper: a JSON error ``{"error": "message"}`` (freebind.serve.localhost's shape,
    from the app or the guard) leaves as OpenAI's ``{"error": {"message", "type", "param",
    "code"}}``, which OpenAI clients show (``Error code: 400 - message``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held: dict = {}

        async def rewrite(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held["start"], held["body"] = message, b""
                return None
            if "start" in held and message["type"] == "http.response.body":
                held["body"] += message.get("body", b"")
                if message.get("more_body"):
                    return None
                start = held.pop("start")
                body = _openai_error(held["body"], start["status"])
                headers = [(k, v) for k, v in start.get("headers", [])
                           if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                return await send({"type": "http.response.body", "body": body})
            return await send(message)

        await self.app(scope, receive, rewrite)


def _openai_error(body: bytes, status: int) -> bytes:
    import json

    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), str):
        return body
    kind = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500
                                         else "server_error")
    return json.dumps({"error": {"message": parsed["error"], "type": kind, "param": None,
                                 "code": None}}).encode()


def serve(target, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
          model: str | None = None, allowed_hosts: Sequence[str] = (),
          max_body: int = DEFAULT_MAX_BODY, batch_size: int = 32, head_timeout: float = 10.0,
          log_level: str = "warning", on_start=None, keys: Sequence[str] = (),
          no_auth: bool = False, open_ops: bool = False, window: float = 0.005,
          max_batch: int = 64, audio_limits=None) -> None:
    """Serve ``target`` (anything :func:`freebind.open` takes, or a Target) until
    interrupted. A non-loopback ``host`` needs ``keys`` unless ``no_auth``."""
    from freebind.serve.auth import KeyRing, check_exposure
    from freebind.serve.ops import Metrics

    require_packages()
    check_bind_host(host)
    check_exposure(host, KeyRing(keys), no_auth)
    service = EmbeddingService(target, model=model, batch_size=batch_size, window=window,
                               max_batch=max_batch, metrics=Metrics(ROUTES),
                               audio_limits=audio_limits)
    app = guard(create_app(service), host, allowed_hosts, max_body, service=service,
                keys=keys, open_ops=open_ops)
    if on_start is not None:
        on_start(service)
    run_guarded(app, host, port, log_level=log_level, head_timeout=head_timeout)
