"""The layout of a ``freebind embed`` output folder, and reading it back: where a partition's
files live, the manifest (``embed.json``), the partitions' metadata, and the texts that text
rows' sources name.

A text row's source (the metadata's ``path`` cell) is ``FILE:LINE`` for the LINE-th text
(from 1) of a texts file (one text per non-empty line), a locator into a tar shard or a
table (:func:`freebind.data.readers.text_of`), or a text file. The importer
(:mod:`freebind.run.importer`) and the search index (:mod:`freebind.search.index`) both read
embed folders through this module; :mod:`freebind.run.partitions` writes them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

from freebind.util.errors import MediaError, UsageError

#: the run's manifest in the output folder
MANIFEST = "embed.json"
_LINE_SOURCE = re.compile(r"(.+):(\d+)")


def partition_paths(output: str | os.PathLike, modality: str, k: int,
                    metadata: str = "parquet") -> dict[str, Path]:
    """Where partition ``k`` (of ``modality``) of the output folder ``output`` lives:
    ``embeddings``, ``metadata`` (in the ``metadata`` format), ``skipped``."""
    out, m = Path(output), modality
    ext = "parquet" if metadata == "parquet" else "jsonl"
    return {"embeddings": out / f"{m}_emb" / f"{m}_emb_{k}.npy",
            "metadata": out / "metadata" / f"metadata_{k}.{ext}",
            "skipped": out / "skipped" / f"skipped_{k}.jsonl"}


def line_source(path: str | os.PathLike, n: int) -> str:
    """The source of the ``n``-th text (from 1) of the texts file ``path``: ``FILE:N``."""
    return f"{path}:{n}"


def read_manifest(folder: str | os.PathLike) -> dict:
    """``embed.json`` of an embed output folder (a missing or unreadable one is refused)."""
    f = Path(folder) / MANIFEST
    if not f.is_file():
        raise UsageError(f"{folder}: no {MANIFEST}; give a folder written by `freebind embed`")
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{f}: unreadable ({exc})") from None


def read_metadata(path: str | os.PathLike) -> dict[str, list]:
    """A metadata file (``.parquet``, else JSON lines) as columns ``{name: [cells]}`` in row
    order; JSON lines give every key any row has (None where a row lacks it)."""
    path = Path(path)
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise UsageError(f"{path}: reading parquet metadata needs pyarrow") from None
        try:
            return pq.read_table(path).to_pydict()
        except Exception as exc:  # noqa: BLE001  (pyarrow raises many types)
            raise UsageError(f"{path}: unreadable ({exc})") from None
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        raise UsageError(f"{path}:{n}: not a JSON line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: unreadable ({exc})") from None
    names = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in names}


def partition_rows(folder: str | os.PathLike, manifest: dict, part: dict) -> list[dict]:
    """The rows of partition ``part`` (an entry of ``manifest["partitions"]``) of an embed
    output folder: ``{"path", "modality", "row"}`` each, in row order."""
    files = partition_paths(folder, part["modality"], int(part["k"]),
                            manifest.get("metadata", "parquet"))
    cols = read_metadata(files["metadata"])
    n = len(next(iter(cols.values()), []))
    return [{"path": p, "modality": m, "row": r}
            for p, m, r in zip(*(cols.get(c, [None] * n) for c in ("path", "modality", "row")))]


def existing_file(name: str, base: Path | None = None) -> Path | None:
    """``name`` as a file that exists: as given, else (relative) under ``base``; or None."""
    path = Path(name)
    if path.is_file():
        return path
    if base is None or path.is_absolute():
        return None
    alt = base / name
    return alt if alt.is_file() else None


class TextSources:
    """The texts behind text rows' sources (see the module doc). Each texts file is read once
    per object; relative paths are looked up as given, then under ``base``."""

    def __init__(self, base: str | os.PathLike | None = None):
        self.base = None if base is None else Path(base)
        self._files: dict[str, Sequence[str]] = {}

    def line(self, source: str) -> str | None:
        """The text a ``FILE:LINE`` source names; None when ``source`` is not one (or its
        file is not here)."""
        m = _LINE_SOURCE.fullmatch(source)
        if m is None:
            return None
        path = existing_file(m.group(1), self.base)
        if path is None:
            return None
        lines = self._files.get(str(path))
        if lines is None:
            from freebind.data.items import StringArray
            from freebind.data.media import iter_texts

            # streamed and held packed (a texts file of millions of lines), never a list
            lines = self._files[str(path)] = StringArray.pack(iter_texts(path))
        i = int(m.group(2)) - 1
        if not 0 <= i < len(lines):
            raise MediaError(f"{source}: the file has {len(lines)} text line(s)")
        return lines[i]

    def text(self, source: str) -> str:
        """The text ``source`` names: a locator's, a ``FILE:LINE``'s, or a text file's."""
        from freebind.data.readers import text_of

        text = text_of(source)
        if text is None:
            text = self.line(source)
        if text is None:
            f = existing_file(source, self.base)
            if f is None:
                raise MediaError(f"{source}: cannot read the text")
            text = f.read_text(encoding="utf-8").strip()
        return text
