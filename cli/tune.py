"""``freebind tune BUNDLE --suite … --data … --grid a=0:1:0.1 --grid t=0:1:0.1``: the paper's
coarse-to-fine customised inference, on cached embeddings, with factor-analysis heatmaps."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import (
    check_output_value, console, print_command, print_json, print_table,
)
from freebind_cli.options import (
    SpaceFlags, batch_size_option, cache_dir_option, data_option, json_option,
    suite_loader_option, suite_option, with_flag_groups,
)


@with_flag_groups
def tune_command(
    bundle: Optional[Path] = typer.Argument(None, help="A bundle (.safetensors) written by "
                                            "freebind; default: the last build when it is "
                                            "in this folder, else the only bundle here "
                                            "(presets are stored only in a named bundle)."),
    suite: List[str] = suite_option("Suite name (repeatable)."),
    data: List[Path] = data_option("the mini evaluation sets"),
    grid: List[str] = typer.Option([], "--grid", "-g", help="Factor grid KEY=START:STOP:STEP "
                                   "or KEY=V1,V2 (a, t, i, b2.a, CLAP_g.a, …); at most two "
                                   "for heatmaps."),
    option: List[str] = suite_loader_option("(split=val, …); repeatable."),
    out: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the heatmap "
                                       "PNG and tune.json (default tune/<bundle name>)."),
    name: str = typer.Option("tuned", "--name", help="Prefix of the stored preset names."),
    save: bool = typer.Option(True, "--save/--no-save", help="Store the presets in the bundle "
                              "(only a bundle named on the command line)."),
    cache: Optional[Path] = cache_dir_option("Embedding cache folder."),
    batch_size: int = batch_size_option(),
    as_json: bool = json_option("the tuning result"),
    space_flags: SpaceFlags = ...,
) -> None:
    """Switch bonds on/off (coarse), sweep factors (fine), draw the change of every task
    versus the base space, and store per-task and versatile presets in the bundle."""
    from freebind.evaluate.entrypoints import tune
    from freebind_cli.eval import announce_defaults, parse_options

    check_output_value(out)
    space_options, suite_options = space_flags.parse(), parse_options(option)
    targets, data = announce_defaults("tuning", [str(bundle)] if bundle else [], suite, data,
                                      cache, console(stderr=True))
    named = bundle is not None    # presets go only into a bundle the user named
    result = tune(targets[0], suite, data, grid, suite_options=suite_options,
                  out=out, name=name, save=save and named, cache_dir=cache, batch_size=batch_size,
                  progress=not as_json, space_options=space_options)
    if as_json:
        print_json(result.summary)
        return
    _report(result, result.summary, save and named,
            "" if named or not save else "name the bundle to store them")


def _report(result, summary: dict, saved: bool, why_not: str = "") -> None:
    from rich.table import Table

    from freebind.evaluate.tuning import scope_notes

    out = console()
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    coarse = Table(title="coarse: bonds on/off at the bundle's factors (%)")
    coarse.add_column("switched off")
    for t in result.tasks:
        coarse.add_column(t, justify="right")
    coarse.add_row("[dim]base space[/]", *[pct(result.base[t]) for t in result.tasks])
    for p in result.coarse:
        mark = " ←" if p.overrides == result.coarse_choice else ""
        coarse.add_row((", ".join(o.split("=")[0] for o in p.overrides) or "none") + mark,
                       *[pct(p.metrics[t]) for t in result.tasks])
    print_table(out, coarse)
    n = len(result.coarse) + len(result.fine)
    best = Table(title=f"presets: the best of all {n} points, coarse and fine (%)")
    for col in ("preset", "factors", *result.tasks):
        best.add_column(col, justify="right" if col in result.tasks else "left")
    for preset, specs in result.presets.items():
        chosen = result.chosen_for.get(preset, "versatile")
        p = result.versatile if chosen == "versatile" else result.best[chosen]
        cells = []
        for t in result.tasks:
            d = 100 * (p.metrics[t] - result.base[t])
            cells.append(f"{pct(p.metrics[t])} ({d:+.1f})")
        best.add_row(preset, " ".join(specs) or "(defaults)", *cells)
    print_table(out, best)
    for note in scope_notes(result.grid_scope):
        print_command(out, f"note: {note}")
    where = f"stored in {summary['bundle']}" if saved else \
        f"not stored ({why_not or '--no-save'})"
    out.print(f"[dim]{summary['points']} points in {summary['seconds']:.1f}s; figure "
              f"{summary['figure']}; presets {where}[/]")
    for line in replaced_lines(result.replaced, result.presets):
        print_command(out, line)


def replaced_lines(replaced: dict, presets: dict) -> list[str]:
    """What storing the presets replaced: one line per preset of the same name, old → new
    factors and what the old one had been tuned on."""
    if not replaced:
        return []
    lines = [f"replaced {len(replaced)} preset(s) stored before (--name PREFIX keeps both):"]
    for name, old in replaced.items():
        before = " ".join(old["factors"]) or "(defaults)"
        after = " ".join(presets.get(name, [])) or "(defaults)"
        lines.append(f"  {name}: {before} -> {after}" + _was(old.get("record")))
    return lines


def _was(record) -> str:
    if not record:
        return " (not made by tune)"
    grid = record.get("grid") or {}
    swept = f"grid {', '.join(grid)}" if grid else "coarse only"
    return f" (was tuned on {', '.join(record.get('suites') or {}) or '?'}, {swept})"


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
