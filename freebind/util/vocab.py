"""Shared vocabularies: one home for the names and small parsers that several parts of
freebind agree on (the expression language, the builder, the embedder, the CLI).

Nothing here imports anything heavy; every other module takes these from here.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from freebind.util.errors import UsageError

#: every modality name freebind knows, in canonical order (also the partition order)
ALL_MODALITIES = ("audio", "image", "text", "video", "depth", "thermal", "imu", "point")
#: modalities that unpaired pools (and the mini world) provide
POOL_MODALITIES = ("audio", "image", "text")
#: modalities whose items are strings; every other modality's items are file paths
TEXT_MODALITIES = ("text",)
#: encoder precisions a space may be loaded with
PRECISIONS = ("fp32", "fp16", "bf16")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def parse_value(text: str):
    """``"4"`` → 4, ``"0.5"`` → 0.5, ``"true"``/``"no"`` → bool, anything else the string."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return _BOOLS.get(text.lower(), text)


def parse_key_values(specs: Sequence[str] | None, what: str = "option", *,
                     convert: bool = True, allow_empty: bool = False,
                     example: str = "checkpoint=/path/model.pt, workers=4") -> dict[str, Any]:
    """``["checkpoint=/m.pt", "workers=4"]`` → ``{"checkpoint": "/m.pt", "workers": 4}``.

    Values go through :func:`parse_value` unless ``convert`` is false (then they stay
    strings); ``allow_empty`` accepts ``KEY=``. Raises :class:`UsageError` naming the bad
    spec; ``what`` names what the specs are in the message (an argument, or a CLI flag)."""
    out: dict[str, Any] = {}
    for spec in specs or ():
        key, eq, value = str(spec).partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or (not value and not allow_empty):
            raise UsageError(f"{what} {spec!r}: expected KEY=VALUE (e.g. {example})")
        if not _KEY.match(key):
            raise UsageError(f"{what} {spec!r}: {key!r} is not an option name "
                             "(letters, digits, _)")
        if key in out:
            raise UsageError(f"{what} {key}: given twice")
        out[key] = parse_value(value) if convert else value
    return out


def merge_space_options(options: Mapping[str, Any] | None = None, *,
                        device: str | None = None, precision: str | None = None,
                        names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Loader options for ``spaces.get(ref, **options)``: ``options`` plus ``device`` and
    ``precision`` when given (only what was given, so spaces fall back to their defaults
    and FREEBIND_* variables). ``names`` says how the caller calls each input in error
    messages (the CLI passes its flags; the library its argument names)."""
    names = {"device": "device", "precision": "precision", "options": "space_options",
             **(names or {})}
    out = dict(options or {})
    for key, value in (("device", device), ("precision", precision)):
        if value is None:
            continue
        value = str(value).strip()
        if not value:
            raise UsageError(f"{names[key]}: empty value")
        if key in out and str(out[key]) != value:
            raise UsageError(f"{names[key]} {value} contradicts {names['options']} "
                             f"{key}={out[key]}")
        out[key] = value
    if "device" in out and not isinstance(out["device"], str):
        raise UsageError(f"device {out['device']!r}: expected a name like cpu, cuda or cuda:1")
    if "precision" in out:
        p = str(out["precision"]).lower()
        if p not in PRECISIONS:
            raise UsageError(f"{names['precision']} {out['precision']}: use one of "
                             f"{', '.join(PRECISIONS)}")
        out["precision"] = p
    return out


def is_mini_only(families: Sequence[str]) -> bool:
    """Whether a plan whose spaces are of ``families`` uses mini spaces only (then it has
    default pools and needs no weights to download)."""
    families = [str(f) for f in families]
    return bool(families) and set(families) == {"mini"}


# --- media files by extension (freebind.data.media, freebind.data.readers) ---------------------------

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
TEXT_EXTENSIONS = (".txt",)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
#: 3D shapes: point clouds and meshes (``point``; ``.npy``/``.npz`` clouds are named with
#: ``discover(..., as_modality="point")``, like IMU arrays); freebind.data.points reads them
POINT_EXTENSIONS = (".ply", ".pcd", ".obj", ".off", ".stl", ".glb", ".gltf")
#: the modalities an extension tells apart (depth/thermal maps and IMU arrays are PNG/.npy
#: files that look like images or anything else: name them with ``discover(..., as_modality)``)
EXTENSION_MODALITIES = ("audio", "image", "text", "video", "point")


def modality_of(path) -> str | None:
    """``audio``, ``image``, ``text``, ``video`` or ``point`` by file extension; None for
    anything else."""
    from pathlib import Path

    ext = Path(path).suffix.lower()
    if ext in AUDIO_EXTENSIONS:
        return "audio"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in TEXT_EXTENSIONS:
        return "text"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in POINT_EXTENSIONS:
        return "point"
    return None
