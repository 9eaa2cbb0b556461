"""What the search page shows of an indexed file without playing it: a waveform thumbnail and
the duration of every audio item, three views of every point cloud, and a caption for any
audio, image or point item.

Written into the index folder at index time (``freebind index`` calls
:func:`write_media_info`)::

    idx/thumbs/<id>.png    a 240×48 waveform (min/max envelope), audio items;
                           a 240×80 picture of a point cloud from the front, the side and
                           above (nearer points drawn over farther, shaded by depth)
    idx/media.json         {"<id>": {"duration": seconds, "caption": "…", "points": N}}

A caption is the text of a sidecar file with the same stem (``dog_bark.wav`` → ``dog_bark.txt``,
first 300 characters), or a row of a captions table given at index time (``--captions
FILE.csv``, its ``--caption-column``; :func:`file_captions`). Incremental: items that already
have an entry are skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from freebind.util.atomic import atomic_write_text
from freebind.util.progress import bar

WIDTH, HEIGHT = 240, 48
MEDIA_INFO = "media.json"
CAPTION_CHARS = 300


def waveform_png(wave: np.ndarray, path: Path, width: int = WIDTH,
                 height: int = HEIGHT) -> None:
    """Draw the min/max envelope of a mono signal in [-1, 1] as a PNG."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (246, 248, 251))
    draw = ImageDraw.Draw(img)
    mid = height / 2
    draw.line([(0, mid), (width, mid)], fill=(214, 221, 230))
    if len(wave):
        cols = np.array_split(np.asarray(wave, dtype=np.float32), min(width, len(wave)))
        peak = max(float(np.abs(wave).max()), 1e-6)
        scale = (height / 2 - 2) / peak
        for x, c in enumerate(cols):
            if not len(c):
                continue
            lo, hi = float(c.min()), float(c.max())
            draw.line([(x, mid - hi * scale), (x, mid - lo * scale)], fill=(47, 111, 176))
    img.save(path, format="PNG")  # regenerable: media.json lists it only once written


POINT_VIEWS = ((0.0, 0.0), (90.0, 0.0), (0.0, 90.0))   # (turn about z, tilt about x), degrees
POINT_HEIGHT = 80
POINT_DRAWN = 2048


