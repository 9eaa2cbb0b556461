"""``freebind convert DIR --variant NAME -o OUT.safetensors``: the FreeBind authors' released
projectors (``<name>_Proj/<mode>/best.pt``) as a freebind bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from freebind_cli.common import console, print_json, print_table


def convert(
    release: Path = typer.Argument(..., help="The authors' checkpoints folder (holding "
                                   "IB_PP_G_Proj/, InternVL_IB_Proj/, …)."),
    variant: str = typer.Option(..., "--variant", "-v",
                                help="imagebind++, internvl_ib or internvl_ib++."),
    output: Path = typer.Option(..., "--output", "-o", help="The bundle to write "
                                "(.safetensors)."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the check against a "
                                   "re-implementation of the authors' computation."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Convert released FreeBind projectors into a bundle with the paper's presets."""
    from freebind.share.authors import convert as run, variant as get_variant

    var = get_variant(variant)
    out = console(stderr=True)
    with out.status(f"converting {var.name} ({var.expression})", spinner="dots") as status:
        summary = run(release, var.name, output, verify=not no_verify,
                      progress=lambda job: status.update(f"converted {job}"))
    if as_json:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"{summary['expression']}  →  {summary['output']}")
    for col in ("job", "bond", "source → target", "release folder", "dims", "projectors",
                "hidden"):
        table.add_column(col)
    for r in summary["jobs"]:
        table.add_row(r["job"], f"{r['bond']} {r['kind']}", f"{r['source']} → {r['target']}",
                      r["folder"], r["dims"], str(r["projectors"]), str(r["hidden"]))
    con = console()
    print_table(con, table)
    con.print(f"presets: {', '.join(summary['presets'])}")
    if summary["verified_max_abs_diff"] is not None:
        con.print(f"matches the authors' computation: max |Δ| = "
                  f"{summary['verified_max_abs_diff']:.2e}")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
