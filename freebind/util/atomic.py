"""Atomic file writes: a temporary file in the destination folder, fsync, rename.

A reader (or a run resumed after a kill) sees either the old file or the complete new one,
never a partial file under the final name."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], *,
                 fsync: bool = True, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)``, then move the file to ``path`` atomically.

    The temporary file gets the usual mode (0666 less the umask), not mkstemp's 0600.
    ``fsync=False`` skips flushing to disk (for many small files that can be regenerated:
    the rename still guarantees no partial file under the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> Path:
    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write, fsync=fsync)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
