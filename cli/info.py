"""``freebind info BUNDLE``: what a bundle holds, read from its header only."""

from __future__ import annotations

from typing import Optional

import typer

from freebind_cli.common import console, new_table, print_json, print_table


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
    render(meta, console())


def render(meta: dict, out) -> None:
    """The bundle's headline, then one table per part of its metadata that it has."""
    plan = meta.get("plan", {})
    graph = plan.get("graph", {})
    out.print(f"[bold]{meta.get('expression', '?')}[/]")
    out.print(f"  {graph.get('dim', '?')}-d, modalities: {', '.join(graph.get('modalities', []))}"
              f"; format v{meta.get('format_version')}, written by freebind "
              f"{meta.get('freebind_version', '?')}")
    for part in (_spaces, _jobs, _routers, _presets, _training, _data, _evaluation, _tuning,
                 _tuned_data):
        table = part(meta)
        if table is not None:
            print_table(out, table)
    out.print("[dim]every field: freebind info --json[/]")


RIGHT = {"justify": "right"}


def _spaces(meta: dict):
    plan = meta.get("plan", {})
    return new_table("spaces", ("space", "family", "dim", "modalities", "fingerprint"), [
        (ref, s.get("family", ""), str(s.get("dim", "")), ",".join(s.get("modalities", [])),
         str(s.get("fingerprint", "-")))
        for ref, s in sorted(meta.get("spaces", plan.get("spaces", {})).items())])


def _jobs(meta: dict):
    return new_table("projector groups", ("job", "bond", "source → target", "dims",
                                          "projectors", "hidden"), [
        (j["id"], f"{j['bond']} {j['kind']}", f"{j['source']} → {j['target']}",
         f"{j['source_dim']}→{j['target_dim']}", str(len(j["data_modes"])),
         str(j["hyper"].get("hidden")))
        for j in meta.get("plan", {}).get("jobs", [])])


def _routers(meta: dict):
    """The learned routers' σ and expert weights (None when no bond routes)."""
    routed = [b for b in _bonds(meta.get("plan", {}).get("graph", {}))
              if b.get("route") == "learned"]
    if not routed:
        return None
    rows = []
    for b in routed:
        summary = meta.get("training", {}).get(f"router.{b['id']}", {})
        for m, st in summary.get("weights", {}).items():
            rows.append((b["id"], m, f"{b['factors'].get(m, '')}",
                         f"{st['sigma_mean']:.2f} ± {st['sigma_std']:.2f} "
                         f"[{st['sigma_min']:.2f}, {st['sigma_max']:.2f}]",
                         " ".join(f"{w:.2f}" for w in st.get("w_mean", [])) or "-",
                         f"{summary.get('initial_val_loss', 0):.3f} → "
                         f"{summary.get('final_val_loss', 0):.3f}"))
    return new_table("learned routers (route=learned; route=off for fixed factors)",
                     ("bond", "modality", "fixed σ", "routed σ mean ± sd [min, max]",
                      "expert weights (mean)", "val loss"), rows)


def _presets(meta: dict):
    return new_table("presets", ("name", "factors"), [
        (name, " ".join(specs) or "(the expression's factors)")
        for name, specs in meta.get("presets", {}).items()])


def _training(meta: dict):
    """One row per projector group: tuples, epochs, validation loss (routers: their table)."""
    jobs = {k: v for k, v in (meta.get("training") or {}).items()
            if isinstance(v, dict) and v.get("kind") != "router"}
    rows = []
    for job, t in jobs.items():
        loss = t.get("final_val_loss")
        rows.append((job, f"{t.get('train_tuples', '?')} + {t.get('val_tuples', '?')}",
                     str(t.get("epochs", "?")),
                     f"{loss:.4f}" if isinstance(loss, float) else "-",
                     " ".join(t.get("modes", []))))
    if not rows:
        return None
    return new_table("training", {"job": {}, "tuples (train + val)": RIGHT, "epochs": RIGHT,
                                  "best val loss": RIGHT, "modes": {}}, rows)


