"""``freebind info BUNDLE``: what a bundle holds, read from its header only."""

from __future__ import annotations

from typing import Optional

import typer

from freebind_cli.common import console, print_json, print_table


def info(
    bundle: Optional[str] = typer.Argument(None, help="A bundle (.safetensors) written by "
                                           "freebind (bundle@preset accepted); default: the "
                                           "last build when it is in this folder, else the "
                                           "only bundle here."),
    as_json: bool = typer.Option(False, "--json", help="Print the metadata as JSON."),
) -> None:
    """Show a bundle's expression, spaces, jobs, presets, training and evaluation."""
    from freebind.bundle import read_metadata
    from freebind.target import split_ref

    if bundle is None:
        from freebind.defaults import default_target

        found = default_target()
        console(stderr=True).print(found.describe("showing"), soft_wrap=True, highlight=False)
        bundle = found.value
    meta = read_metadata(split_ref(bundle)[0])
    if as_json:
        print_json(meta)
        return
    from rich.table import Table

    out = console()
    plan = meta.get("plan", {})
    graph = plan.get("graph", {})
    out.print(f"[bold]{meta.get('expression', '?')}[/]")
    out.print(f"  {graph.get('dim', '?')}-d, modalities: {', '.join(graph.get('modalities', []))}"
              f"; format v{meta.get('format_version')}, written by freebind "
              f"{meta.get('freebind_version', '?')}")
    spaces = Table(title="spaces")
    for col in ("space", "family", "dim", "modalities", "fingerprint"):
        spaces.add_column(col)
    for ref, s in sorted(meta.get("spaces", plan.get("spaces", {})).items()):
        spaces.add_row(ref, s.get("family", ""), str(s.get("dim", "")),
                       ",".join(s.get("modalities", [])), str(s.get("fingerprint", "-")))
    print_table(out, spaces)
    jobs = Table(title="projector groups")
    for col in ("job", "bond", "source → target", "dims", "projectors", "hidden"):
        jobs.add_column(col)
    for j in plan.get("jobs", []):
        jobs.add_row(j["id"], f"{j['bond']} {j['kind']}", f"{j['source']} → {j['target']}",
                     f"{j['source_dim']}→{j['target_dim']}", str(len(j["data_modes"])),
                     str(j["hyper"].get("hidden")))
    print_table(out, jobs)
    routed = [b for b in _bonds(graph) if b.get("route") == "learned"]
    if routed:
        routers = Table(title="learned routers (route=learned; route=off for fixed factors)")
        for col in ("bond", "modality", "fixed σ", "routed σ mean ± sd [min, max]",
                    "expert weights (mean)", "val loss"):
            routers.add_column(col)
        for b in routed:
            summary = meta.get("training", {}).get(f"router.{b['id']}", {})
            for m, st in summary.get("weights", {}).items():
                routers.add_row(b["id"], m, f"{b['factors'].get(m, '')}",
                                f"{st['sigma_mean']:.2f} ± {st['sigma_std']:.2f} "
                                f"[{st['sigma_min']:.2f}, {st['sigma_max']:.2f}]",
                                " ".join(f"{w:.2f}" for w in st.get("w_mean", [])) or "-",
                                f"{summary.get('initial_val_loss', 0):.3f} → "
                                f"{summary.get('final_val_loss', 0):.3f}")
        print_table(out, routers)
    presets = Table(title="presets")
    presets.add_column("name")
    presets.add_column("factors")
    for name, specs in meta.get("presets", {}).items():
        presets.add_row(name, " ".join(specs) or "(the expression's factors)")
    print_table(out, presets)
    for key in ("training", "data", "evaluation"):
        if meta.get(key):
            out.print(f"[bold]{key}[/]: ", meta[key])


def _bonds(graph: dict) -> list[dict]:
    found = []
    if graph.get("op") == "chain":
        found += _bonds(graph["base"])
        for bond in graph["bonds"]:
            found.append(bond)
            for expert in bond["experts"]:
                found += _bonds(expert)
    return found


def register(app: typer.Typer) -> None:
    app.command("info")(info)