def points_png(xyz: np.ndarray, rgb: np.ndarray | None, path: Path, width: int = WIDTH,
               height: int = POINT_HEIGHT) -> None:
    """Three orthographic views of a cloud side by side (front, side, top): each point a
    dot in its colour (grey without one), nearer points over farther ones and brighter."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), (246, 248, 251))
    draw = ImageDraw.Draw(img)
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) > POINT_DRAWN:        # an even subsample: every k-th point
        keep = np.linspace(0, len(xyz) - 1, POINT_DRAWN).astype(int)
        xyz = xyz[keep]
        rgb = None if rgb is None else np.asarray(rgb)[keep]
    colour = np.full((len(xyz), 3), 0.45) if rgb is None else np.asarray(rgb, np.float64)
    xyz = xyz - xyz.mean(axis=0)
    radius = max(float(np.sqrt((xyz ** 2).sum(1)).max()), 1e-9)
    cell = width // len(POINT_VIEWS)
    half = min(cell, height) / 2 - 3
    for v, (turn, tilt) in enumerate(POINT_VIEWS):
        a, b = np.radians(turn), np.radians(tilt)
        rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        p = xyz @ rz.T @ rx.T / radius        # x right, z up, y into the picture
        order = np.argsort(-p[:, 1])          # far first
        cx, cy = cell * v + cell / 2, height / 2
        for i in order:
            shade = 0.75 + 0.25 * (1 - (p[i, 1] + 1) / 2)
            c = tuple(int(min(255, 255 * shade * k)) for k in colour[i])
            x, y = cx + p[i, 0] * half, cy - p[i, 2] * half
            draw.ellipse([x - 1.2, y - 1.2, x + 1.2, y + 1.2], fill=c)
    img.save(path, format="PNG")


def _cloud(path: str):
    from freebind.data.points import read_cloud
    from freebind.util.errors import MediaError

    try:
        return read_cloud(path, mesh_points=POINT_DRAWN)
    except MediaError:          # unreadable clouds get no thumbnail
        return None


def _audio(path: str) -> tuple[np.ndarray, float] | None:
    try:
        import soundfile as sf

        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001  undecodable files get no thumbnail
        return None
    if not len(data):
        return None
    return data.mean(axis=1), len(data) / float(rate)


def _sidecar_caption(path: str) -> str | None:
    txt = Path(path).with_suffix(".txt")
    try:
        if txt.is_file() and txt.stat().st_size < 1 << 20:
            text = " ".join(txt.read_text(encoding="utf-8", errors="replace").split())
            return text[:CAPTION_CHARS] or None
    except OSError:
        return None
    return None


FILE_COLUMNS = ("path", "file_name", "filename", "file", "youtube_id", "audio", "image")
CAPTION_COLUMNS = ("caption", "caption_1", "text", "category")


def file_captions(table: os.PathLike, column: str | None = None) -> dict[str, str]:
    """``{file stem: caption}`` from a CSV/TSV with a header: the file column is the first of
    path, file_name, filename, file, youtube_id, audio, image; the caption column is
    ``column`` or the first of caption, caption_1, text, category. Files are matched by
    stem (AudioCaps names clips by YouTube id without an extension)."""
    import csv

    from freebind.util.errors import UsageError

    table = Path(table)
    try:
        text = table.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{table}: cannot read captions ({exc.strerror or exc})") from None
    rows = list(csv.DictReader(text.splitlines(),
                               delimiter="\t" if table.suffix.lower() == ".tsv" else ","))
    head = list(rows[0]) if rows else []
    fcol = next((c for c in FILE_COLUMNS if c in head), None)
    ccol = column or next((c for c in CAPTION_COLUMNS if c in head), None)
    if fcol is None or ccol not in head:
        raise UsageError(f"{table}: needs a file column ({', '.join(FILE_COLUMNS)}) and a "
                         f"caption column ({column or ', '.join(CAPTION_COLUMNS)}); it has "
                         f"{', '.join(head) or 'no header'}")
    out: dict[str, str] = {}
    for r in rows:
        name, cap = (r.get(fcol) or "").strip(), " ".join((r.get(ccol) or "").split())
        if name and cap:
            out.setdefault(Path(name).stem, cap[:CAPTION_CHARS])
    return out


def write_media_info(index_dir: os.PathLike, captions: os.PathLike | None = None,
                     caption_column: str | None = None, thumbnails: bool = True,
                     progress: bool = False) -> dict:
    """Thumbnails, durations and captions of the index's audio, image and point items (those
    without an entry yet). Returns ``{"thumbnails": n, "captions": n}`` (new ones)."""
    index_dir = Path(index_dir)
    from freebind.search.itemtable import ItemTable

    items = ItemTable.load(index_dir)
    info_path = index_dir / MEDIA_INFO
    info: dict = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError:
            info = {}
    table = file_captions(captions, caption_column) if captions else {}
    thumbs = index_dir / "thumbs"
    todo = [(i, items[i]) for i in items.ids_of(("audio", "image", "point")).tolist()
            if str(i) not in info]
    made = {"thumbnails": 0, "captions": 0}
    with bar(total=len(todo), desc="thumbnails", unit="file", disable=not progress) as pb:
        for i, it in todo:
            pb.update(1)
            entry: dict = {}
            caption = table.get(Path(it["path"]).stem) or _sidecar_caption(it["path"])
            if caption:
                entry["caption"] = caption
                made["captions"] += 1
            if it["modality"] == "audio":
                got = _audio(it["path"])
                if got is not None:
                    wave, seconds = got
                    entry["duration"] = round(seconds, 2)
                    if thumbnails:
                        thumbs.mkdir(exist_ok=True)
                        waveform_png(wave, thumbs / f"{i}.png")
                        made["thumbnails"] += 1
            elif it["modality"] == "point":
                _point_entry(it["path"], thumbs / f"{i}.png", entry, made, thumbnails)
            info[str(i)] = entry
    if todo:
        atomic_write_text(info_path, json.dumps(info))
    return made


def _point_entry(path: str, png: Path, entry: dict, made: dict, thumbnails: bool) -> None:
    cloud = _cloud(path)
    if cloud is None:
        return
    entry["points"] = len(cloud)
    if thumbnails:
        png.parent.mkdir(exist_ok=True)
        points_png(cloud.xyz, cloud.rgb, png)
        made["thumbnails"] += 1


def read_media_info(index_dir: os.PathLike | None) -> dict[int, dict]:
    """``{item id: {"duration", "caption"}}`` of an index folder (empty when none)."""
    if index_dir is None:
        return {}
    p = Path(index_dir) / MEDIA_INFO
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {int(k): v for k, v in raw.items() if k.isdigit() and isinstance(v, dict)}
