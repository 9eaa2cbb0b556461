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
    from freebind.fusion.bundle import read_metadata
    from freebind.run.targets import split_ref

    if bundle is None:
        from freebind.run.implicit import default_target

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
    for table in (_training(meta), _data(meta), _evaluation(meta), _tuning(meta)):
        if table is not None:
            print_table(out, table)
    out.print("[dim]every field: freebind info --json[/]")


def _training(meta: dict):
    """One row per projector group: tuples, epochs, validation loss (routers: their table)."""
    from rich.table import Table

    rows = {k: v for k, v in (meta.get("training") or {}).items()
            if isinstance(v, dict) and v.get("kind") != "router"}
    if not rows:
        return None
    table = Table(title="training")
    for col in ("job", "tuples (train + val)", "epochs", "final val loss", "modes"):
        table.add_column(col, justify="left" if col in ("job", "modes") else "right")
    for job, t in rows.items():
        loss = t.get("final_val_loss")
        table.add_row(job, f"{t.get('train_tuples', '?')} + {t.get('val_tuples', '?')}",
                      str(t.get("epochs", "?")), f"{loss:.4f}" if isinstance(loss, float)
                      else "-", " ".join(t.get("modes", [])))
    return table


def _data(meta: dict):
    from rich.table import Table

    data = meta.get("data") or {}
    if not data:
        return None
    table = Table(title="pools it was trained on")
    for col in ("modality", "items", "fingerprint"):
        table.add_column(col, justify="right" if col == "items" else "left")
    for m, d in data.items():
        d = d if isinstance(d, dict) else {"items": d}
        table.add_row(m, str(d.get("items", "?")), str(d.get("fingerprint", "-")))
    return table


def _evaluation(meta: dict):
    """Results kept by ``eval --record``: one row per (dataset, setting), metrics in %."""
    from rich.table import Table

    evaluation = meta.get("evaluation") or {}
    if not evaluation:
        return None
    table = Table(title="recorded evaluation (%)")
    for col in ("dataset", "setting", "metrics"):
        table.add_column(col)
    for dataset, settings in evaluation.items():
        for setting, entry in settings.items():
            metrics = entry.get("metrics", {}) if isinstance(entry, dict) else {}
            table.add_row(dataset, setting, "  ".join(
                f"{k} {100 * v:.1f}" for k, v in metrics.items()
                if isinstance(v, (int, float))))
    return table


def _tuning(meta: dict):
    from rich.table import Table

    tuning = meta.get("tuning") or {}
    if not tuning:
        return None
    table = Table(title=f"tuning on {', '.join(tuning.get('suites', []))} (%)")
    for col in ("preset", "factors", "scores"):
        table.add_column(col)
    best = tuning.get("best", {})
    for name, specs in (tuning.get("presets") or {}).items():
        if name.endswith("-versatile"):
            scores = tuning.get("versatile", {})
        else:
            scores = {t: v for t, v in best.items() if name.endswith(_suffix(t))}
        table.add_row(name, " ".join(specs) or "(defaults)",
                      "  ".join(f"{t} {100 * v:.1f}" for t, v in scores.items()))
    return table


def _suffix(task: str) -> str:
    from freebind.evaluate.tuning import task_preset_name

    return task_preset_name("", task)


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
