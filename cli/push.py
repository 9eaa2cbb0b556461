"""``freebind push BUNDLE ORG/NAME [--private] [--dry-run DIR]``: publish a bundle on the
Hugging Face Hub with a generated model card (:mod:`freebind.share.push`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from freebind_cli.common import console, print_json


def push_command(
    bundle: Path = typer.Argument(..., help="The bundle (.safetensors) to publish."),
    repo: str = typer.Argument(..., metavar="ORG/NAME", help="The model repository on the Hub "
                               "(created when missing)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private."),
    dry_run: Optional[Path] = typer.Option(None, "--dry-run", metavar="DIR",
                                           help="Write the repository folder (bundle + "
                                                "README.md model card) into DIR; upload "
                                                "nothing."),
    license: Optional[str] = typer.Option(  # noqa: A002
        None, "--license", help="The card's licence (default: cc-by-nc-4.0 when a space is "
                                "non-commercial, else mit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Publish BUNDLE as the model repository ORG/NAME: the bundle as fused.safetensors and a
    model card (expression, spaces and licences, presets, data fingerprints, evaluation,
    usage), so that `hf:ORG/NAME` works anywhere a target or an expert goes."""
    from freebind.share.push import push

    report = push(bundle, repo, private=private, dry_run=dry_run, license=license)
    if as_json:
        print_json(report.to_dict())
        return
    out = console()
    if report.uploaded:
        out.print(f"pushed {bundle} → {report.url}", soft_wrap=True, highlight=False)
    else:
        out.print(f"wrote {', '.join(report.files)} into {report.folder} (dry run: nothing "
                  f"uploaded)", soft_wrap=True, highlight=False)
    out.print(f"use it as hf:{repo}", soft_wrap=True, highlight=False)
    for ref in report.local_spaces:
        typer.echo(f"warning: space {ref} is a file on this machine; people using "
                   f"hf:{repo} need it too", err=True)


def register(app: typer.Typer) -> None:
    app.command("push")(push_command)
