"""``freebind spaces``: every registered space and whether it can be used here."""

from __future__ import annotations

import typer

from freebind_cli.common import console, print_json, print_table


def spaces(
    refs: list[str] = typer.Argument(None, help="Describe these references (e.g. "
                                     "transformers:ORG/NAME, a plugin's PREFIX:SPEC) instead "
                                     "of the registered spaces; no weights are loaded."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List the registered spaces (or describe REFS): family, modalities, dim, licence, and
    availability here; then the families of prefixed references, plugins included."""
    from freebind import spaces as registry
    from freebind.spaces.licences import licence_of

    rows = []
    # an unknown or unresolvable reference is one error line (FreebindGroup)
    infos = [registry.info(r) for r in refs] if refs else registry.list()
    for info in infos:
        try:
            ok, detail = info.check()
        except Exception as exc:  # a broken checker must not hide the other spaces
            ok, detail = False, f"check failed: {exc}"
        rows.append({"name": info.name, "aliases": list(info.aliases), "family": info.family,
                     "modalities": list(info.modalities), "dim": info.dim,
                     "available": ok, "detail": detail, "description": info.description,
                     "licence": licence_of(info)})
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
    if not refs:
        console().print("families: " + ", ".join(
            escape(f"{p}: ({src})" if src != "built-in" else f"{p}:")
            for p, _, src in registry.prefixes()))


def register(app: typer.Typer) -> None:
    app.command("spaces")(spaces)
