"""``freebind mini``: the embedded mini world — write pools and evaluation sets, and show the
role table of the shipped mini spaces."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import FreebindGroup, console, new_table, print_json, print_table

mini = typer.Typer(cls=FreebindGroup,
                   help="The mini world: generated pools, evaluation sets, role table.",
                   no_args_is_help=True, rich_markup_mode=None)


@mini.command("pools")
def pools(
    directory: Path = typer.Argument(..., help="Folder to write audio/, image/, texts.txt."),
    audio: int = typer.Option(3000, "--audio", min=0, help="Number of audio clips."),
    image: int = typer.Option(3000, "--image", min=0, help="Number of images."),
    text: int = typer.Option(3000, "--text", min=0, help="Number of texts."),
    point: int = typer.Option(0, "--point", min=0,
                              help="Number of point clouds (.ply, point/; 0: none)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed of the pools."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Write unpaired pools (each modality sampled independently): the input of build."""
    from freebind.mini import write_pools

    summary = _timed(directory, lambda: write_pools(directory, n_audio=audio, n_image=image,
                                                    n_text=text, seed=seed,
                                                    progress=not as_json, n_point=point))
    if as_json:
        print_json(summary)
        return
    rows = [(m, str(summary["counts"][m]), str(Path(directory) / summary[m]))
            for m in ("audio", "image", "text", "point") if m in summary["counts"]]
    print_table(console(), new_table(
        f"mini pools in {directory} (seed {seed}, {summary['seconds']} s)",
        {"modality": {}, "items": {"justify": "right"}, "path": {"overflow": "fold"}}, rows))


def _timed(directory: Path, write) -> dict:
    """What ``write()`` returns, with the folder it wrote and the seconds it took."""
    t0 = time.time()
    summary = write()
    return {"directory": str(directory), **summary, "seconds": round(time.time() - t0, 1)}


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

    index = _timed(directory, lambda: write_evalsets(directory, seed=seed, suites=suite or None,
                                                     progress=not as_json))
    if as_json:
        print_json(index)
        return
    fold = {"overflow": "fold"}
    rows = [(name, str(spec["items"]), spec["task"], str(Path(directory) / spec["path"]))
            for name, spec in index["suites"].items()]
    print_table(console(), new_table(
        f"mini evaluation sets in {directory} (seed {seed}, {index['seconds']} s)",
        {"suite": fold, "items": {**fold, "justify": "right"}, "task": fold, "--data": fold},
        rows))


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
