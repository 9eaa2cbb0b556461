"""Shared pieces of the CLI: consoles, error reporting, JSON output."""

from __future__ import annotations

import json
import re
import sys
from typing import Any, Optional, Sequence

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


# --- loader options shared by the verbs that encode (embed, build, eval, tune) ---------------

PRECISIONS = ("fp32", "fp16", "bf16")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?\Z")
_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


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


def parse_value(text: str):
    """``"4"`` → 4, ``"0.5"`` → 0.5, ``"true"``/``"no"`` → bool, anything else the string."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return _BOOLS.get(text.lower(), text)


def parse_space_options(device: Optional[str] = None, precision: Optional[str] = None,
                  specs: Optional[Sequence[str]] = ()) -> dict:
    """The options for ``freebind.spaces.get(ref, **options)`` from ``--device``,
    ``--precision`` and ``--space-option KEY=VALUE`` (only what was given, so spaces
    fall back to their defaults and FREEBIND_* variables). Raises UsageError (exit 2)."""
    from freebind.errors import UsageError

    out: dict = {}
    for spec in specs or ():
        key, eq, value = spec.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise UsageError(f"--space-option {spec!r}: expected KEY=VALUE "
                             "(e.g. checkpoint=/path/model.pt, workers=4)")
        if not _KEY.match(key):
            raise UsageError(f"--space-option {spec!r}: {key!r} is not an option name "
                             "(letters, digits, _)")
        if key in out:
            raise UsageError(f"--space-option {key}: given twice")
        out[key] = parse_value(value)
    for key, value, flag in (("device", device, "--device"),
                             ("precision", precision, "--precision")):
        if value is None:
            continue
        value = value.strip()
        if not value:
            raise UsageError(f"{flag}: empty value")
        if key in out and str(out[key]) != value:
            raise UsageError(f"{flag} {value} contradicts --space-option "
                             f"{key}={out[key]}")
        out[key] = value
    if "device" in out and not isinstance(out["device"], str):
        raise UsageError(f"device {out['device']!r}: expected a name like cpu, cuda or cuda:1")
    if "precision" in out:
        p = str(out["precision"]).lower()
        if p not in PRECISIONS:
            raise UsageError(f"--precision {out['precision']}: use one of "
                             f"{', '.join(PRECISIONS)}")
        out["precision"] = p
    return out
