"""``freebind serve``: a JSON API and one web page over an :class:`~freebind.search.Index`.

Routes (GET routes answer HEAD too)::

    GET  /                     the page (assets from this package: no CDN, no build step)
    GET  /static/<name>        the page's script, style sheet and icon (a fixed list)
    GET  /api/info             target, modalities, presets, one control per bond factor
    POST /api/search           JSON {"text" | "upload" | "item", "k", "modality", "factors",
                               "preset"}
    POST /api/upload           multipart "file" (audio or image) → {"upload": token, …}
    GET  /api/media/<id>       the file of indexed item <id> (audio and images only)
    GET  /api/thumb/<id>       the waveform thumbnail of audio item <id> (PNG), if indexed

Safe by default (:mod:`freebind.serve.localhost`): the Host header must name this machine or an
``allowed_hosts`` entry, foreign Origins are refused, bodies are limited while they stream,
``/api/search`` takes ``application/json`` only, and every error is a JSON
``{"error": …}`` without server paths. Files are served by item id from the index's own list,
and only while their real path is still the indexed one. Uploads are checked (pixels,
seconds) before they are decoded, decoded in a bounded pool off the event loop, and kept as
their base embeddings (a few KB) under a random token, within a byte budget and a time to
live; the temporary folder is removed when the server stops.
"""


import asyncio
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from freebind.util.errors import FreebindError, UsageError
from freebind.serve.localhost import (WEB_PACKAGES, ApiError, BodyTooLarge,
                                      check_bind_host, internal_error, json_app, json_error,
                                      read_json, require_web_packages, run_guarded)

STATIC = Path(__file__).parent / "static"
#: the only static files the server hands out: name → media type
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "index.html": "text/html; charset=utf-8", "favicon.svg": "image/svg+xml"}
MEDIA_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg", ".png": "image/png", ".jpg": "image/jpeg",
               ".jpeg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp"}
DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SECONDS = 600.0
#: uploads are kept as base embeddings: this many bytes of them, each for this many seconds
DEFAULT_UPLOAD_BUDGET = 64 * 1024 * 1024
DEFAULT_UPLOAD_TTL = 3600.0
#: multipart framing allowed on top of the file itself
FORM_OVERHEAD = 64 * 1024
#: JSON bodies (searches)
MAX_JSON = 256 * 1024
_ID = re.compile(r"[0-9]{1,12}")
_RANGE = re.compile(r"bytes=\s*(\d*)\s*-\s*(\d*)\s*((,\s*\d*\s*-\s*\d*\s*)*)")


#: the packages ``freebind serve`` needs (uploads are multipart forms)
require_packages = partial(require_web_packages, "serving", "search",
                           {**WEB_PACKAGES, "python_multipart": "python-multipart",
                            "prometheus_client": "prometheus-client"})


class Uploads:
    """Upload tokens → the query's base embeddings, bounded by bytes and by age (not by a
    count: a burst of uploads does not push out the token a client is about to use)."""

    def __init__(self, budget: int = DEFAULT_UPLOAD_BUDGET, ttl: float = DEFAULT_UPLOAD_TTL,
                 clock=time.monotonic):
        self.budget, self.ttl, self.clock = int(budget), float(ttl), clock
        self._items: "OrderedDict[str, dict]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def add(self, entry: dict) -> str:
        token = secrets.token_urlsafe(16)
        size = int(entry.get("bytes", 0)) + 256
        with self._lock:
            self._prune()
            self._items[token] = {**entry, "size": size, "t": self.clock()}
            self._bytes += size
            while self._bytes > self.budget and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old["size"]
        return token

    def get(self, token: str) -> dict | None:
        with self._lock:
            self._prune()
            return self._items.get(token)

    def _prune(self) -> None:
        now = self.clock()
        while self._items:
            token, first = next(iter(self._items.items()))
            if now - first["t"] <= self.ttl:
                break
            self._items.popitem(last=False)
            self._bytes -= first["size"]

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class ServerState:
    """What the routes of one search server share: the index and what was read beside it at
    startup, the limits, the upload folder and tokens, the decode pool, the search limiter."""

    index: Any
    max_upload: int
    max_pixels: int
    max_seconds: float
    #: the temporary folder uploads are written to while they decode
    tmp: Path
    uploads: Uploads
    pool: ThreadPoolExecutor
    search_limit: Any
    #: real path of every folder of indexed audio and image files, as of startup
    real_dirs: dict[str, str]
    thumbs: Path | None
    media_info: dict
    #: uploads waiting for the decode pool
    waiting: int = 0
    metrics: Any = None


