"""``freebind export BUNDLE --format onnx -o fusion.onnx``: the fusion graph for other
runtimes (:mod:`freebind.share.onnx`)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from freebind_cli.common import console, print_json, print_table


def export_command(
    bundle: str = typer.Argument(..., help="A bundle (.safetensors, bundle@preset, hf:…)."),
    output: Path = typer.Option(..., "--output", "-o", help="File to write (fusion.onnx)."),
    format: str = typer.Option("onnx", "--format", help="Export format: onnx."),  # noqa: A002
    factor: List[str] = typer.Option([], "--factor", "-f", help="Factor override (a=0.8, "
                                     "b2=off, b2.route=off): the factor inputs' defaults "
                                     "and the bonds switched on; repeatable."),
    preset: str = typer.Option(None, "--preset", help="A preset stored in the bundle."),
    modality: List[str] = typer.Option([], "--modality", "-m", help="Export only these "
                                       "modalities (repeatable; default: all)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Run the file with "
                                "onnxruntime and compare with freebind's fusion."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export the fusion (projectors, mixing, normalisation) with the base embeddings
    (SPACE/MODALITY) and the factors (BOND.MODALITY) as inputs, one output per modality.
    The encoders are not exported (docs/sharing.md)."""
    from freebind.share.onnx import export

    report = export(bundle, output, format=format, factors=factor, preset=preset,
                    modalities=modality or None, verify=verify)
    if as_json:
        print_json(report.to_dict())
        return
    from rich.table import Table

    out = console()
    table = Table(title=f"{output} ({report.bytes / 1e6:.2f} MB, {format})")
    for col in ("", "name", "shape / default", "max |Δ| vs fuse"):
        table.add_column(col)
    for name, shape in report.inputs.items():
        table.add_row("input", name, "[" + ", ".join(map(str, shape)) + "]", "")
    for name, value in report.factors.items():
        table.add_row("factor", name, f"{value:g}", "")
    for name, shape in report.outputs.items():
        diff = (report.max_abs_diff or {}).get(name)
        table.add_row("output", name, "[" + ", ".join(map(str, shape)) + "]",
                      "-" if diff is None else f"{diff:.1e}")
    print_table(out, table)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
