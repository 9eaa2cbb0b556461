"""``freebind embed TARGET PATH... -o OUT``: embed files with a space or a fused bundle and
write partitions that embedding tools read (clip-retrieval / embedding-reader layout)::

    OUT/<modality>_emb/<modality>_emb_<k>.npy     float32 [rows, dim] (float16 with --fp16)
    OUT/metadata/metadata_<k>.parquet             path, modality, row — in row order
    OUT/skipped/skipped_<k>.jsonl                  files of partition k that were skipped
    OUT/embed.json                                 the run: target, factors, partitions

Partition numbers k run across modalities, so ``metadata_<k>`` describes exactly the rows of
the one ``*_emb_<k>.npy``. Base embeddings go through the embedding store (cached,
resumable) and each partition is written atomically, so re-running a killed run skips the
finished partitions and recomputes at most one store shard. Unreadable, truncated or
mislabelled files are reported (path and reason) and skipped; ``--strict`` makes them an
error exit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import List, Optional

import typer

from freebind.atomic import atomic_write

from freebind_cli.common import (
    console, device_option, parse_space_options, precision_option, print_json,
    space_option_option,
)

#: every modality a space may have (freebind.spaces.base.ALL_MODALITIES), in output order
MODALITY_ORDER = ("audio", "image", "text", "video", "depth", "thermal", "imu")


def _write_npy(path: Path, arr) -> None:
    import numpy as np

    def w(tmp):
        with open(tmp, "wb") as fh:
            np.save(fh, arr)

    atomic_write(path, w)


def _write_metadata(path: Path, rows: list[dict], fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"path": [r["path"] for r in rows],
                          "modality": [r["modality"] for r in rows],
                          "row": [r["row"] for r in rows]})
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class Target:
    """A space or a fused bundle, with a uniform ``embed(modality, items)`` over the store
    that skips undecodable items: returns (array [kept, dim], kept indices, failures)."""

    def __init__(self, ref: str, store, factors=(), preset=None, space_options=None):
        from freebind.errors import UsageError

        self.store = store
        self.space_options = dict(space_options or {})
        self.fused = None
        path = Path(ref)
        if ref.endswith(".safetensors") or path.is_file():
            if not path.is_file():
                raise UsageError(f"{ref}: no such bundle")
            import freebind

            self.fused = freebind.load(path, factors=list(factors) or None, preset=preset)
            self.name, self.dim = self.fused.name, self.fused.dim
            self.modalities = tuple(self.fused.modalities)
            self.fingerprint = self.fused.fingerprint
        else:
            if factors or preset:
                raise UsageError("--factor and --preset apply to fused bundles, not to "
                                 f"the plain space {ref!r}")
            from freebind import spaces

            self.space = spaces.get(ref, **self.space_options)
            self.name, self.dim = self.space.name, int(self.space.dim)
            self.modalities = tuple(self.space.modalities)
            self.fingerprint = str(self.space.fingerprint)

    def embed(self, modality, items, batch_size, progress):
        import numpy as np

        if self.fused is None:
            return self.store.embed(self.space, modality, items, batch_size=batch_size,
                                    progress=progress, on_error="skip")
        from freebind import spaces

        inputs, kept, failures = {}, None, {}
        raw = {}
        for ref, mods in self.fused.inputs_needed(modality).items():
            space = spaces.get(ref, **self.space_options)
            for m in sorted(mods):
                arr, idx, fails = self.store.embed(space, m, items, batch_size=batch_size,
                                                   progress=progress, on_error="skip")
                raw[(ref, m)] = (arr, idx)
                kept = idx if kept is None else np.intersect1d(kept, idx)
                for f in fails:
                    failures.setdefault(f.index, f)
        kept = np.arange(len(items)) if kept is None else kept
        for (ref, m), (arr, idx) in raw.items():
            inputs.setdefault(ref, {})[m] = arr[np.searchsorted(idx, kept)]
        if len(kept) == 0:
            out = np.zeros((0, self.dim), dtype=np.float32)
        else:
            out = self.fused.fuse(inputs, modalities=[modality])[modality].numpy()
        return out, kept, [failures[i] for i in sorted(failures)]


def collect(paths: list[Path], texts: Optional[Path],
            as_modality: Optional[str] = None) -> dict[str, list[tuple[str, object]]]:
    """(source, item) per modality: files by extension (``as_modality``: every file given or
    found in a folder given is of that modality); a text file is one text (its content);
    ``--texts FILE`` gives one text per line, sourced ``FILE:LINE``."""
    from freebind.errors import MediaError
    from freebind.media import discover, read_texts

    found = discover(paths, as_modality=as_modality) if paths else {}
    out: dict[str, list[tuple[str, object]]] = {m: [] for m in MODALITY_ORDER}
    for m, files in found.items():
        if m != "text":
            out[m] = [(str(p), p) for p in files]
            continue
        for p in files:
            try:
                content = p.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                out["text"].append((str(p), MediaError(f"{p}: cannot read text ({exc})")))
                continue
            out["text"].append((str(p), content))
    if texts is not None:
        lines = read_texts(texts)
        out["text"] += [(f"{texts}:{i + 1}", t) for i, t in enumerate(lines)]
    return {m: v for m, v in out.items() if v}


def embed_files(target: str, paths: list[Path], output: Path, texts: Optional[Path] = None,
                factors=(), preset: Optional[str] = None, fp16: bool = False,
                partition_size: int = 100_000, batch_size: int = 64, cache_dir=None,
                fmt: str = "parquet", progress: bool = True, shard_size: int = 2048,
                space_options: Optional[dict] = None,
                as_modality: Optional[str] = None) -> dict:
    """Embed ``paths`` (and ``texts``) with ``target``; write partitions under ``output``.
    Returns the run report (partitions written or reused, files skipped with reasons).

    ``space_options`` go to every ``spaces.get`` (device, precision, checkpoint, …);
    ``as_modality`` makes every file in ``paths`` of that modality (depth, thermal, imu, …)
    instead of telling it by extension."""
    import numpy as np

    from freebind.errors import UsageError
    from freebind.store import EmbeddingStore

    if partition_size < 1:
        raise UsageError("--partition-size must be at least 1")
    if as_modality is not None and as_modality not in MODALITY_ORDER:
        raise UsageError(f"--as {as_modality}: unknown modality; use one of "
                         f"{', '.join(MODALITY_ORDER)}")
    items = collect(paths, texts, as_modality)
    if not items:
        raise UsageError("nothing to embed: no files found" if as_modality else
                         "nothing to embed: no audio, image, video or text files found "
                         "(by extension), and no --texts")
    store = EmbeddingStore(cache_dir, shard_size=shard_size)
    tgt = Target(target, store, factors, preset, space_options)
    skipped: list[dict] = []
    plan = []
    k = 0
    for m in MODALITY_ORDER:
        if m not in items:
            continue
        if m not in tgt.modalities:
            skipped += [{"path": s, "reason": f"{tgt.name} has no {m} modality"}
                        for s, _ in items[m]]
            continue
        entries = items[m]
        for start in range(0, len(entries), partition_size):
            part = entries[start:start + partition_size]
            digest = hashlib.sha256("\n".join(s for s, _ in part).encode()).hexdigest()[:16]
            plan.append({"k": k, "modality": m, "items": len(part), "sources": digest,
                         "start": start})
            k += 1
    manifest = {"target": tgt.name, "fingerprint": tgt.fingerprint, "dim": tgt.dim,
                "dtype": "float16" if fp16 else "float32", "metadata": fmt,
                "partitions": [{key: p[key] for key in ("k", "modality", "items", "sources")}
                               for p in plan]}
    mpath = output / "embed.json"
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except ValueError:
            old = None
        if old != manifest:
            raise UsageError(f"{output}: holds embeddings of another run (different target, "
                             f"factors, files or options); choose an empty folder")
    else:
        output.mkdir(parents=True, exist_ok=True)
        if any(output.iterdir()):
            raise UsageError(f"{output}: folder is not empty and has no embed.json; "
                             f"choose an empty folder")
        text = json.dumps(manifest, indent=1)
        atomic_write(mpath, lambda tmp: Path(tmp).write_text(text))

    ext = "parquet" if fmt == "parquet" else "jsonl"
    written = reused = rows_total = 0
    for p in plan:
        m = p["modality"]
        npy = output / f"{m}_emb" / f"{m}_emb_{p['k']}.npy"
        meta = output / "metadata" / f"metadata_{p['k']}.{ext}"
        part = items[m][p["start"]:p["start"] + p["items"]]
        pre_failed = [(i, s, it) for i, (s, it) in enumerate(part) if isinstance(it, Exception)]
        good = [i for i, (s, it) in enumerate(part) if not isinstance(it, Exception)]
        skip_file = output / "skipped" / f"skipped_{p['k']}.jsonl"
        if npy.is_file() and meta.is_file() and skip_file.is_file():
            reused += 1
            rows_total += int(np.load(npy, mmap_mode="r").shape[0])
            skipped += [json.loads(line) for line in skip_file.read_text().splitlines()
                        if line.strip()]
            continue
        arr, kept, fails = tgt.embed(m, [part[i][1] for i in good], batch_size, progress)
        fails = [{"path": part[good[f.index]][0], "reason": f.reason} for f in fails]
        skipped += fails
        rows = [{"path": part[good[i]][0], "modality": m, "row": r}
                for r, i in enumerate(kept.tolist())]
        arr = np.ascontiguousarray(arr, dtype=np.float16 if fp16 else np.float32)
        _write_metadata(meta, rows, fmt)
        pre = [{"path": s, "reason": _reason(str(exc), s)} for _, s, exc in pre_failed]
        skip_text = "".join(json.dumps(x) + "\n" for x in pre + fails)
        atomic_write(skip_file, lambda tmp: Path(tmp).write_text(skip_text, encoding="utf-8"))
        _write_npy(npy, arr)  # last: its presence marks the partition complete
        written += 1
        rows_total += len(rows)
    return {"target": tgt.name, "output": str(output), "dim": tgt.dim,
            "dtype": manifest["dtype"], "partitions": len(plan), "written": written,
            "reused": reused, "rows": rows_total, "skipped": skipped,
            "counts": {m: len(v) for m, v in items.items()}}


def _reason(msg: str, source: str) -> str:
    prefix = f"{source}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def embed(
    target: str = typer.Argument(..., help="A space reference (mini:bind, IB, …) or a fused "
                                           "bundle (.safetensors)."),
    paths: List[Path] = typer.Argument(None, help="Files or folders; modality by extension "
                                                  "(audio: wav flac mp3 ogg; image: png jpg "
                                                  "jpeg webp bmp; video: mp4 avi mov mkv "
                                                  "webm; text: .txt, one text per file) "
                                                  "unless --as names it."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder."),
    texts: Optional[Path] = typer.Option(None, "--texts", help="Text file, one text per line."),
    as_modality: Optional[str] = typer.Option(None, "--as", metavar="MODALITY",
                                              help="Every file given (or in a folder given) "
                                                   "is of this modality: depth, thermal, imu, "
                                                   "video, audio, image or text (depth/thermal "
                                                   "PNGs and .npy files cannot be told apart "
                                                   "by extension)."),
    factor: List[str] = typer.Option([], "--factor", help="Factor override for a bundle "
                                                         "(a=0.8, b2.t=0.5, b2=off); "
                                                         "repeatable."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A preset stored in the "
                                                                "bundle (versatile, …)."),
    fp16: bool = typer.Option(False, "--fp16", help="Write float16 embeddings."),
    partition_size: int = typer.Option(100_000, "--partition-size",
                                       help="Rows per output partition."),
    batch_size: int = typer.Option(64, "--batch-size", help="Encoder batch size."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir",
                                             help="Embedding cache (default "
                                                  "$FREEBIND_HOME/cache)."),
    shard_size: int = typer.Option(2048, "--shard-size",
                                   help="Items per cache shard: the most a killed run "
                                        "recomputes."),
    metadata_format: str = typer.Option("parquet", "--metadata-format",
                                        help="parquet or jsonl."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any file was skipped."),
    as_json: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    device: Optional[str] = device_option(),
    precision: Optional[str] = precision_option(),
    space_option: List[str] = space_option_option(),
) -> None:
    """Embed files with a space or a fused bundle into .npy partitions plus metadata.

    Re-running the same command resumes: finished partitions are kept, cached embeddings
    reused. Unreadable files are reported and skipped (--strict: exit 1)."""
    from freebind.errors import UsageError
    from freebind.optional import require

    options = parse_space_options(device, precision, space_option)
    fmt = metadata_format.lower()
    if fmt not in ("parquet", "jsonl"):
        raise UsageError(f"--metadata-format {metadata_format!r}: use parquet or jsonl")
    if fmt == "parquet":
        require("pyarrow", "parquet metadata", alternative="or use --metadata-format jsonl")
    report = embed_files(target, list(paths or []), output, texts=texts, factors=factor,
                         preset=preset, fp16=fp16, partition_size=partition_size,
                         batch_size=batch_size, cache_dir=cache_dir, fmt=fmt,
                         progress=not (quiet or as_json), shard_size=shard_size,
                         space_options=options,
                         as_modality=as_modality.lower() if as_modality else None)
    if as_json:
        print_json(report)
    else:
        out = console()
        for s in report["skipped"]:  # plain lines: one per file, never wrapped
            typer.echo(f"skipped {s['path']}: {s['reason']}", err=True)
        from rich.table import Table

        table = Table(title=f"{report['target']} → {report['output']}")
        for col in ("modality", "files", "rows written", "partitions"):
            table.add_column(col, justify="right" if col != "modality" else "left")
        manifest = json.loads((output / "embed.json").read_text())
        per_mod: dict[str, list] = {}
        for p in manifest["partitions"]:
            per_mod.setdefault(p["modality"], []).append(p)
        for m, n in report["counts"].items():
            parts = per_mod.get(m, [])
            table.add_row(m, str(n), str(_rows(output, m, parts)), str(len(parts)))
        out.print(table)
        out.print(f"{report['written']} partition(s) written, {report['reused']} kept from an "
                  f"earlier run; {len(report['skipped'])} file(s) skipped; "
                  f"{report['dim']}-d {report['dtype']}")
    if strict and report["skipped"]:
        raise typer.Exit(code=1)


def _rows(output: Path, modality: str, parts: list) -> int:
    import numpy as np

    total = 0
    for p in parts:
        f = output / f"{modality}_emb" / f"{modality}_emb_{p['k']}.npy"
        if f.is_file():
            total += int(np.load(f, mmap_mode="r").shape[0])
    return total


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