def _server_state(index, max_upload: int, upload_dir: str | None, max_pixels: int,
                  max_seconds: float, upload_budget: int, upload_ttl: float,
                  decoders: int | None, searchers: int | None) -> ServerState:
    """Start the decode pool and make the upload folder (under ``upload_dir`` if given)."""
    import anyio

    from freebind.search.thumbs import read_media_info

    cpus = os.cpu_count() or 2
    decoders = int(decoders or min(4, max(2, cpus)))
    pool = ThreadPoolExecutor(max_workers=decoders, thread_name_prefix="freebind-decode")
    search_limit = anyio.CapacityLimiter(int(searchers or max(4, min(16, 2 * cpus))))
    parent = Path(upload_dir) if upload_dir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="freebind-serve-", dir=parent))
    return ServerState(index=index, max_upload=max_upload, max_pixels=max_pixels,
                       max_seconds=max_seconds, tmp=tmp,
                       uploads=Uploads(upload_budget, upload_ttl), pool=pool,
                       search_limit=search_limit, real_dirs=_real_dirs(index),
                       thumbs=_thumb_dir(index),
                       media_info=read_media_info(getattr(index, "path", None)))


def create_app(index, max_upload: int = DEFAULT_MAX_UPLOAD, upload_dir: str | None = None,
               *, host: str = "127.0.0.1", allowed_hosts: Iterable[str] = (),
               max_pixels: int = DEFAULT_MAX_PIXELS, max_seconds: float = DEFAULT_MAX_SECONDS,
               upload_budget: int = DEFAULT_UPLOAD_BUDGET,
               upload_ttl: float = DEFAULT_UPLOAD_TTL, decoders: int | None = None,
               searchers: int | None = None, keys: Iterable[str] = (),
               open_ops: bool = False):
    """The ASGI application serving ``index`` (an :class:`Index`): a FastAPI app behind
    :func:`freebind.serve.ops.harden` (Host/Origin checks and body limits, ``/health`` and
    ``/metrics``, and with ``keys`` a login: a session cookie, or a Bearer header).
    ``app.state`` holds ``index``, ``upload_dir``, ``uploads``, ``metrics``."""
    from freebind.serve.auth import KeyRing
    from freebind.serve.ops import Metrics, harden

    require_packages()
    state = _server_state(index, max_upload, upload_dir, max_pixels, max_seconds,
                          upload_budget, upload_ttl, decoders, searchers)
    app = json_app("freebind search", lifespan=_lifespan(state))
    _add_usage_errors(app, state.tmp)
    _add_page_routes(app)
    _add_info_route(app, state)
    _add_file_routes(app, state)
    _add_upload_route(app, state)
    _add_search_route(app, state)
    app.state.upload_dir = state.tmp
    app.state.index = index
    app.state.uploads = state.uploads
    app.state.metrics = state.metrics = Metrics(ROUTES)
    started = time.monotonic()

    def health() -> dict:
        return {"status": "ok", "index": index.name, "items": len(index.items),
                "uptime_s": round(time.monotonic() - started, 1)}

    guard = harden(app, metrics=state.metrics, health=health, ring=KeyRing(keys),
                   mode="session", open_ops=open_ops, host=host, allowed_hosts=allowed_hosts,
                   max_body=MAX_JSON, limits={"/api/upload": max_upload + FORM_OVERHEAD})
    guard.state = app.state
    return guard


