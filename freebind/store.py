"""The embedding store: every pool item embedded once per space, cached on disk.

Entries are content-addressed: an item's key is the SHA-256 of its file content (audio,
image, …) or of its text, so renaming or copying a file reuses its embedding, and a second
build that shares spaces and pools re-encodes nothing. Entries live under

    <root>/<space-slug>-<fingerprint hash>/<modality>/shard-<hash>.npz

Each shard holds ``keys`` (hex digests, ``S64``) and ``emb`` (float32 ``[n, dim]``) and is
written atomically (temporary file + ``os.replace``), so a killed run leaves only complete
shards. Items still missing are encoded in shards of ``shard_size`` laid out from the same
list of missing items, so a resumed run encodes exactly the batches the uninterrupted run
would have: at most the one shard in flight when the run died is recomputed, and the result
is identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from freebind.atomic import atomic_write, atomic_write_text
from freebind.errors import FreebindError, MediaError

from freebind.vocab import TEXT_MODALITIES  # noqa: E402  (items are strings)
_HASH_CHUNK = 1 << 20


def default_root() -> Path:
    """``$FREEBIND_HOME/cache`` (``FREEBIND_HOME`` defaults to ``~/.cache/freebind``)."""
    home = os.environ.get("FREEBIND_HOME") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "freebind")
    return Path(home) / "cache"


@dataclass(frozen=True)
class EmbedFailure:
    """An item that could not be embedded: its position in the request, the item, why."""

    index: int
    item: str
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}"


def text_key(text: str) -> str:
    return hashlib.sha256(b"text\0" + text.encode("utf-8")).hexdigest()


def file_key(path: str | os.PathLike) -> str:
    h = hashlib.sha256(b"file\0")
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(_HASH_CHUNK)
                if not block:
                    break
                h.update(block)
    except OSError as exc:
        raise MediaError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    return h.hexdigest()


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` atomically (temporary file in the same folder)."""
    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


