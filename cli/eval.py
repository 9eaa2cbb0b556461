"""``freebind eval TARGET... --suite NAME --data DIR``: score spaces and bundles side by side."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import check_output_value, console, print_json, print_table
from freebind_cli.options import (
    SpaceFlags, batch_size_option, cache_dir_option, data_option, factor_option, json_option,
    preset_option, suite_loader_option, suite_option, with_flag_groups,
)

DEFAULT_OUTPUT = "results/{model}/{dataset}.json"


def parse_options(specs: List[str]) -> dict:
    """``--option key=value`` pairs for the suite loaders (values stay strings)."""
    from freebind.util.vocab import parse_key_values

    return parse_key_values(specs, "--option", convert=False, allow_empty=True,
                            example="split=val")


@with_flag_groups
def eval_command(
    targets: List[str] = typer.Argument(None, help="Space references (mini:bind, IB, …) or "
                                        "bundles (fused.safetensors, fused.safetensors@preset); "
                                        "default: the last build when it is in this "
                                        "folder, else the only bundle here."),
    suite: List[str] = suite_option("Suite name (repeatable): audiocaps, clotho, esc50, "
                                    "audioset, vggss, flickrnet, coco, flickr30k, imagenet, "
                                    "modelnet40, objaverse-lvis, cap3d, pairs."),
    data: List[Path] = data_option("the mini evaluation sets for mini targets"),
    factor: List[str] = factor_option("Factor override for bundles (a=0.8, b2.t=0.5, "
                                      "CLAP_g.a=0.8, b2=off); repeatable."),
    preset: Optional[str] = preset_option("A preset stored in the bundles (versatile, "
                                          "at-expertise, tuned-…)."),
    option: List[str] = suite_loader_option("(split=val, templates=FILE, manifest=FILE, …)."),
    output: str = typer.Option(DEFAULT_OUTPUT, "--output", "-o", help="Result file template "
                               "(fields {dataset} {model} {task} {preset}) or a folder "
                               "(FOLDER/{model}/{dataset}.json); '' writes no files."),
    cache: Optional[Path] = cache_dir_option("Embedding cache folder "
                                             "(default $FREEBIND_HOME/cache)."),
    batch_size: int = batch_size_option(),
    record: bool = typer.Option(False, "--record", help="Also keep each bundle's results in "
                                "its metadata (shown by `freebind info`)."),
    as_json: bool = json_option("the result records"),
    space_flags: SpaceFlags = ...,
) -> None:
    """Evaluate spaces and bundles on the paper's suites; one JSON per (target, suite).

    Embeddings are cached (for a bundle: its base spaces' embeddings), so evaluating other
    factors or presets re-encodes nothing."""
    from freebind.evaluate.entrypoints import evaluate

    check_output_value(output)
    space_opts = space_flags.parse()
    err = console(stderr=True)
    targets, data = announce_defaults("evaluating", targets, suite, data, cache, err,
                                      check=None if data else _targets_check(factor, preset))
    records = evaluate(targets, suite, data, factors=factor, preset=preset,
                       suite_options=parse_options(option), output=output or None,
                       record=record, cache_dir=cache, batch_size=batch_size,
                       progress=not as_json, space_options=space_opts,
                       warn=lambda line: err.print(f"[yellow]{line}[/]"))
    if as_json:
        print_json(records)
        return
    _table(records, list(suite))


def _targets_check(factors, preset):
    """Open the targets with ``--factor``/``--preset`` (a misspelt preset is refused with a
    guess) before a suite's default data is written (with ``--data`` nothing is written
    first: :func:`freebind.evaluate` opens the targets before it reads any data)."""
    if not factors and not preset:
        return None
    from freebind.run.targets import open as open_target

    def check(refs):
        for ref in refs:
            open_target(ref, list(factors or []), preset)
    return check


def announce_defaults(verb: str, targets, suites, data, cache_dir, err,
                      check=None) -> tuple[list, list]:
    """Resolve a missing target and missing data (:mod:`freebind.run.implicit`) and say which,
    one line each, before any work; ``check(refs)`` (e.g. opening the targets with their
    preset and factors) runs before any suite data is written."""
    from freebind.evaluate.suite_data import suite_data
    from freebind.run.implicit import resolve_targets
    from freebind.util.errors import UsageError
    from freebind.run.preflight import (
        Problem, leaf_spaces, path_problems, raise_if, space_problems,
    )

    resolved = resolve_targets(targets)
    if not targets:
        err.print(resolved[0].describe(verb), soft_wrap=True, highlight=False)
    refs = [r.value for r in resolved]
    if check is not None:
        check(refs)
    # libraries, weights, then data: every failure in one message, before any work
    problems = space_problems([s for r in refs for s in leaf_spaces(r)])
    what = {"evaluating": "evaluate", "tuning": "tune"}.get(verb, verb) + " " + ", ".join(refs)
    if data or not suites:
        raise_if(what, problems + path_problems(("--data", d) for d in data or []))
        return refs, list(data or [])
    found = {}
    for s in suites:
        try:
            found[s] = suite_data(s, refs, cache_dir=cache_dir, progress=True)
        except UsageError as exc:
            problems.append(Problem("input", str(exc)))
    raise_if(what, problems)
    folders = []
    for s in suites:
        err.print(f"{s}: {found[s].value} ({found[s].why})", soft_wrap=True, highlight=False)
        folders.append(Path(found[s].value))
    return refs, folders


def _table(records: list[dict], suites: list[str]) -> None:
    from rich.table import Table

    from freebind.evaluate.runner import headline

    columns: list[tuple[str, str]] = []
    for s in suites:
        recs = [r for r in records if r["dataset"] == s]
        names = list(recs[0]["metrics"]) if len(suites) == 1 else headline(s, recs[0]["metrics"])
        if len(suites) == 1:
            names = [n for n in names if n != "mean_per_class_recall"]
        columns += [(s, n) for n in names]
    single = len(suites) == 1
    table = Table(title=f"freebind eval: {suites[0]} (%)" if single else "freebind eval (%)")
    table.add_column("target", overflow="fold")   # a long name folds; numbers never do
    for s, n in columns:
        table.add_column(n.replace("_", "\n", 1) if single else f"{s}\n{n}", justify="right",
                         no_wrap=True, min_width=5)
    labels = list(dict.fromkeys(r["model"] for r in records))
    best = {c: max(r["metrics"][c[1]] for r in records if r["dataset"] == c[0]) for c in columns}
    for label in labels:
        row = [label]
        for s, n in columns:
            rec = next(r for r in records if r["model"] == label and r["dataset"] == s)
            v = rec["metrics"][n]
            cell = f"{100 * v:.1f}"
            row.append(f"[bold]{cell}[/]" if v == best[(s, n)] and len(labels) > 1 else cell)
        table.add_row(*row)
    out = console()
    print_table(out, table)
    for r in records:
        note = f"{r['dataset']}: {r['protocol']['missing']} missing" if r["protocol"]["missing"] \
            else ""
        tail = f"  → {r['path']}" if r.get("path") else ""
        out.print(f"[dim]{r['model']} · {r['dataset']}: encoded {r['encoded']} new items in "
                  f"{r['seconds']:.1f}s{tail}{'  ' + note if note else ''}[/]", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