#: the routes /metrics labels (anything else is "other")
ROUTES = ("/", "/login", "/logout", "/static/", "/api/info", "/api/search", "/api/upload",
          "/api/media/", "/api/thumb/")


def _lifespan(state: ServerState):
    """The app's lifespan: after a graceful stop, the decode pool ends and the upload folder
    is removed (uvicorn then re-raises the signal: no atexit)."""

    @asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            state.pool.shutdown(wait=False, cancel_futures=True)
            shutil.rmtree(state.tmp, ignore_errors=True)

    return lifespan


def _add_usage_errors(app, tmp: Path) -> None:
    """A UsageError answers 400 with its message (the upload folder's path hidden); any
    other FreebindError is an internal error."""

    @app.exception_handler(FreebindError)
    async def _freebind_error(request, exc: FreebindError):
        if isinstance(exc, UsageError):
            return json_error(400, _scrub(str(exc), tmp))
        return internal_error(exc)


def _asset(name: str):
    from fastapi.responses import FileResponse

    return FileResponse(STATIC / name, media_type=ASSETS[name],
                        headers={"Cache-Control": "no-cache"})


def _add_page_routes(app) -> None:
    """``/`` (the page), ``/favicon.ico`` and ``/static/<name>`` (only :data:`ASSETS`)."""

    @app.api_route("/", methods=["GET", "HEAD"])
    def page():
        return _asset("index.html")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"])
    def favicon():
        return _asset("favicon.svg")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"])
    def static(name: str):
        if name not in ASSETS or name == "index.html":
            raise ApiError(404, "no such asset")
        return _asset(name)


def _add_info_route(app, state: ServerState) -> None:
    """``/api/info``: the index's description (no server paths), its presets' slider values
    and the server's limits."""

    @app.api_route("/api/info", methods=["GET", "HEAD"])
    def info():
        data = state.index.info()
        if data.get("bundle"):
            data["target"] = Path(str(data["target"])).name  # no server paths
        data["preset_values"] = _preset_values(state.index)
        data["max_upload"] = state.max_upload
        data["max_pixels"] = state.max_pixels
        data["max_seconds"] = state.max_seconds
        data["captions"] = any("caption" in v for v in state.media_info.values())
        data["thumbnails"] = state.thumbs is not None
        return data


def _indexed_file(state: ServerState, item_id: str,
                  modalities=("audio", "image")) -> tuple[int, str]:
    """The id and real path of the indexed file of item ``item_id``, else a 404."""
    if not _ID.fullmatch(item_id):
        raise ApiError(404, "no such item")
    i = int(item_id)
    if i >= len(state.index.items):
        raise ApiError(404, "no such item")
    item = state.index.items[i]
    path = item["path"]
    shown = Path(path).suffix.lower() in MEDIA_TYPES or item["modality"] == "point"
    if item["modality"] not in modalities or not shown:
        raise ApiError(404, f"item {i} has no audio or image file to show")
    real = _still_indexed(path, state.real_dirs)
    if real is None:
        raise ApiError(404, f"item {i}: its file is gone or no longer the indexed one")
    return i, real


def _add_file_routes(app, state: ServerState) -> None:
    """``/api/media/<id>`` (an indexed audio or image file) and ``/api/thumb/<id>`` (the
    waveform thumbnail of an audio item)."""
    from fastapi import Request
    from fastapi.responses import FileResponse

    @app.api_route("/api/media/{item_id}", methods=["GET", "HEAD"])
    def media(item_id: str, request: Request):
        _, real = _indexed_file(state, item_id)
        _check_range(request.headers.get("range"), os.path.getsize(real))
        return FileResponse(real, media_type=MEDIA_TYPES[Path(real).suffix.lower()],
                            headers={"Cache-Control": "private, max-age=3600"})

    @app.api_route("/api/thumb/{item_id}", methods=["GET", "HEAD"])
    def thumb(item_id: str):
        i, _ = _indexed_file(state, item_id, ("audio", "point"))
        path = None if state.thumbs is None else state.thumbs / f"{i}.png"
        if path is None or not path.is_file() or path.is_symlink():
            raise ApiError(404, f"item {i} has no thumbnail (rebuild the index to draw them)")
        return FileResponse(path, media_type="image/png",
                            headers={"Cache-Control": "private, max-age=3600"})


