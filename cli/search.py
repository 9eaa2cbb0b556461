"""``freebind search INDEX (--text "…" | --audio FILE | --image FILE | --texts FILE)``: the
indexed items closest to one query (or a file of text queries), as tables or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import console, print_json, print_table
from freebind_cli.options import (
    SpaceFlags, factor_option, json_option, preset_option, with_flag_groups,
)


@with_flag_groups
def search_command(
    index_dir: str = typer.Argument(..., metavar="INDEX", help="An index folder (`freebind "
                                    "index`), or a vector database URI it wrote with --to "
                                    "(lancedb:…, qdrant:…, milvus:…)."),
    text: Optional[str] = typer.Option(None, "--text", help="A text query."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="An audio file as the query."),
    image: Optional[Path] = typer.Option(None, "--image", help="An image file as the query."),
    point: Optional[Path] = typer.Option(None, "--point", help="A point cloud or mesh (.ply, "
                                         ".pcd, .npy, .obj, …) as the query."),
    texts: Optional[Path] = typer.Option(None, "--texts", help="A file of text queries, one "
                                         "per line (results per line)."),
    k: int = typer.Option(10, "-k", "--top", min=1, help="Results per query."),
    modality: Optional[str] = typer.Option(None, "--modality", "-m", help="Only items of this "
                                           "modality (default: every one indexed)."),
    factor: List[str] = factor_option("Factor override (a=0.8, b2.t=0.5, b2=off) for the "
                                      "query and the items alike; repeatable."),
    preset: Optional[str] = preset_option("A preset of the bundle (versatile, at-expertise, "
                                          "…)."),
    exact: bool = typer.Option(False, "--exact", help="Exact search even where the index "
                               "has an HNSW graph."),
    as_json: bool = json_option("the hits"),
    space_flags: SpaceFlags = ...,
) -> None:
    """Cross-modal top-k: the indexed items closest to a text, an audio clip or an image,
    under the index's factors or the ones given."""
    from freebind.util.errors import UsageError
    from freebind.data.media import read_texts
    from freebind.search import Index

    given = [(n, v) for n, v in (("text", text), ("audio", audio), ("image", image),
                                 ("point", point), ("texts", texts)) if v is not None]
    if len(given) != 1:
        raise UsageError("give exactly one query: --text, --audio, --image, --point or "
                         "--texts")
    kind, value = given[0]
    if kind in ("audio", "image", "point") and not Path(value).is_file():
        raise UsageError(f"--{kind} {value}: no such file")
    options = space_flags.parse()
    index = Index.open(index_dir, space_options=options)
    if kind == "texts":
        queries, qmod = read_texts(value), "text"
    else:
        queries, qmod = [str(value)], "text" if kind == "text" else kind
    results = index.search_many(queries, modality=modality, k=k, query_modality=qmod,
                                factors=factor or None, preset=preset, exact=exact)
    if as_json:
        rows = [{"query": q, "hits": [h.to_dict() for h in hits]}
                for q, hits in zip(queries, results)]
        print_json(rows if kind == "texts" else rows[0])
        return
    from rich.table import Table

    out = console()
    for q, hits in zip(queries, results):
        table = Table(title=f"{qmod}: {q}")
        for col in ("rank", "score", "modality", "item"):
            table.add_column(col, justify="right" if col in ("rank", "score") else "left")
        for h in hits:
            table.add_row(str(h.rank), f"{h.score:.4f}", h.modality,
                          h.text if h.text is not None else h.path)
        print_table(out, table)


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
