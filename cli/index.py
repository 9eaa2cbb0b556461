"""``freebind index EMBED_DIR... -o INDEX``: a search index over ``freebind embed`` outputs.

Re-running with an existing INDEX adds the partitions it does not hold yet (incremental)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import console, print_json, print_table
from freebind_cli.options import (
    SpaceFlags, batch_size_option, cache_dir_option, factor_option, json_option,
    preset_option, quiet_option, with_flag_groups,
)


@with_flag_groups
def index_command(
    embed_dirs: List[Path] = typer.Argument(..., help="Folders written by `freebind embed`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Index folder "
                                          "(created, or extended with partitions it lacks)."),
    to: Optional[str] = typer.Option(None, "--to", metavar="URI", help="Index into a vector "
                                     "database instead (lancedb:PATH[#TABLE], "
                                     "qdrant:PATH#COLLECTION, qdrant+http://HOST:PORT#…, "
                                     "milvus:PATH.db#COLLECTION, milvus+http://…): searchable "
                                     "under any factors by `freebind search URI`; prints the "
                                     "recall@10 against exact search."),
    recall_queries: int = typer.Option(20, "--recall-queries", min=0, help="With --to: items "
                                       "of each modality used as queries to measure "
                                       "recall@10 (0: not measured)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="The bundle (or space) "
                                         "the folders were embedded with (default: the bundle "
                                         "embed.json records, found by its content if "
                                         "moved)."),
    factor: List[str] = factor_option("The index's default factor overrides (queries may "
                                      "give others); repeatable."),
    preset: Optional[str] = preset_option("The index's default preset."),
    exact_limit: Optional[int] = typer.Option(None, "--exact-limit", min=1,
                                              help="Rows per modality searched exactly; "
                                              "beyond, an HNSW graph (default 1.25e8 / "
                                              "dim: 122070 at 1024-d)."),
    cache: Optional[Path] = cache_dir_option("Embedding cache that `embed` filled (default "
                                             "$FREEBIND_HOME/cache)."),
    batch_size: int = batch_size_option(),
    captions: Optional[Path] = typer.Option(None, "--captions", help="A CSV/TSV of captions "
                                            "to show on the search page (a file column and "
                                            "a caption column; matched by file stem). "
                                            "Default: a sidecar .txt with the file's stem."),
    caption_column: Optional[str] = typer.Option(None, "--caption-column", help="The "
                                                 "caption column of --captions (default: "
                                                 "caption, caption_1, text or category)."),
    thumbnails: bool = typer.Option(True, "--thumbnails/--no-thumbnails", help="Draw a "
                                    "waveform thumbnail of every audio item for the page."),
    as_json: bool = json_option("the report"),
    quiet: bool = quiet_option(),
    space_flags: SpaceFlags = ...,
) -> None:
    """Index embeddings for `freebind search` and `freebind serve`.

    For a bundle the index keeps what the fusion needs to rank under any factors or preset
    without re-encoding (the base spaces' embeddings come from the embedding cache)."""
    from freebind.search.indexing import build_index
    from freebind.util.errors import UsageError

    if (output is None) == (to is None):
        raise UsageError("give an index folder (-o INDEX) or a vector database (--to URI)")
    options = space_flags.parse()
    if to is not None:
        return _index_to(embed_dirs, to, target, factor, preset, cache, batch_size, options,
                         quiet, as_json, recall_queries)
    report = build_index(embed_dirs, output, target=target, factors=factor, preset=preset,
                         exact_limit=exact_limit, store=cache, batch_size=batch_size,
                         progress=not (quiet or as_json), space_options=options,
                         captions=captions, caption_column=caption_column,
                         thumbnails=thumbnails)
    if as_json:
        print_json(report)
        return
    for s in report["skipped"]:
        typer.echo(f"skipped {s['path']}: {s['reason']}", err=True)
    from rich.table import Table

    table = Table(title=f"{report['expression']} → {report['output']}")
    for col in ("modality", "items", "search"):
        table.add_column(col, justify="right" if col == "items" else "left")
    for m, row in report["modalities"].items():
        table.add_row(m, str(row["rows"]), row["search"])
    out = console()
    print_table(out, table)
    out.print(f"{report['partitions']} new partition(s), {report['added']} item(s) added, "
              f"{len(report['skipped'])} skipped; {report['items']} in all")


def _index_to(embed_dirs, to, target, factor, preset, cache, batch_size, options, quiet,
              as_json, recall_queries) -> None:
    """``index --to URI``: :func:`freebind.search.databases.index_to`, then its report."""
    from freebind.search.databases import index_to

    report = index_to(embed_dirs, to, target=target, factors=factor, preset=preset,
                      store=cache, batch_size=batch_size, progress=not (quiet or as_json),
                      space_options=options, recall_queries=recall_queries)
    if as_json:
        print_json(report)
        return
    for s in report["skipped"]:
        typer.echo(f"skipped {s['path']}: {s['reason']}", err=True)
    from rich.table import Table

    out = console()
    table = Table(title=f"{report['expression']} → {report['uri']}: recall@10 against exact "
                        f"local search")
    table.add_column("factors")
    table.add_column("recall@10", justify="right")
    for label, r in report["recall@10"].items():
        table.add_row(label, f"{r:.3f}")
    if report["recall@10"]:
        print_table(out, table)
    mods = ", ".join(f"{m} {n}" for m, n in report["modalities"].items())
    out.print(f"{report['written']} row(s) written, {report['present']} already there; "
              f"{report['rows']} in the collection ({mods})")


def register(app: typer.Typer) -> None:
    app.command("index")(index_command)
