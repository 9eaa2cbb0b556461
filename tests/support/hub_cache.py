"""huggingface_hub's cache layout on disk, written by hand as the library writes it, so hub
references resolve through the real library without any network:

    <cache>/models--ORG--NAME/blobs/<sha256 of the file>
    <cache>/models--ORG--NAME/refs/<branch or tag>            (the commit hash, no newline)
    <cache>/models--ORG--NAME/snapshots/<commit>/<file>  ->  ../../blobs/<sha256>
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def put(cache: Path, repo_id: str, files: dict[str, Path], *, commit: str,
        refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``files`` (``{path in repo: local file}``) at ``commit`` of ``repo_id`` in the
    cache, with ``refs`` pointing at that commit; returns the snapshot folder."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for name, src in files.items():
        data = Path(src).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def put_bytes(cache: Path, repo_id: str, filename: str, data: bytes,
              commit: str = "0" * 40) -> Path:
    """``data`` as ``filename`` of ``repo_id`` at ``commit``, written straight into the
    snapshot (a plain file, no blob), ``refs/main`` pointing there; returns its path."""
    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / filename).write_bytes(data)
    return snapshot / filename
