"""Shared pieces of the CLI: consoles, error reporting, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from freebind.errors import FreebindError


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def fail(exc: FreebindError) -> typer.Exit:
    """Print a user-facing error to stderr; return the Exit to raise."""
    typer.echo(exc.render(), err=True)
    return typer.Exit(code=exc.exit_code)


class FreebindGroup(TyperGroup):
    """Click group that turns every :class:`FreebindError` into a clean message and exit code
    (2 for bad input, 1 for failures) instead of a traceback; Ctrl-C exits 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FreebindError as exc:
            raise fail(exc) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(code=130) from None

    def list_commands(self, ctx):  # keep the order in which verbs were added
        return list(self.commands)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n")


def _default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
