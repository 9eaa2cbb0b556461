"""Build or extend an index folder from ``freebind embed`` outputs (what ``freebind index``
runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from freebind.run.embed_folder import read_manifest
from freebind.util.errors import UsageError
from freebind.search.index import Index


def embed_target(folder: Path) -> str:
    """The target an embed folder names (``embed.json``'s ``target``: a space reference, or
    a bundle's expression, which does not say where the bundle file is)."""
    return str(read_manifest(folder).get("target", ""))


def embed_ref(folder: Path) -> str:
    """The target to index an embed folder with: for a bundle, the file ``embed.json``
    records (path and content hash), or, when it has moved, the ``*.safetensors`` beside the
    folder (in it, or next to it) with that content; for a space, its reference."""
    folder = Path(folder)
    meta = read_manifest(folder)
    rec = meta.get("bundle")
    if not isinstance(rec, dict) or not rec.get("path"):
        return str(meta.get("target", ""))
    from freebind.run.partitions import bundle_hash

    suffix = f"@{rec['preset']}" if rec.get("preset") else ""
    want = rec.get("content")
    candidates = [Path(rec["path"])]
    for d in (folder, folder.parent):
        candidates += sorted(d.glob("*.safetensors"))
    for c in candidates:
        try:
            if c.is_file() and (not want or bundle_hash(c) == want):
                return str(c) + suffix
        except OSError:
            continue
    raise UsageError(f"{folder}: embedded with the bundle {rec['path']}, which is gone (no "
                     f"bundle with its content in {folder} or {folder.parent}); give "
                     f"--target BUNDLE")


def build_index(embed_dirs: Sequence[os.PathLike], output: os.PathLike, *,
                target: str | None = None, factors: Sequence[str] = (),
                preset: str | None = None, exact_limit: int | None = None, store=None,
                batch_size: int = 64, progress: bool = True,
                space_options: Mapping | None = None, captions: os.PathLike | None = None,
                caption_column: str | None = None, thumbnails: bool = True) -> dict:
    """Create ``output`` (or add the partitions it lacks) from ``embed_dirs``; returns the
    report: rows per modality, how each is searched (exact, or HNSW with its recall@10)."""
    output = Path(output)
    dirs = [Path(d) for d in embed_dirs]
    if not dirs:
        raise UsageError("give at least one folder written by `freebind embed`")
    for d in dirs:
        embed_target(d)  # every folder checked before any work
    if captions is not None:
        from freebind.search.thumbs import file_captions

        file_captions(captions, caption_column)  # a bad table fails before any work
    if (output / "index.json").is_file():
        if target or factors or preset:
            raise UsageError(f"{output}: is an index already (its target and factors are "
                             f"fixed); leave out --target/--factor/--preset to extend it")
        index = Index.load(output, space_options=space_options, store=store)
        if exact_limit is not None:
            index.exact_limit = int(exact_limit)
    else:
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise UsageError(f"{output}: exists and is not an index; choose a new folder")
        ref = target or embed_ref(dirs[0])
        if not ref:
            raise UsageError(f"{dirs[0]}: embed.json names no target; give target=BUNDLE")
        try:
            index = Index(ref, factors, preset, space_options=space_options, store=store,
                          **({"exact_limit": int(exact_limit)} if exact_limit else {}))
        except UsageError:
            raise
        except Exception as exc:  # an unknown space named by embed.json: say what to do
            if target is None:
                raise UsageError(f"{dirs[0]}: embedded with {ref!r}; give the bundle file "
                                 f"it was embedded with as target (--target BUNDLE)") from None
            raise exc
    _check_faiss(index, dirs)
    report = add_folders(index, dirs, store=store, batch_size=batch_size, progress=progress)
    index.save(output, progress=progress)
    from freebind.search.thumbs import write_media_info

    media = write_media_info(output, captions=captions, caption_column=caption_column,
                             thumbnails=thumbnails, progress=progress)
    info = index.info()
    mods = {}
    for m, rows in info["modalities"].items():
        ann = info["approximate"].get(m)
        if ann:
            extra = ", ".join(f"{p} {v:.3f}" for p, v in ann["recall@10 by preset"].items())
            search = f"HNSW, recall@10 {ann['recall@10']:.3f}" + (f" ({extra})" if extra else "")
        else:
            search = "exact"
        mods[m] = {"rows": rows, "search": search,
                   "recall@10": ann["recall@10"] if ann else 1.0}
    return {"output": str(output), "target": index.ref, "expression": index.name,
            "items": info["items"], "modalities": mods, "media": media, **report}


def add_folders(index: Index, dirs: Sequence[Path], *, store=None, batch_size: int = 64,
                progress: bool = False) -> dict:
    """Add every embed folder's finished partitions to ``index``; the summed report
    (``partitions``, ``added``, ``skipped``). Nothing added at all is a UsageError."""
    report = {"partitions": 0, "added": 0, "skipped": []}
    for d in dirs:
        r = index.add_embeddings(d, store=store, batch_size=batch_size, progress=progress)
        for key in ("partitions", "added"):
            report[key] += r[key]
        report["skipped"] += r["skipped"]
    if not index.items:
        raise UsageError("nothing to index: the folders hold no finished partitions")
    return report


def _check_faiss(index: Index, dirs: list[Path]) -> None:
    """Name a missing faiss before any work when a modality will pass the exact limit."""
    rows = {m: b.rows for m, b in index.blocks.items()}
    for d in dirs:
        for p in read_manifest(d).get("partitions", []):
            rows[p["modality"]] = rows.get(p["modality"], 0) + int(p.get("items", 0))
    if any(n > index.exact_limit for n in rows.values()):
        from freebind.search.index import _faiss

        _faiss()
