"""``freebind download SPACE...``: fetch real spaces' weights ahead of time (online machines)."""

from __future__ import annotations

import typer

from freebind_cli.common import console, print_json, print_table


def download(
    spaces: list[str] = typer.Argument(..., help="Spaces to prefetch: IB, CLAP_g, CLAP_m, "
                                       "InternVL, CLIP-L14, open_clip:ARCH/TAG, clap:NAME."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    any_library: bool = typer.Option(False, "--without-libraries",
                                     help="Download even where a space's library (its "
                                          "extra) is not installed here, e.g. on a login "
                                          "node that only fetches."),
) -> None:
    """Download weights (and tokenizer files) into FREEBIND_HOME; report where each is.

    First checks that each space's library is installed (naming the extra to install), so
    that no gigabytes are fetched for a space that cannot run here."""
    from freebind.util.errors import FreebindError
    from freebind.run.preflight import raise_if, space_problems
    from freebind.spaces import prefetch

    if not any_library:
        raise_if("download " + ", ".join(spaces),
                 [p for p in space_problems(spaces) if p.stage == "library"],
                 hint="install them first, or pass --without-libraries to download the "
                      "weights anyway")

    rows, failed = [], 0
    for ref in spaces:
        try:
            files = prefetch(ref)
            rows.append({"space": ref, "ok": True, "files": [str(f) for f in files]})
        except FreebindError as exc:
            failed += 1
            rows.append({"space": ref, "ok": False, "error": str(exc)})
    if as_json:
        print_json(rows)
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="weights")
        for col in ("space", "status", "where"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(escape(r["space"]), "ready" if r["ok"] else "failed",
                          escape("\n".join(r["files"]) if r["ok"] else r["error"]))
        print_table(console(), table)
    if failed:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.command("download")(download)
