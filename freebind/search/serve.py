"""``freebind serve``: a JSON API and one web page over an :class:`~freebind.search.Index`.

Routes::

    GET  /                     the page (assets from this package: no CDN, no build step)
    GET  /static/<name>        the page's script and style sheet (a fixed list)
    GET  /api/info             target, modalities, presets, one control per bond factor
    POST /api/search           {"text" | "upload" | "item", "k", "modality", "factors", "preset"}
    POST /api/upload           multipart "file" (audio or image) → {"upload": token, …}
    GET  /api/media/<id>       the file of indexed item <id> (audio and images only)

Safe by default: files are served by item id from the index's own list, never by a path from
the request; uploads are size-limited and decoded like ``embed`` decodes (an undecodable file
is a 422 naming the reason); a malformed request is a 4xx JSON ``{"error": …}``.
"""


import os
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from freebind.errors import FreebindError, UsageError

STATIC = Path(__file__).parent / "static"
#: the only static files the server hands out: name → media type
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "index.html": "text/html; charset=utf-8"}
MEDIA_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg", ".png": "image/png", ".jpg": "image/jpeg",
               ".jpeg": "image/jpeg", ".webp": "image/webp", ".bmp": "image/bmp"}
DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def require_packages() -> None:
    """Name the missing web packages before any work starts."""
    missing = []
    import importlib.util

    for mod, pkg in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                     ("python_multipart", "python-multipart")):
        if importlib.util.find_spec(mod) is None:
            missing.append(pkg)
    if missing:
        raise UsageError(f"serving needs {', '.join(missing)} (pip install "
                         f"'freebind[search]')")


class _ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(index, max_upload: int = DEFAULT_MAX_UPLOAD, upload_dir: str | None = None):
    """The FastAPI application serving ``index`` (an :class:`Index`)."""
    require_packages()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="freebind search", docs_url=None, redoc_url=None, openapi_url=None)
    lock = threading.Lock()
    uploads: "OrderedDict[str, dict]" = OrderedDict()
    tmp = Path(upload_dir) if upload_dir else Path(tempfile.mkdtemp(prefix="freebind-serve-"))
    tmp.mkdir(parents=True, exist_ok=True)

    def error(status: int, message: str):
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(_ApiError)
    async def _api_error(request, exc: _ApiError):
        return error(exc.status, exc.message)

    @app.exception_handler(FreebindError)
    async def _freebind_error(request, exc: FreebindError):
        return error(400 if isinstance(exc, UsageError) else 500, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__})")

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html", media_type=ASSETS["index.html"],
                            headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    def static(name: str):
        if name not in ASSETS or name == "index.html":
            raise _ApiError(404, f"no asset {name!r}")
        return FileResponse(STATIC / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    def info():
        data = index.info()
        data["preset_values"] = _preset_values(index)
        data["max_upload"] = max_upload
        return data

    @app.get("/api/media/{item_id}")
    def media(item_id: str):
        if not item_id.isdigit() or len(item_id) > 12:
            raise _ApiError(404, "no such item")
        i = int(item_id)
        if i >= len(index.items):
            raise _ApiError(404, "no such item")
        item = index.items[i]
        path = Path(item["path"])
        kind = MEDIA_TYPES.get(path.suffix.lower())
        if item["modality"] not in ("audio", "image") or kind is None or not path.is_file():
            raise _ApiError(404, f"item {i} has no audio or image file to show")
        return FileResponse(path, media_type=kind)

    @app.post("/api/upload")
    async def upload(request: Request):
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _ApiError(415, "upload: send multipart/form-data with a 'file' field")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload + 64 * 1024:
            raise _ApiError(413, f"upload: larger than the limit of {max_upload} bytes")
        try:
            form = await request.form(max_files=1, max_fields=4,
                                      max_part_size=max_upload + 1)
        except Exception as exc:  # noqa: BLE001  (multipart parse errors of several types)
            msg = str(exc) or type(exc).__name__
            status = 413 if "size" in msg.lower() or "large" in msg.lower() else 400
            raise _ApiError(status, f"upload: malformed form ({msg})") from None
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise _ApiError(400, "upload: no 'file' field")
        data = await file.read(max_upload + 1)
        if len(data) > max_upload:
            raise _ApiError(413, f"upload: larger than the limit of {max_upload} bytes")
        if not data:
            raise _ApiError(400, "upload: the file is empty")
        from freebind.media import modality_of

        name = os.path.basename(file.filename or "upload")
        suffix = Path(name).suffix.lower()
        modality = modality_of(name) if suffix else None
        if modality not in ("audio", "image"):
            raise _ApiError(415, f"upload {name!r}: not an audio or image file by its "
                                 f"extension (audio: wav flac mp3 ogg; image: png jpg jpeg "
                                 f"webp bmp)")
        if modality not in index.query_modalities:
            raise _ApiError(400, f"{index.name} has no {modality} queries")
        token = secrets.token_hex(8)
        path = tmp / f"{token}{suffix}"
        path.write_bytes(data)
        try:
            with lock:  # decode and encode now: an undecodable file is reported here
                index.embed_query(modality, str(path))
        except UsageError as exc:
            path.unlink(missing_ok=True)
            raise _ApiError(422, f"upload {name!r}: {_strip(str(exc), str(path))}") from None
        uploads[token] = {"path": str(path), "modality": modality, "name": name}
        while len(uploads) > 64:
            _, old = uploads.popitem(last=False)
            Path(old["path"]).unlink(missing_ok=True)
        return {"upload": token, "modality": modality, "name": name, "bytes": len(data)}

    @app.post("/api/search")
    async def search(request: Request):
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _ApiError(400, "search: the body is not JSON") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "search: the body must be a JSON object")
        req = _parse_search(body, index)
        if "upload" in req:
            up = uploads.get(req["upload"])
            if up is None:
                raise _ApiError(404, "search: unknown or expired upload; upload the file "
                                     "again")
            query, qmod = up["path"], up["modality"]
        elif "item" in req:
            i = req["item"]
            if i >= len(index.items):
                raise _ApiError(404, f"search: no item {i}")
            it = index.items[i]
            qmod = it["modality"]
            query = it.get("text", it["path"]) if qmod == "text" else it["path"]
        else:
            query, qmod = req["text"], "text"
        t0 = time.perf_counter()
        with lock:
            hits = index.search(query, query_modality=qmod, k=req["k"],
                                modality=req["modality"], factors=req["factors"],
                                preset=req["preset"])
        ms = (time.perf_counter() - t0) * 1000
        return {"query_modality": qmod, "ms": round(ms, 2),
                "hits": [_hit_json(h) for h in hits]}

    app.state.upload_dir = tmp
    app.state.index = index
    return app


