"""``freebind mini``: the embedded mini world — write pools and evaluation sets, and show the
role table of the shipped mini spaces."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import FreebindGroup, console, print_json, print_table

mini = typer.Typer(cls=FreebindGroup,
                   help="The mini world: generated pools, evaluation sets, role table.",
                   no_args_is_help=True, rich_markup_mode=None)


@mini.command("pools")
def pools(
    directory: Path = typer.Argument(..., help="Folder to write audio/, image/, texts.txt."),
    audio: int = typer.Option(3000, "--audio", min=0, help="Number of audio clips."),
    image: int = typer.Option(3000, "--image", min=0, help="Number of images."),
    text: int = typer.Option(3000, "--text", min=0, help="Number of texts."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed of the pools."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write unpaired pools (each modality sampled independently): the input of build."""
    from freebind.mini import write_pools

    t0 = time.time()
    summary = write_pools(directory, n_audio=audio, n_image=image, n_text=text, seed=seed,
                          progress=not as_json)
    summary = {"directory": str(directory), **summary, "seconds": round(time.time() - t0, 1)}
    if as_json:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"mini pools in {directory} (seed {seed}, "
                        f"{summary['seconds']} s)")
    table.add_column("modality")
    table.add_column("items", justify="right")
    table.add_column("path", overflow="fold")
    for m, rel in (("audio", summary["audio"]), ("image", summary["image"]),
                   ("text", summary["text"])):
        table.add_row(m, str(summary["counts"][m]), str(Path(directory) / rel))
    print_table(console(), table)


@mini.command("evalsets")
def evalsets(
    directory: Path = typer.Argument(..., help="Folder to write one sub-folder per suite."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed of the evaluation sets."),
    suite: Optional[List[str]] = typer.Option(None, "--suite",
                                              help="Only this suite (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the index as JSON."),
) -> None:
    """Write evaluation sets in the real datasets' layouts (AudioCaps, Clotho, ESC-50, COCO,
    Flickr30k, ImageNet, VGG-SS), from random streams that training never uses."""
    from freebind.mini import write_evalsets

    t0 = time.time()
    index = write_evalsets(directory, seed=seed, suites=suite or None, progress=not as_json)
    index = {"directory": str(directory), **index, "seconds": round(time.time() - t0, 1)}
    if as_json:
        print_json(index)
        return
    from rich.table import Table

    table = Table(title=f"mini evaluation sets in {directory} (seed {seed}, "
                        f"{index['seconds']} s)")
    for col in ("suite", "items", "task", "--data"):
        table.add_column(col, justify="right" if col == "items" else "left",
                         overflow="fold")
    for name, spec in index["suites"].items():
        table.add_row(name, str(spec["items"]), spec["task"],
                      str(Path(directory) / spec["path"]))
    print_table(console(), table)


@mini.command("roles")
def roles(
    items: int = typer.Option(500, "--items", min=20, help="Held-out items."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the held-out stream."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a Markdown table."),
    as_json: bool = typer.Option(False, "--json", help="Print the measurements as JSON."),
) -> None:
    """Measure the shipped mini spaces on held-out data: R@1 of every modality pair and
    the role conditions (exit 1 if one fails)."""
    from freebind.mini.report import markdown as to_markdown
    from freebind.mini.report import render_report
    from freebind.mini.roles import measure

    t0 = time.time()
    report = measure(n=items, seed=seed)
    report["timings_s"] = {"measure": round(time.time() - t0, 1)}
    if as_json:
        print_json(report)
    elif markdown:
        typer.echo(to_markdown(report))
    else:
        out = console()
        render_report(report, out, show=lambda table: print_table(out, table))
    if not report.get("ok", True):
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    app.add_typer(mini, name="mini")
