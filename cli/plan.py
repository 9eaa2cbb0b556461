"""``freebind plan EXPR``: the bond tree and the projector jobs an expression compiles to."""

from __future__ import annotations

import typer

from freebind_cli.common import console, print_json, print_table


def plan(
    expression: str = typer.Argument(..., help='Space expression, e.g. "IB + d(InternVL) + '
                                               'c(CLAP_g, CLAP_m, a=0.8, t=0.5)".'),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Parse and compile a space expression; show its bonds and training jobs."""
    from freebind.algebra import plan as make_plan

    p = make_plan(expression)
    if as_json:
        print_json(p.to_dict())
        return
    from rich.table import Table
    from rich.tree import Tree

    out = console()
    tree = Tree(f"[bold]{p.expression}[/]  ({p.dim}-d: {', '.join(p.modalities)})")
    _tree(tree, p.graph)
    out.print(tree)
    table = Table(title=f"{len(p.jobs)} projector job(s), in dependency order")
    for col in ("job", "bond", "source → target", "dims", "modalities", "data modes",
                "depends on"):
        table.add_column(col)
    for j in p.jobs:
        table.add_row(j.id, f"{j.bond} {j.kind}", f"{j.source} → {j.target}",
                      f"{j.source_dim}→{j.target_dim}", ",".join(j.modalities),
                      f"{len(j.data_modes)}: {' '.join(j.data_modes)}",
                      ",".join(j.depends_on) or "-")
    print_table(out, table)


def _tree(tree, node) -> None:
    if node["op"] == "space":
        return
    base = node["base"]
    tree.add(f"base {base['text']} ({base['dim']}-d: {', '.join(base['modalities'])})")
    for bond in node["bonds"]:
        kind = "combination" if bond["kind"] == "c" else "displacement"
        factors = ", ".join(f"{m}={v}" for m, v in bond["factors"].items())
        if bond.get("route") == "learned":
            factors += " (the router's prior: route=learned, per-item weights)"
        branch = tree.add(f"{bond['id']} {kind} → {bond['dim']}-d  factors: {factors}  "
                          f"jobs: {', '.join(bond['jobs'])}")
        for expert, w in zip(bond["experts"], bond["weights"]):
            weight = f" (w={w:g})" if len(bond["experts"]) > 1 else ""
            sub = branch.add(f"expert {expert['text']}{weight} ({expert['dim']}-d: "
                             f"{', '.join(expert['modalities'])})")
            _tree(sub, expert)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