def _strip(msg: str, path: str) -> str:
    msg = msg.removeprefix("query: ")
    return msg.removeprefix(f"{path}: ")


def _hit_json(h) -> dict:
    d = h.to_dict()
    d["name"] = Path(h.path).name if h.text is None else h.path
    d["media"] = f"/api/media/{h.id}" if h.modality in ("audio", "image") else None
    d.pop("path")
    return d


def _parse_search(body: dict, index) -> dict:
    """Check a search request's fields; raise a 400 naming the field."""
    known = {"text", "upload", "item", "k", "modality", "factors", "preset"}
    extra = sorted(set(body) - known)
    if extra:
        raise _ApiError(400, f"search: unknown field {extra[0]!r} (fields: "
                             f"{', '.join(sorted(known))})")
    queries = [f for f in ("text", "upload", "item") if body.get(f) is not None]
    if len(queries) != 1:
        raise _ApiError(400, "search: give exactly one of 'text', 'upload' or 'item'")
    out: dict[str, Any] = {}
    q = queries[0]
    if q == "text":
        if not isinstance(body["text"], str) or not body["text"].strip():
            raise _ApiError(400, "search: 'text' must be a non-empty string")
        if len(body["text"]) > 10_000:
            raise _ApiError(400, "search: 'text' is longer than 10000 characters")
        out["text"] = body["text"]
    elif q == "upload":
        if not isinstance(body["upload"], str):
            raise _ApiError(400, "search: 'upload' must be the token /api/upload returned")
        out["upload"] = body["upload"]
    else:
        if not isinstance(body["item"], int) or isinstance(body["item"], bool) \
                or body["item"] < 0:
            raise _ApiError(400, "search: 'item' must be an item id (a whole number ≥ 0)")
        out["item"] = body["item"]
    k = body.get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
        raise _ApiError(400, "search: 'k' must be a whole number from 1 to 1000")
    out["k"] = k
    m = body.get("modality")
    if m is not None and (not isinstance(m, str) or m not in index.modalities):
        raise _ApiError(400, f"search: 'modality' must be one of "
                             f"{', '.join(index.modalities)} (or null for all)")
    out["modality"] = m
    factors = body.get("factors")
    if factors is None:
        out["factors"] = None
    elif isinstance(factors, dict):
        specs = []
        for key, value in factors.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise _ApiError(400, f"search: factor {key!r} must be a number or on/off")
            specs.append(f"{key}={value}")
        out["factors"] = specs
    elif isinstance(factors, list) and all(isinstance(x, str) for x in factors):
        out["factors"] = factors
    else:
        raise _ApiError(400, "search: 'factors' must be an object {\"b2.audio\": 0.8} or a "
                             "list of strings [\"b2.audio=0.8\"]")
    preset = body.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise _ApiError(400, "search: 'preset' must be a string")
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
          on_start=None) -> None:
    """Load the index and run the server until interrupted."""
    require_packages()
    import uvicorn

    from freebind.search import Index

    index = Index.load(index_dir, space_options=space_options)
    app = create_app(index, max_upload=max_upload)
    if on_start is not None:
        on_start(index)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS

