"""``freebind spaces``: every registered space and whether it can be used here."""

from __future__ import annotations

import typer

from freebind_cli.common import console, print_json, print_table


def spaces(
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List the registered spaces: family, modalities, dim, and availability here."""
    from freebind import spaces as registry

    rows = []
    for info in registry.list():
        try:
            ok, detail = info.check()
        except Exception as exc:  # a broken checker must not hide the other spaces
            ok, detail = False, f"check failed: {exc}"
        rows.append({"name": info.name, "aliases": list(info.aliases), "family": info.family,
                     "modalities": list(info.modalities), "dim": info.dim,
                     "available": ok, "detail": detail, "description": info.description})
    if as_json:
        print_json(rows)
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="registered spaces")
    for col in ("name", "family", "modalities", "dim", "available", "detail"):
        table.add_column(col)
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        table.add_row(escape(name), r["family"], ",".join(r["modalities"]), str(r["dim"]),
                      "yes" if r["available"] else "no", escape(r["detail"]))
    print_table(console(), table)


def register(app: typer.Typer) -> None:
    app.command("spaces")(spaces)
