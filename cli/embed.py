"""``freebind embed TARGET PATH... -o OUT``: argument parsing and printing over
:func:`freebind.run.partitions.embed` (the layout, resume and skipping rules are described there
and in docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand

from freebind_cli.common import console, print_command, print_json, print_table
from freebind_cli.engines import EngineFlags, print_workers
from freebind_cli.options import (
    SpaceFlags, batch_size_option, cache_dir_option, factor_option, json_option,
    preset_option, quiet_option, with_flag_groups,
)

TARGET_AND_PATHS_HELP = (
    "TARGET: a space reference (mini:bind, IB, …) or a fused bundle (.safetensors, "
    ".safetensors@preset); default: the last build when it is in this folder, else the only "
    "bundle here. PATH: files or folders; modality by extension (audio: wav flac mp3 ogg; "
    "image: png jpg jpeg webp bmp; video: mp4 avi mov mkv webm; text: .txt, one text per "
    "line, as --texts and build's text pools) unless --as names it; files of other "
    "extensions are counted in the summary, not embedded; webdataset tar shards "
    "(shards/{000000..000099}.tar), tables (.parquet .csv .tsv .jsonl) and datasets folders "
    "are read in place.")
AS_MODALITY_HELP = (
    "Every file given (or in a folder given) is of this modality: depth, thermal, imu, "
    "video, audio, image or text (depth/thermal PNGs and .npy files cannot be told apart by "
    "extension).")


TO_HELP = (
    "Write into a vector database instead of an output folder: lancedb:PATH[#TABLE], "
    "qdrant:PATH#COLLECTION, qdrant+http://HOST:PORT#COLLECTION, milvus:PATH.db#COLLECTION, "
    "milvus+http://HOST:PORT#COLLECTION. Rows are upserted by content key (a re-run adds "
    "only what is missing); a bundle's presets become extra vector columns.")


@with_flag_groups
def embed(
    args: List[str] = typer.Argument(None, metavar="[TARGET] PATH...",
                                     help=TARGET_AND_PATHS_HELP),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder."),
    to: Optional[str] = typer.Option(None, "--to", metavar="URI", help=TO_HELP),
    texts: Optional[Path] = typer.Option(None, "--texts", help="Text file, one text per line "
                                                                "(or a table: --text-column)."),
    text_column: Optional[str] = typer.Option(
        None, "--text-column", help="Table column (or tar .json field) of the texts."),
    audio_column: Optional[str] = typer.Option(
        None, "--audio-column", help="Table column of audio paths or bytes."),
    image_column: Optional[str] = typer.Option(
        None, "--image-column", help="Table column of image paths or bytes."),
    as_modality: Optional[str] = typer.Option(None, "--as", metavar="MODALITY",
                                              help=AS_MODALITY_HELP),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="A brace pattern's missing shards are listed "
                                            "as skipped, not refused."),
    factor: List[str] = factor_option("Factor override for a bundle (a=0.8, b2.t=0.5, "
                                      "b2=off); repeatable.", short=False),
    preset: Optional[str] = preset_option("A preset stored in the bundle (versatile, …).",
                                          short=False),
    fp16: bool = typer.Option(False, "--fp16", help="Write float16 embeddings."),
    partition_size: int = typer.Option(100_000, "--partition-size",
                                       help="Rows per output partition."),
    batch_size: int = batch_size_option(help="Encoder batch size."),
    cache_dir: Optional[Path] = cache_dir_option(),
    shard_size: int = typer.Option(2048, "--shard-size", help="Items per cache shard: the "
                                   "most a killed run recomputes."),
    metadata_format: str = typer.Option("parquet", "--metadata-format",
                                        help="parquet or jsonl."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 if any file was skipped."),
    as_json: bool = json_option("the run report"),
    quiet: bool = quiet_option(),
    space_flags: SpaceFlags = ...,
    engine_flags: EngineFlags = ...,
) -> None:
    """Embed files with a space or a fused bundle into .npy partitions plus metadata.

    Re-running the same command resumes: finished partitions are kept, cached embeddings
    reused. Unreadable files are reported and skipped (--strict: exit 1)."""
    from freebind.run.partitions import embed as run_embed
    from freebind.util.errors import EmbedSkipped, UsageError

    if (output is None) == (to is None):
        raise UsageError("give an output folder (-o OUT) or a vector database (--to URI)")
    if to is not None:
        return _embed_to(args, to, texts, factor, preset, batch_size, cache_dir, shard_size,
                         space_flags, as_modality, quiet, as_json, strict,
                         _columns(text_column, audio_column, image_column))
    options = space_flags.parse()
    target, paths = _target_and_paths(args)
    fmt = _metadata_format(metadata_format)
    if partition_size < 1:
        raise UsageError("--partition-size must be at least 1")
    engine_kw = engine_flags.kwargs()
    try:
        report = run_embed(target, paths, texts, output, factors=factor,
                           preset=preset, fp16=fp16, partition_size=partition_size,
                           batch_size=batch_size, cache_dir=cache_dir, metadata=fmt,
                           progress=not (quiet or as_json), shard_size=shard_size,
                           space_options=options, strict=strict,
                           as_modality=as_modality.lower() if as_modality else None,
                           **_columns(text_column, audio_column, image_column),
                           **({"allow_missing": True} if allow_missing else {}),
                           **engine_kw)
        failed = False
    except EmbedSkipped as exc:
        report, failed = exc.report, True
    if as_json:
        print_json(report.to_dict())
    else:
        print_report(report)
    if failed:
        raise typer.Exit(code=1)


def _embed_to(args, to, texts, factor, preset, batch_size, cache_dir, shard_size, space_flags,
              as_modality, quiet, as_json, strict, columns) -> None:
    """``embed --to URI``: :func:`freebind.run.partitions.embed` with ``to``, then its
    report."""
    from freebind.run.partitions import embed as run_embed
    from freebind.run.sinks import require

    require(to)   # a bad URI or a missing extra, before the target loads
    options = space_flags.parse()
    target, paths = _target_and_paths(args)
    report = run_embed(target, paths, texts, to=to, factors=factor, preset=preset,
                       batch_size=batch_size, cache_dir=cache_dir, shard_size=shard_size,
                       space_options=options, progress=not (quiet or as_json),
                       as_modality=as_modality.lower() if as_modality else None, **columns)
    if as_json:
        print_json(report.to_dict())
    else:
        for s in report.skipped:
            typer.echo(f"skipped {s['path']}: {s['reason']}", err=True)
        print_command(console(), f"{report.written} row(s) written to {report.uri}, "
                                 f"{report.present} already there; {len(report.skipped)} "
                                 f"input(s) skipped; {report.rows} row(s) in the collection; "
                                 f"vectors: {', '.join(report.vectors)} ({report.dim}-d)")
    if strict and report.skipped:
        raise typer.Exit(code=1)


def _target_and_paths(args: Optional[List[str]]) -> tuple[str, list[Path]]:
    """The target (said on stderr where it was not given) and the paths of the arguments."""
    from freebind.run.implicit import split_target

    found, words = split_target(args)
    if found.why != "given":
        console(stderr=True).print(found.describe("embedding with"), soft_wrap=True,
                                   highlight=False)
    return found.value, [Path(p) for p in words]


def _metadata_format(value: str) -> str:
    """``--metadata-format``: parquet (pyarrow needed) or jsonl."""
    from freebind.util.errors import UsageError

    fmt = value.lower()
    if fmt not in ("parquet", "jsonl"):
        raise UsageError(f"--metadata-format {value!r}: use parquet or jsonl")
    if fmt == "parquet":
        from freebind.util.optional import require

        require("pyarrow", "parquet metadata", alternative="or use --metadata-format jsonl")
    return fmt


def _columns(text, audio, image) -> dict:
    """``{"columns": {modality: column}}`` when any is given (the library call's keyword)."""
    cols = {m: c for m, c in (("text", text), ("audio", audio), ("image", image)) if c}
    return {"columns": cols} if cols else {}


def print_report(report) -> None:
    """Skipped files (one plain line each, never wrapped), then the summary table."""
    from rich.table import Table

    out = console()
    for s in report.skipped:
        typer.echo(f"skipped {s['path']}: {s['reason']}", err=True)
    table = Table(title=f"{report.target} → {report.output}")
    for col in ("modality", "files", "rows written", "partitions"):
        table.add_column(col, justify="right" if col != "modality" else "left")
    for m, st in report.modalities.items():
        table.add_row(m, str(st["files"]), str(st["rows"]), str(st["partitions"]))
    print_table(out, table)
    print_workers(report.engine, out)
    ignored = ""
    if report.ignored:
        ignored = (f"; {report.ignored} file(s) of an unknown extension left out (e.g. "
                   f"{report.ignored_examples[0]})")
    print_command(out, f"{report.written} partition(s) written, {report.reused} kept from an "
                       f"earlier run; {len(report.skipped)} input(s) skipped{ignored}; "
                       f"{report.dim}-d {report.dtype}")
    if report.slice:
        i, n = report.slice
        out.print(f"slice {i}/{n} of the partitions; run every slice, then once without "
                  f"--shard for the whole report")


class _EmbedCommand(TyperCommand):
    """The usage line reads ``[OPTIONS] [TARGET] PATH...`` (click would write the
    optional variadic argument as ``[[TARGET] PATH...]...``)."""

    def collect_usage_pieces(self, ctx):
        return [self.options_metavar, "[TARGET] PATH..."]


def register(app: typer.Typer) -> None:
    app.command("embed", cls=_EmbedCommand)(embed)
