"""Shared pieces of the CLI: consoles, error reporting, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, Optional, Sequence

import typer
from typer.core import TyperGroup

from freebind.errors import FreebindError
from freebind.vocab import PRECISIONS, parse_value  # noqa: F401  (re-exported)


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


# --- loader options shared by the verbs that encode (embed, build, eval, tune) ---------------

def device_option():
    return typer.Option(None, "--device", metavar="DEVICE",
                        help="Device the encoders run on (cpu, cuda, cuda:1, …; default "
                             "$FREEBIND_DEVICE, else CUDA when available).")


def precision_option():
    return typer.Option(None, "--precision", metavar="fp32|fp16|bf16",
                        help="Encoder precision (default $FREEBIND_PRECISION, else the "
                             "space's own; fp16 needs a GPU).")


def space_option_option():
    return typer.Option([], "--space-option", metavar="KEY=VALUE",
                        help="Loader option for the spaces (checkpoint=PATH, "
                             "trust_remote_code=true, workers=4, …); repeatable.")


def parse_space_options(device: Optional[str] = None, precision: Optional[str] = None,
                  specs: Optional[Sequence[str]] = ()) -> dict:
    """The options for ``freebind.spaces.get(ref, **options)`` from ``--device``,
    ``--precision`` and ``--space-option KEY=VALUE`` (only what was given, so spaces
    fall back to their defaults and FREEBIND_* variables). Raises UsageError (exit 2)."""
    from freebind.vocab import merge_space_options, parse_key_values

    return merge_space_options(parse_key_values(specs, what="--space-option"),
                               device=device, precision=precision,
                               names={"device": "--device", "precision": "--precision",
                                      "options": "--space-option"})