class EmbeddingStore:
    """A content-addressed, sharded, resumable cache of embeddings.

    ``embed(space, modality, items)`` returns float32 ``[len(items), space.dim]`` in item
    order, encoding only what the cache lacks. ``on_error="skip"`` turns undecodable items
    into :class:`EmbedFailure` records: the call then returns ``(array, kept, failures)``
    with the rows of the items kept (``kept`` are their indices in ``items``)."""

    def __init__(self, root: str | os.PathLike | None = None, shard_size: int = 2048):
        self.root = Path(root) if root is not None else default_root()
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        self.shard_size = int(shard_size)
        self._file_keys: dict[tuple, str] = {}
        #: items encoded (not read from the cache) by this store object, for reports
        self.encoded = 0

    # --- layout ---------------------------------------------------------------------------
    def space_dir(self, space) -> Path:
        fp = str(space.fingerprint)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(getattr(space, "name", "space")))[:40]
        digest = hashlib.sha256(fp.encode("utf-8")).hexdigest()[:20]
        return self.root / f"{slug}-{digest}"

    def modality_dir(self, space, modality: str) -> Path:
        return self.space_dir(space) / modality

    def _write_space_meta(self, space) -> None:
        meta = self.space_dir(space) / "space.json"
        if meta.exists():
            return
        data = {"name": str(getattr(space, "name", "")), "fingerprint": str(space.fingerprint),
                "dim": int(space.dim)}
        atomic_write_text(meta, json.dumps(data, indent=1))

    # --- keys -----------------------------------------------------------------------------
    def key(self, modality: str, item: Any) -> str:
        """The content key of one item (raises MediaError when a file cannot be read)."""
        if modality in TEXT_MODALITIES:
            if not isinstance(item, str):
                raise MediaError(f"{item!r}: a text item must be a string")
            return text_key(item)
        path = os.fspath(item)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise MediaError(f"{path}: cannot read file ({exc.strerror or exc})") from None
        memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino)
        key = self._file_keys.get(memo)
        if key is None:
            key = self._file_keys[memo] = file_key(path)
        return key

    # --- index ----------------------------------------------------------------------------
    def _shards(self, mdir: Path) -> list[Path]:
        if not mdir.is_dir():
            return []
        return sorted(p for p in mdir.glob("shard-*.npz"))

    def _index(self, mdir: Path) -> dict[str, tuple[Path, int]]:
        """key -> (shard file, row) over every complete shard."""
        index: dict[str, tuple[Path, int]] = {}
        for path in self._shards(mdir):
            with np.load(path) as z:
                keys = z["keys"]
            for row, k in enumerate(keys.tolist()):
                index.setdefault(k.decode("ascii"), (path, row))
        return index

    def cached(self, space, modality: str) -> int:
        """How many distinct items of ``modality`` the cache holds for ``space``."""
        return len(self._index(self.modality_dir(space, modality)))

    # --- the work -------------------------------------------------------------------------
    def embed(self, space, modality: str, items: Sequence[Any], batch_size: int = 64,
              progress: bool = True, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        if modality not in tuple(space.modalities):
            raise FreebindError(f"space {getattr(space, 'name', space)!r} has no "
                                f"{modality!r} encoder (it has {', '.join(space.modalities)})")
        items = list(items)
        failures: dict[int, EmbedFailure] = {}
        keys: list[str | None] = []
        for i, item in enumerate(items):
            try:
                keys.append(self.key(modality, item))
            except MediaError as exc:
                if on_error == "raise":
                    raise
                keys.append(None)
                failures[i] = EmbedFailure(i, _item_text(item), _reason(exc, item))

        mdir = self.modality_dir(space, modality)
        index = self._index(mdir)
        # distinct keys still missing, in first-appearance order (the shard layout)
        missing: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is not None and k not in index and k not in missing:
                missing[k] = i
        if missing:
            self._write_space_meta(space)
            bad_keys = self._encode_missing(space, modality, items, missing, mdir, batch_size,
                                            progress, on_error)
            for k, exc in bad_keys.items():
                for i, kk in enumerate(keys):
                    if kk == k and i not in failures:
                        failures[i] = EmbedFailure(i, _item_text(items[i]), _reason(exc, items[i]))
            index = self._index(mdir)

        kept = [i for i in range(len(items)) if i not in failures]
        out = np.empty((len(kept), int(space.dim)), dtype=np.float32)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for pos, i in enumerate(kept):
            s, row = index[keys[i]]
            by_shard.setdefault(s, []).append((pos, row))
        for s, pairs in by_shard.items():
            with np.load(s) as z:
                emb = z["emb"]
            if emb.shape[1] != out.shape[1]:
                raise FreebindError(f"{s}: cached embeddings have dim {emb.shape[1]}, "
                                    f"space has {out.shape[1]}; delete the folder to rebuild")
            pos = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
            rows = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            out[pos] = emb[rows]
        if on_error == "skip":
            return out, np.asarray(kept, dtype=np.int64), [failures[i] for i in sorted(failures)]
        return out

    def _encode_missing(self, space, modality, items, missing: dict[str, int], mdir: Path,
                        batch_size: int, progress: bool, on_error: str) -> dict[str, Exception]:
        todo = list(missing.items())
        bad: dict[str, Exception] = {}
        bar = None
        if progress:
            from freebind.progress import bar as tqdm

            bar = tqdm(total=len(todo), unit="item", leave=False,
                       desc=f"embed {getattr(space, 'name', '')} {modality}")
        try:
            for start in range(0, len(todo), self.shard_size):
                chunk = todo[start:start + self.shard_size]
                shard_keys, shard_rows = [], []
                for b in range(0, len(chunk), batch_size):
                    batch = chunk[b:b + batch_size]
                    got = self._encode_batch(space, modality, [items[i] for _, i in batch],
                                             on_error)
                    for (k, _), emb in zip(batch, got):
                        if isinstance(emb, Exception):
                            bad[k] = emb
                        else:
                            shard_keys.append(k)
                            shard_rows.append(emb)
                    if bar is not None:
                        bar.update(len(batch))
                if shard_keys:
                    emb = np.stack(shard_rows).astype(np.float32, copy=False)
                    name = hashlib.sha256("".join(shard_keys).encode("ascii")).hexdigest()[:24]
                    atomic_save_npz(mdir / f"shard-{name}.npz",
                                    keys=np.array(shard_keys, dtype="S64"), emb=emb)
                    self.encoded += len(shard_keys)
        finally:
            if bar is not None:
                bar.close()
        return bad

    def _encode_batch(self, space, modality, batch, on_error):
        """Rows of one batch; under ``skip`` a failing batch is retried item by item and the
        undecodable items come back as their exception."""
        try:
            return list(_as_numpy(space.encode(modality, batch, batch_size=len(batch))))
        except MediaError:
            if on_error == "raise" and len(batch) == 1:
                raise
            if on_error == "raise":
                for item in batch:  # find the culprit and report it
                    space.encode(modality, [item], batch_size=1)
                raise
        rows: list[Any] = []
        for item in batch:
            try:
                rows.append(_as_numpy(space.encode(modality, [item], batch_size=1))[0])
            except MediaError as exc:
                rows.append(exc)
        return rows


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _item_text(item: Any) -> str:
    return item if isinstance(item, str) else os.fspath(item)


def _reason(exc: Exception, item: Any) -> str:
    """The reason part of a MediaError (its message without the leading path)."""
    msg = str(exc)
    prefix = f"{_item_text(item)}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg
