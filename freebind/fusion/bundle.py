"""Bundles: one ``.safetensors`` file holding projector weights, with JSON metadata in the
header (format version, canonical expression, plan with graph and jobs, presets, spaces,
training config, data fingerprints, evaluation results). No pickle anywhere.

``save`` is atomic (a temporary file in the same folder, fsync, rename), so an interrupted
save never leaves a partial file under the final name. ``load`` reports a truncated file,
a file that is not safetensors, another format version or missing tensors in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from freebind.util.atomic import atomic_write
from freebind.util.errors import BundleError
from freebind.util.text import first_line

FORMAT_VERSION = 1
METADATA_KEY = "freebind"


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(value)


def save(path: str | os.PathLike, tensors: Mapping[str, object], metadata: dict) -> Path:
    """Write ``tensors`` and ``metadata`` (JSON-able) to ``path`` atomically."""
    from safetensors.numpy import save_file

    from freebind.util.version import __version__

    meta = {"format_version": FORMAT_VERSION, "freebind_version": __version__, **metadata}
    meta["format_version"] = FORMAT_VERSION
    arrays = {name: _to_numpy(t) for name, t in tensors.items()}
    header = {METADATA_KEY: json.dumps(meta, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=header))


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a bundle, reading only its header."""
    return _open(path)[1]


def load(path: str | os.PathLike, required: list[str] | None = None
         ) -> tuple[dict[str, np.ndarray], dict]:
    """``(tensors, metadata)``; ``required`` names tensors that must be present."""
    handle, meta = _open(path)
    with handle as f:
        keys = set(f.keys())
        missing = [k for k in (required or []) if k not in keys]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise BundleError(f"{path}: bundle is missing tensors {', '.join(missing[:3])}"
                              f"{more}")
        try:
            tensors = {k: f.get_tensor(k) for k in sorted(keys)}
        except Exception as exc:
            raise BundleError(f"{path}: cannot read tensors ({first_line(exc)}); the file "
                              f"is probably truncated") from None
    return tensors, meta


def _open(path):
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        from freebind.util.errors import BundleMissing

        raise BundleMissing(f"{path}: no such bundle file")
    if path.is_dir():
        from freebind.util.errors import BundleMissing

        raise BundleMissing(f"{path}: is a folder, not a bundle file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or n > size - 8:
            raise ValueError("bad header length")
        handle = safe_open(str(path), framework="numpy")
    except Exception as exc:
        reason = "truncated" if size > 8 and _looks_like_safetensors(path) else \
            "not a safetensors file"
        raise BundleError(f"{path}: {reason} ({first_line(exc)})") from None
    raw = (handle.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise BundleError(f"{path}: a safetensors file but not a freebind bundle (no "
                          f"'{METADATA_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: bundle metadata is not valid JSON ({exc})") from None
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version}; this freebind reads "
                          f"version {FORMAT_VERSION}")
    return handle, meta


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"