def _add_upload_route(app, state: ServerState) -> None:
    """``POST /api/upload``: a multipart ``file`` (audio or image) kept as its base
    embeddings under a token."""
    from fastapi import Request

    @app.post("/api/upload")
    async def upload(request: Request):
        path, name, modality, size = await _receive_upload(request, state)
        leaves = await _decode_upload(state, path, name, modality, size)
        if state.metrics is not None:
            state.metrics.encoded(modality, 1)
            state.metrics.batch.observe(1)
        nbytes = sum(a.nbytes for mods in leaves.values() for a in mods.values())
        token = state.uploads.add({"leaves": leaves, "modality": modality, "name": name,
                                   "bytes": nbytes})
        return {"upload": token, "modality": modality, "name": name, "bytes": size}


async def _read_form(request, max_upload: int, tmp: Path):
    """The multipart form of an upload request (one file part at most), else a 413, 415 or
    400 naming the problem."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "upload: send multipart/form-data with a 'file' field")
    try:
        return await request.form(max_files=1, max_fields=4, max_part_size=max_upload + 1)
    except BodyTooLarge:
        raise ApiError(413, f"upload: larger than the limit of {max_upload} bytes") from None
    except Exception as exc:  # noqa: BLE001  (multipart parse errors of several types)
        msg = str(exc) or type(exc).__name__
        status = 413 if "size" in msg.lower() or "large" in msg.lower() else 400
        raise ApiError(status, f"upload: malformed form ({_scrub(msg, tmp)})") from None


async def _receive_upload(request, state: ServerState) -> tuple[Path, str, str, int]:
    """Save an upload's file part to the upload folder (at most one byte past the limit):
    its path, safe name, modality and size. Refuses a file that is no audio or image by
    its extension, or of a modality the index cannot query."""
    from freebind.util.vocab import modality_of

    form = await _read_form(request, state.max_upload, state.tmp)
    try:
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise ApiError(400, "upload: no 'file' field")
        name = _safe_name(file.filename)
        suffix = Path(name).suffix.lower()
        modality = modality_of(name) if suffix else None
        if modality != "point" and (modality not in ("audio", "image")
                                    or suffix not in MEDIA_TYPES):
            raise ApiError(415, f"upload {name!r}: not an audio or image file by its "
                                f"extension (audio: wav flac mp3 ogg; image: png jpg "
                                f"jpeg webp bmp; point: ply pcd obj off stl glb gltf)")
        if modality not in state.index.query_modalities:
            raise ApiError(400, f"{state.index.name} has no {modality} queries")
        path = state.tmp / f"{secrets.token_hex(8)}{suffix}"
        size = await _save_upload(file, path, state.max_upload)
    finally:
        await form.close()
    return path, name, modality, size


async def _decode_upload(state: ServerState, path: Path, name: str, modality: str,
                         size: int) -> dict:
    """The base embeddings of a saved upload, decoded in the pool; the file is removed."""
    if size > state.max_upload:
        path.unlink(missing_ok=True)
        raise ApiError(413, f"upload: larger than the limit of {state.max_upload} bytes")
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(400, "upload: the file is empty")
    if state.waiting >= 1024:
        path.unlink(missing_ok=True)
        raise ApiError(503, "upload: the server is busy decoding; try again")
    state.waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(
            state.pool, _decode, state.index, modality, path, name, state.max_pixels,
            state.max_seconds)
    finally:
        state.waiting -= 1
        path.unlink(missing_ok=True)


def _add_search_route(app, state: ServerState) -> None:
    """``POST /api/search``: a JSON search by text, upload token or item id, run in a worker
    thread (at most ``state.search_limit`` at once)."""
    import anyio
    from fastapi import Request

    @app.post("/api/search")
    async def search(request: Request):
        body = await read_json(request, "search")
        if not isinstance(body, dict):
            raise ApiError(400, "search: the body must be a JSON object")
        req = _parse_search(body, state.index)
        up = None
        if "upload" in req:
            up = state.uploads.get(req["upload"])
            if up is None:
                raise ApiError(404, "search: unknown or expired upload; upload the file "
                                    "again")
        elif "item" in req and req["item"] >= len(state.index.items):
            raise ApiError(404, f"search: no item {req['item']}")
        return await anyio.to_thread.run_sync(_run_search, state.index, req, up,
                                              state.media_info, state.thumbs is not None,
                                              limiter=state.search_limit)


def _run_search(index, req: dict, up: dict | None, media_info: dict | None = None,
                thumbs: bool = False) -> dict:
    t0 = time.perf_counter()
    common = {"k": req["k"], "modality": req["modality"], "factors": req["factors"],
              "preset": req["preset"]}
    if up is not None or "item" in req:
        if up is not None:
            leaves, qmod = up["leaves"], up["modality"]
        else:
            leaves, qmod = _item_leaves(index, req["item"])
        table = index._table(req["factors"], req["preset"])
        vec = index._fuse_query_leaves(qmod, leaves, table)[0]
        hits = index.search(vector=vec, **common)
    else:
        qmod = "text"
        hits = index.search(req["text"], query_modality="text", **common)
    ms = (time.perf_counter() - t0) * 1000
    return {"query_modality": qmod, "ms": round(ms, 2),
            "hits": [_hit_json(h, media_info, thumbs) for h in hits]}


def _item_leaves(index, i: int) -> tuple[dict, str]:
    """The stored base embeddings of item ``i`` (no file is read again)."""
    mod = index.items[i]["modality"]
    block = index.blocks[mod]
    row = int(np.searchsorted(block.ids, i))
    if row >= block.rows or int(block.ids[row]) != i:
        raise ApiError(404, f"search: no item {i}")
    return {r: {mod: block.leaves[r][row:row + 1]} for r in block.refs}, mod


def _decode(index, modality: str, path: Path, name: str, max_pixels: int,
            max_seconds: float) -> dict:
    """Check the upload's size in pixels or seconds from its header, then decode and encode
    it (the base embeddings). Runs in the decode pool."""
    from freebind.data.audio_limits import AudioLimits, bounded

    _check_media_size(modality, path, name, max_pixels, max_seconds)
    try:
        with bounded(AudioLimits(max_seconds=max_seconds)):
            return index._query_leaves(modality, [str(path)], index.table)
    except UsageError as exc:
        msg = _scrub(str(exc).removeprefix("query: "), path.parent, str(path), name)
        msg = msg.removeprefix(f"{name}: ")
        raise ApiError(422, f"upload {name!r}: {msg}") from None


def _check_media_size(modality: str, path: Path, name: str, max_pixels: int,
                      max_seconds: float) -> None:
    if modality == "image":
        from PIL import Image

        try:
            with Image.open(path) as img:  # reads the header only
                w, h = img.size
        except Image.DecompressionBombError:
            raise ApiError(413, f"upload {name!r}: the image is over the limit of "
                                f"{max_pixels / 1e6:g} MP (--max-pixels)") from None
        except Exception as exc:  # noqa: BLE001  (Pillow raises several types)
            raise ApiError(422, f"upload {name!r}: cannot decode image "
                                f"({type(exc).__name__})") from None
        if w * h > max_pixels:
            raise ApiError(413, f"upload {name!r}: {w}×{h} pixels ({w * h / 1e6:.1f} MP) is "
                                f"over the limit of {max_pixels / 1e6:g} MP (--max-pixels)")
    elif modality == "audio":
        from freebind.data.audio_limits import AudioLimits, probe
        from freebind.util.errors import MediaError

        try:
            rate, channels, frames = probe(str(path))   # the header only
        except Exception:  # noqa: BLE001  undecodable: the decoder reports it
            return
        try:
            AudioLimits(max_seconds=max_seconds).check(f"upload {name!r}", rate, channels,
                                                       frames)
        except MediaError as exc:
            hint = " (--max-seconds)" if "s of audio" in str(exc) else ""
            raise ApiError(413, f"{exc}{hint}") from None


async def _save_upload(file, path: Path, limit: int) -> int:
    """Copy an uploaded part to ``path`` in chunks; stops one byte past ``limit``."""
    size = 0
    with open(path, "wb") as out:
        while size <= limit:
            chunk = await file.read(min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            out.write(chunk)
            size += len(chunk)
    return size


def _safe_name(filename: str | None) -> str:
    name = os.path.basename((filename or "upload").replace("\\", "/")).strip()
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or "upload"


def _scrub(msg: str, tmp: Path, *paths: str) -> str:
    """A message without the server's temporary paths (``paths`` first, then ``tmp``)."""
    for p in [*paths, str(tmp)]:
        if p:
            msg = msg.replace(p, "upload")
    return msg