def _data(meta: dict):
    """The pools the bundle was trained on (None when it does not say)."""
    rows = []
    for m, d in (meta.get("data") or {}).items():
        d = d if isinstance(d, dict) else {"items": d}
        rows.append((m, str(d.get("items", "?")), str(d.get("fingerprint", "-"))))
    if not rows:
        return None
    return new_table("pools it was trained on",
                     {"modality": {}, "items": RIGHT, "fingerprint": {}}, rows)


def _evaluation(meta: dict):
    """Results kept by ``eval --record``: one row per (dataset, setting), metrics in %."""
    evaluation = meta.get("evaluation") or {}
    if not evaluation:
        return None
    current = meta.get("weights_fingerprint")
    rows = [(dataset, setting + (" (earlier build)" if _earlier(entry, current) else ""),
             "  ".join(f"{k} {100 * v:.1f}" for k, v in _metrics(entry).items()
                       if isinstance(v, (int, float))))
            for dataset, settings in evaluation.items() for setting, entry in settings.items()]
    return new_table("recorded evaluation (%)", ("dataset", "setting", "metrics"), rows)


def _earlier(entry, current) -> bool:
    """Whether a recorded result was measured on other weights (kept over a rebuild)."""
    weights = entry.get("weights") if isinstance(entry, dict) else None
    return bool(weights and current and weights != current)


def _metrics(entry) -> dict:
    return entry.get("metrics", {}) if isinstance(entry, dict) else {}


def _tuning(meta: dict):
    """The presets ``freebind tune`` stored: what each was chosen for with its score(s), the
    suites it was tuned on (with the fingerprint of their data, listed in :func:`_tuned_data`)
    and the grid."""
    from freebind.fusion.bundle import tuning_records

    records = tuning_records(meta)
    if not records:
        return None
    rows = []
    for name, rec in records.items():
        chosen = rec.get("chosen_for") or ("versatile" if name.endswith("-versatile") else "")
        scores = rec.get("scores") or {}
        shown = scores if chosen in ("versatile", "") else {chosen: scores.get(chosen)}
        text = "\n".join(f"{t} {100 * v:.1f}" for t, v in shown.items()
                         if isinstance(v, (int, float)))
        if rec.get("weights") and meta.get("weights_fingerprint") and \
                rec["weights"] != meta["weights_fingerprint"]:
            text += "\n(on an earlier build's weights)"
        rows.append((name, text or "-", _tuned_on(rec), _grid_text(rec)))
    return new_table("tuned presets (%)", ("preset", "scores", "tuned on", "grid"), rows)


def _tuned_on(rec: dict) -> str:
    """One line per suite, ``audiocaps 03b92633`` (the data's fingerprint, see
    :func:`_tuned_data`), and the preset or factors it was measured on top of."""
    lines = [f"{suite} {d.get('fingerprint', '-')[:8]}" if d else f"{suite} (data not recorded)"
             for suite, d in (rec.get("suites") or {}).items()]
    opened = rec.get("measured_on") or {}
    if opened.get("preset") or opened.get("factors"):
        on = " ".join(([f"@{opened['preset']}"] if opened.get("preset") else []) +
                      list(opened.get("factors") or []))
        lines.append(f"on top of {on}")
    return "\n".join(lines) or "-"


def _tuned_data(meta: dict):
    """The suites' data the tuned presets were measured on: one row per distinct data."""
    from freebind.fusion.bundle import tuning_records

    seen = {}
    for rec in tuning_records(meta).values():
        for suite, d in (rec.get("suites") or {}).items():
            if d:
                seen[(suite, d.get("fingerprint"), d.get("data"))] = d
    if not seen:
        return None
    rows = [(suite, str(fp)[:8], ", ".join(f"{n} {m}" for m, n in (d.get("items") or {}).items())
             + (f" ({d['missing']} missing)" if d.get("missing") else ""), str(folder))
            for (suite, fp, folder), d in seen.items()]
    return new_table("data the presets were tuned on", ("suite", "fingerprint", "items",
                                                        "folder"), rows)


def _grid_text(rec: dict) -> str:
    grid = rec.get("grid") or {}
    if not grid:
        return "coarse only"
    sizes = " × ".join(f"{k} {len(v)}" for k, v in grid.items())
    return sizes + (f"\n{rec['points']} points" if rec.get("points") else "")


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
