"""``freebind embed TARGET PATH... -o OUT``: argument parsing and printing over
:func:`freebind.run.partitions.embed` (the layout, resume and skipping rules are described there
and in docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand

from freebind_cli.common import (
    console, device_option, parse_space_options, precision_option, print_json,
    print_command, print_table, space_option_option,
)
from freebind_cli.engines import (
    address_option, cpus_option, engine_kwargs, engine_option, gpus_option, print_workers,
    shard_option, workers_option,
)


def embed(
    args: List[str] = typer.Argument(None, metavar="[TARGET] PATH...",
                                     help="TARGET: a space reference (mini:bind, IB, …) or a "
                                          "fused bundle (.safetensors, .safetensors@preset); "
                                          "default: the last build when it is in this "
                                          "folder, else the only bundle here. PATH: files "
                                          "or folders; modality by extension (audio: wav "
                                          "flac mp3 ogg; image: png jpg jpeg webp bmp; "
                                          "video: mp4 avi mov mkv webm; text: .txt, one text "
                                          "per line, as --texts and build's text pools) "
                                          "unless --as names it; files of other extensions "
                                          "are counted in the summary, not embedded; "
                                          "webdataset tar shards "
                                          "(shards/{000000..000099}.tar), tables (.parquet "
                                          ".csv .tsv .jsonl) and datasets folders are read "
                                          "in place."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder."),
    texts: Optional[Path] = typer.Option(None, "--texts", help="Text file, one text per line "
                                                                "(or a table: --text-column)."),
    text_column: Optional[str] = typer.Option(None, "--text-column",
                                              help="Table column (or tar .json field) of the "
                                                   "texts."),
    audio_column: Optional[str] = typer.Option(None, "--audio-column",
                                               help="Table column of audio paths or bytes."),
    image_column: Optional[str] = typer.Option(None, "--image-column",
                                               help="Table column of image paths or bytes."),
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
    engine: str = engine_option(),
    workers: Optional[int] = workers_option(),
    cpus_per_worker: Optional[float] = cpus_option(),
    gpus_per_worker: Optional[float] = gpus_option(),
    ray_address: Optional[str] = address_option(),
    shard: Optional[str] = shard_option(),
) -> None:
    """Embed files with a space or a fused bundle into .npy partitions plus metadata.

    Re-running the same command resumes: finished partitions are kept, cached embeddings
    reused. Unreadable files are reported and skipped (--strict: exit 1)."""
    from freebind.run.partitions import embed as run_embed
    from freebind.util.errors import EmbedSkipped, UsageError

    from freebind.run.implicit import split_target

    options = parse_space_options(device, precision, space_option)
    found, words = split_target(args)
    paths = [Path(p) for p in words]
    if found.why != "given":
        console(stderr=True).print(found.describe("embedding with"), soft_wrap=True,
                                   highlight=False)
    target = found.value
    fmt = metadata_format.lower()
    if fmt not in ("parquet", "jsonl"):
        raise UsageError(f"--metadata-format {metadata_format!r}: use parquet or jsonl")
    if fmt == "parquet":
        from freebind.util.optional import require

        require("pyarrow", "parquet metadata", alternative="or use --metadata-format jsonl")
    if partition_size < 1:
        raise UsageError("--partition-size must be at least 1")
    engine_kw = engine_kwargs(engine, workers, cpus_per_worker, gpus_per_worker, ray_address,
                              shard)
    try:
        report = run_embed(target, list(paths or []), texts, output, factors=factor,
                           preset=preset, fp16=fp16, partition_size=partition_size,
                           batch_size=batch_size, cache_dir=cache_dir, metadata=fmt,
                           progress=not (quiet or as_json), shard_size=shard_size,
                           space_options=options, strict=strict,
                           as_modality=as_modality.lower() if as_modality else None,
                           **_columns(text_column, audio_column, image_column),
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