def _real_dirs(index) -> dict[str, str]:
    """Real path of every folder that holds indexed audio or image files, as of startup."""
    out: dict[str, str] = {}
    for it in index.items:
        if it["modality"] in ("audio", "image"):
            d = os.path.dirname(os.path.abspath(it["path"]))
            if d not in out:
                out[d] = os.path.realpath(d)
    return out


def _still_indexed(path: str, real_dirs: dict[str, str]) -> str | None:
    """The file to serve for an indexed ``path``, or None when it is gone, not a regular
    file, a symlink, or its folder now resolves elsewhere than at startup."""
    ap = os.path.abspath(path)
    d = os.path.dirname(ap)
    expected = os.path.join(real_dirs.get(d) or os.path.realpath(d), os.path.basename(ap))
    if os.path.realpath(ap) != expected:
        return None
    try:
        import stat

        st = os.lstat(expected)
    except OSError:
        return None
    return expected if stat.S_ISREG(st.st_mode) else None


def _check_range(header: str | None, size: int) -> None:
    """A Range header the file can satisfy, else a JSON 400 (malformed) or 416."""
    if header is None:
        return
    m = _RANGE.fullmatch(header.strip())
    if not m:
        raise ApiError(400, "malformed Range header (expected bytes=START-END)")
    for part in header.split("=", 1)[1].split(","):
        a, _, b = part.strip().partition("-")
        a, b = a.strip(), b.strip()
        if not a and not b:
            raise ApiError(400, "malformed Range header (expected bytes=START-END)")
        if a and (int(a) >= size or (b and int(b) < int(a))):
            raise ApiError(416, f"range {part.strip()} is outside the file ({size} bytes)")


