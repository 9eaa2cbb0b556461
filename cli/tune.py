"""``freebind tune BUNDLE --suite … --data … --grid a=0:1:0.1 --grid t=0:1:0.1``: the paper's
coarse-to-fine customised inference, on cached embeddings, with factor-analysis heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import (
    console, device_option, parse_space_options, precision_option, print_json,
    space_option_option,
)


def tune_command(
    bundle: Path = typer.Argument(..., help="A bundle (.safetensors) written by freebind."),
    suite: List[str] = typer.Option(..., "--suite", "-s", help="Suite name (repeatable)."),
    data: List[Path] = typer.Option(..., "--data", "-d", help="Dataset folder (one per suite, "
                                    "or one root with a folder per suite)."),
    grid: List[str] = typer.Option([], "--grid", "-g", help="Factor grid KEY=START:STOP:STEP "
                                   "or KEY=V1,V2 (a, t, i, b2.a, CLAP_g.a, …); at most two "
                                   "for heatmaps."),
    option: List[str] = typer.Option([], "--option", "-o", help="Suite option KEY=VALUE."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the heatmap PNG and "
                                       "tune.json (default tune/<bundle name>)."),
    name: str = typer.Option("tuned", "--name", help="Prefix of the stored preset names."),
    save: bool = typer.Option(True, "--save/--no-save", help="Store the presets in the bundle."),
    cache: Optional[Path] = typer.Option(None, "--cache-dir", "--cache",
                                         help="Embedding cache folder."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    as_json: bool = typer.Option(False, "--json", help="Print the tuning result as JSON."),
    device: Optional[str] = device_option(),
    precision: Optional[str] = precision_option(),
    space_option: List[str] = space_option_option(),
) -> None:
    """Switch bonds on/off (coarse), sweep factors (fine), draw the change of every task
    versus the base space, and store per-task and versatile presets in the bundle."""
    import time

    from freebind.errors import UsageError
    from freebind.evaluate.heatmap import draw
    from freebind.evaluate.runner import load_target, store_presets, tune_target, write_json
    from freebind.evaluate.suites import info
    from freebind.evaluate.tuning import parse_grid
    from freebind.optional import require
    from freebind.store import EmbeddingStore
    from freebind_cli.eval import pair_data, parse_options

    space_opts = parse_space_options(device, precision, space_option)
    grids = [parse_grid(g) for g in grid]
    if len({k for k, _ in grids}) != len(grids):
        raise UsageError("--grid: a key is given twice")
    options = parse_options(option)
    suites = [(s, folder, {k: v for k, v in options.items() if k in info(s).options})
              for s, folder in pair_data(suite, data)]
    unused = [k for k in options if not any(k in info(s).options for s, _, _ in suites)]
    if unused:
        raise UsageError(f"--option {unused[0]}: no chosen suite takes it")
    require("matplotlib", "the factor-analysis figure of tune")  # before any work
    target = load_target(str(bundle), space_options=space_opts)
    t0 = time.perf_counter()
    result, embedded = tune_target(target, suites, grids, store=EmbeddingStore(cache),
                                   prefix=name, batch_size=batch_size, progress=not as_json)
    seconds = time.perf_counter() - t0
    out = out or Path("tune") / bundle.stem
    figure = draw(result, out / "factor_analysis.png",
                  title=f"{target.fused.name}: change vs {target.base_ref}")
    summary = {"bundle": str(bundle), "expression": target.fused.name,
               "suites": {s: str(f) for s, f, _ in suites}, "seconds": round(seconds, 2),
               "points": len(result.coarse) + len(result.fine), "figure": str(figure),
               **result.to_dict()}
    write_json(out / "tune.json", summary)
    if save:
        store_presets(bundle, result.presets, {
            "suites": sorted(summary["suites"]), "grid": summary["grid"],
            "coarse_choice": result.coarse_choice, "presets": result.presets,
            "base": result.base,
            "best": {t: p.metrics[t] for t, p in result.best.items()},
            "versatile": result.versatile.metrics})
    if as_json:
        print_json(summary)
        return
    _report(result, summary, save)


def _report(result, summary: dict, saved: bool) -> None:
    from rich.table import Table

    out = console()
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    coarse = Table(title="coarse: bonds on/off (%)")
    coarse.add_column("switched off")
    for t in result.tasks:
        coarse.add_column(t, justify="right")
    coarse.add_row("[dim]base space[/]", *[pct(result.base[t]) for t in result.tasks])
    for p in result.coarse:
        mark = " ←" if p.overrides == result.coarse_choice else ""
        coarse.add_row((", ".join(o.split("=")[0] for o in p.overrides) or "none") + mark,
                       *[pct(p.metrics[t]) for t in result.tasks])
    out.print(coarse)
    best = Table(title=f"fine: best factors over {len(result.fine)} grid points (%)")
    for col in ("preset", "factors", *result.tasks):
        best.add_column(col, justify="right" if col in result.tasks else "left")
    rows = [(n, p) for n, p in zip(result.presets, [result.versatile, *result.best.values()])]
    for preset, p in rows:
        cells = []
        for t in result.tasks:
            d = 100 * (p.metrics[t] - result.base[t])
            cells.append(f"{pct(p.metrics[t])} ({d:+.1f})")
        best.add_row(preset, " ".join(p.overrides) or "(defaults)", *cells)
    out.print(best)
    where = f"stored in {summary['bundle']}" if saved else "not stored (--no-save)"
    out.print(f"[dim]{summary['points']} points in {summary['seconds']:.1f}s; figure "
              f"{summary['figure']}; presets {where}[/]")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
