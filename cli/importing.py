"""``freebind import SPACE DIR``: add precomputed embeddings to the store for a space."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from freebind_cli.common import console, print_json, print_skipped, print_table
from freebind_cli.options import cache_dir_option, json_option, quiet_option


def import_(
    space: str = typer.Argument(..., help="The space the rows belong to (CLAP_g, IB, "
                                          "mini:clap, …); nothing is loaded."),
    source: Path = typer.Argument(..., help="A clip-retrieval folder ({audio,image,img,text}"
                                            "_emb/*.npy + metadata/*.parquet), freebind "
                                            "embed's output, or one .npy with --ids/--texts."),
    ids: Optional[Path] = typer.Option(None, "--ids", help="For a .npy: its rows' media "
                                                            "paths, one a line."),
    texts: Optional[Path] = typer.Option(None, "--texts", help="For a .npy: its rows' texts, "
                                                                "one a line."),
    modality: Optional[str] = typer.Option(None, "--modality",
                                           help="For a .npy with --ids: the modality when "
                                                "the extensions do not tell."),
    weights_digest: Optional[str] = typer.Option(None, "--weights-digest",
                                                 help="Declared digest of the weights that "
                                                      "made the rows (part of their identity)."),
    shards: Optional[str] = typer.Option(None, "--shards", metavar="PATTERN",
                                         help="The webdataset shards a clip-retrieval run "
                                              "read (a .tar, a brace pattern or a folder): "
                                              "rows named by key/url are keyed by their "
                                              "sample's content."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="A brace pattern's missing shards are reported, "
                                            "not refused."),
    cache_dir: Optional[Path] = cache_dir_option(),
    as_json: bool = json_option("the report"),
    quiet: bool = quiet_option("bar"),
) -> None:
    """Add embeddings computed elsewhere to the store for SPACE, keyed by content: a build
    naming SPACE then uses them without loading its encoder (its weights need not exist).
    Rows of the wrong dimension or not finite are refused, naming the file."""
    from freebind.run.importer import import_embeddings

    report = import_embeddings(space, source, ids=ids, texts=texts, modality=modality,
                               weights_digest=weights_digest, cache_dir=cache_dir,
                               shards=shards, allow_missing=allow_missing,
                               progress=not (as_json or quiet))
    if as_json:
        print_json(report.to_dict())
        return
    from rich.table import Table

    out = console()
    table = Table(title=f"imported for {report.space}")
    for col in ("modality", "rows", "new in the store"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    for m, n in report.rows.items():
        table.add_row(m, str(n), str(report.written.get(m, 0)))
    print_table(out, table)
    ident = ("the embedding run's own fingerprint" if report.native else
             f"{report.fingerprint}")
    out.print(f"{report.files} file(s) read; identity: {ident}; cache {report.cache_dir}")
    print_skipped(out, report.skipped, "row(s)")


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