def _thumb_dir(index) -> Path | None:
    p = getattr(index, "path", None)
    if p is None:
        return None
    d = Path(p) / "thumbs"
    return d if d.is_dir() else None


def _hit_json(h, media_info: dict | None = None, thumbs: bool = False) -> dict:
    d = h.to_dict()
    d["name"] = Path(h.path).name if h.text is None else h.path
    d["media"] = f"/api/media/{h.id}" if h.modality in ("audio", "image") else None
    extra = (media_info or {}).get(h.id, {})
    for key in ("caption", "duration"):
        if key in extra:
            d[key] = extra[key]
    if thumbs and ((h.modality == "audio" and "duration" in extra)
                   or (h.modality == "point" and "points" in extra)):
        d["thumb"] = f"/api/thumb/{h.id}"
    d.pop("path")
    return d


def _parse_search(body: dict, index) -> dict:
    """Check a search request's fields; raise a 400 naming the field."""
    known = {"text", "upload", "item", "k", "modality", "factors", "preset"}
    extra = sorted(set(body) - known)
    if extra:
        raise ApiError(400, f"search: unknown field {extra[0]!r} (fields: "
                            f"{', '.join(sorted(known))})")
    queries = [f for f in ("text", "upload", "item") if body.get(f) is not None]
    if len(queries) != 1:
        raise ApiError(400, "search: give exactly one of 'text', 'upload' or 'item'")
    out: dict[str, Any] = {}
    q = queries[0]
    if q == "text":
        if not isinstance(body["text"], str) or not body["text"].strip():
            raise ApiError(400, "search: 'text' must be a non-empty string")
        if len(body["text"]) > 10_000:
            raise ApiError(400, "search: 'text' is longer than 10000 characters")
        out["text"] = body["text"]
    elif q == "upload":
        if not isinstance(body["upload"], str):
            raise ApiError(400, "search: 'upload' must be the token /api/upload returned")
        out["upload"] = body["upload"]
    else:
        if not isinstance(body["item"], int) or isinstance(body["item"], bool) \
                or body["item"] < 0:
            raise ApiError(400, "search: 'item' must be an item id (a whole number ≥ 0)")
        out["item"] = body["item"]
    k = body.get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
        raise ApiError(400, "search: 'k' must be a whole number from 1 to 1000")
    out["k"] = k
    m = body.get("modality")
    if m is not None and (not isinstance(m, str) or m not in index.modalities):
        raise ApiError(400, f"search: 'modality' must be one of "
                            f"{', '.join(index.modalities)} (or null for all)")
    out["modality"] = m
    factors = body.get("factors")
    if factors is None:
        out["factors"] = None
    elif isinstance(factors, dict):
        specs = []
        for key, value in factors.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise ApiError(400, f"search: factor {key!r} must be a number or on/off")
            specs.append(f"{key}={value}")
        out["factors"] = specs
    elif isinstance(factors, list) and all(isinstance(x, str) for x in factors):
        out["factors"] = factors
    else:
        raise ApiError(400, "search: 'factors' must be an object {\"b2.audio\": 0.8} or a "
                            "list of strings [\"b2.audio=0.8\"]")
    preset = body.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ApiError(400, "search: 'preset' must be a string")
    out["preset"] = preset or None
    return out


def _preset_values(index) -> dict:
    """Each preset's effective value of every slider: ``{preset: {"b2.audio": 0.8}}``."""
    out = {}
    if index.fused is None:
        return out
    for name in sorted(index.presets):
        table = index._table(preset=name)
        out[name] = {f"{c['bond']}.{c['modality']}":
                     float(table[c["bond"]].factors.get(c["modality"], 0.0))
                     for c in index.factor_controls()}
    return out


def serve(index_dir: str | os.PathLike, host: str = "127.0.0.1", port: int = 8765,
          max_upload: int = DEFAULT_MAX_UPLOAD, space_options=None, log_level: str = "warning",
          on_start=None, allowed_hosts: Iterable[str] = (),
          max_pixels: int = DEFAULT_MAX_PIXELS, max_seconds: float = DEFAULT_MAX_SECONDS,
          head_timeout: float = 10.0, keys: Iterable[str] = (), no_auth: bool = False,
          open_ops: bool = False) -> None:
    """Load the index and run the server until interrupted (SIGINT/SIGTERM stop it
    gracefully; the upload folder is removed). A non-loopback ``host`` needs ``keys``
    unless ``no_auth``."""
    from freebind.serve.auth import KeyRing, check_exposure

    require_packages()
    from freebind.search import Index

    check_bind_host(host)
    check_exposure(host, KeyRing(keys), no_auth)
    index = Index.load(index_dir, space_options=space_options)
    app = create_app(index, max_upload=max_upload, host=host, allowed_hosts=allowed_hosts,
                     max_pixels=max_pixels, max_seconds=max_seconds, keys=keys,
                     open_ops=open_ops)
    if on_start is not None:
        on_start(index)
    run_guarded(app, host, port, log_level=log_level, head_timeout=head_timeout,
                timeout_keep_alive=5, timeout_graceful_shutdown=5)
