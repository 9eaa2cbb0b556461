"""Shared pieces of the CLI: consoles and tables, error reporting, old flag spellings, JSON
output, the skipped-items list and the parsing of the space-loading flags."""

from __future__ import annotations

import json
import os
import sys
import types
from typing import Any, Optional, Sequence

import typer
from typer.core import TyperCommand, TyperGroup

from freebind.util.errors import FreebindError


#: Width of a console that is not a terminal (a file, a pipe): wide enough that nothing is
#: cut or folded; tables take their natural width and lines are never wrapped.
PIPE_WIDTH = 100_000
#: Widest a table is printed in a pipe or a file when COLUMNS is not set (wider tables are
#: printed as ``header: value`` lines, which never cut a value)
PIPE_TABLE_WIDTH = 100


def table_width(out) -> int:
    """How wide a table may be: ``$COLUMNS`` when set, else the terminal's width, else (a
    pipe, a file) :data:`PIPE_TABLE_WIDTH`."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return min(out.width, PIPE_TABLE_WIDTH) if out.width >= PIPE_WIDTH else out.width


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False):
    """A rich console for stdout (or stderr). In a pipe or a file it has no width limit, so
    a value is never cut, ellipsised or folded; on a terminal, use :func:`print_table`
    for tables, which falls back to plain lines where a table would not fit."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if _is_terminal(stream) else PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def print_table(out, table) -> None:
    """Print a rich table whole: as a table when its natural width fits the console, else
    as plain lines (``header: value``, one row after the other), so that no value is ever
    cut or folded inside a word."""
    from rich.markup import escape
    from rich.text import Text

    natural = out.measure(table, options=out.options.update_width(PIPE_WIDTH)).maximum
    if natural <= table_width(out):
        out.print(table)
        return
    if table.title:
        out.print(table.title, soft_wrap=True)
    headers = [Text.from_markup(c.header).plain if isinstance(c.header, str)
               else str(c.header) for c in table.columns]
    cells = [list(c.cells) for c in table.columns]
    for r in range(table.row_count):
        for k, (h, col) in enumerate(zip(headers, cells)):
            value = col[r] if r < len(col) else ""
            value = Text.from_markup(value).plain if isinstance(value, str) else str(value)
            out.print(("" if k == 0 else "  ") + escape(f"{h.replace(chr(10), ' ')}: {value}"),
                      soft_wrap=True, highlight=False)


def new_table(title: str, columns, rows=()):
    """A rich table titled ``title``: ``columns`` are its headers, or a mapping of each header
    to its ``add_column`` options (``{"items": {"justify": "right"}}``); ``rows`` its cells."""
    from rich.table import Table

    table = Table(title=title)
    styles = columns if isinstance(columns, dict) else dict.fromkeys(columns, {})
    for header, style in styles.items():
        table.add_column(header, **style)
    for row in rows:
        table.add_row(*row)
    return table


def print_command(out, text: str) -> None:
    """Print a command for the user to copy: one line, never wrapped at the console's width,
    no markup or highlighting."""
    out.print(text, soft_wrap=True, markup=False, highlight=False)


def check_output_value(value) -> None:
    """``-o KEY=VALUE`` meant a suite option before ``-o`` became the output everywhere:
    say so instead of writing into a folder named ``split=val``."""
    text = "" if value is None else str(value)
    if "=" in text and "/" not in text and "{" not in text and os.sep not in text:
        from freebind.util.errors import UsageError

        raise UsageError(f"-o/--output {text!r} looks like a suite option: -o is the output "
                         f"in every verb; pass suite options with --option {text}")


def fail(exc: FreebindError) -> typer.Exit:
    """Print a user-facing error to stderr; return the Exit to raise."""
    typer.echo(exc.render(), err=True)
    return typer.Exit(code=exc.exit_code)


class FreebindGroup(TyperGroup):
    """Click group holding the CLI's error boundary (:mod:`freebind_cli.errors`): every
    problem, from a bad option value to an unexpected exception, ends as one line on stderr
    and a documented exit status (2 bad usage, 1 failure, 130 Ctrl-C); never a traceback
    unless ``FREEBIND_DEBUG=1``."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        from freebind_cli.errors import guarded

        try:
            rv = guarded(lambda: super(FreebindGroup, self).main(
                args, prog_name, complete_var, standalone_mode=False, **extra))
            code = rv if isinstance(rv, int) else 0
        except typer.Exit as exc:
            code = exc.exit_code
        except typer.Abort:
            typer.echo("aborted", err=True)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code

    def invoke(self, ctx):
        from freebind_cli.errors import guarded

        return guarded(lambda: super(FreebindGroup, self).invoke(ctx), ctx)

    def list_commands(self, ctx):  # keep the order in which verbs were added
        return list(self.commands)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is not None and getattr(type(cmd), "collect_usage_pieces", None) is \
                getattr(TyperCommand, "collect_usage_pieces", None):
            cmd.collect_usage_pieces = types.MethodType(_usage_pieces, cmd)
        if cmd is not None:
            from freebind_cli.options import check_path_kinds, name_metavars

            name_metavars(cmd)
            check_path_kinds(name if ctx.parent is None else f"{ctx.info_name} {name}", cmd)
        return cmd

    def resolve_command(self, ctx, args):
        """Old flag spellings (:data:`HIDDEN_ALIASES`) still work; help shows only the new."""
        name, cmd, rest = super().resolve_command(ctx, args)
        return name, cmd, rename_flags(rest, HIDDEN_ALIASES.get(name, {}))


def _usage_pieces(cmd, ctx) -> list[str]:
    """A readable usage line: ``[OPTIONS] EXPRESSION``, ``[TARGETS]...``, ``EMBED_DIRS...``
    (typer writes ``{embed_dirs}...`` and lower-case names)."""
    pieces = [cmd.options_metavar] if cmd.options_metavar else []
    for param in cmd.get_params(ctx):
        if getattr(param, "param_type_name", "") == "argument":
            name = param.metavar or (param.name or "").upper()
            if param.nargs != 1 and not name.endswith("..."):
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
    return pieces


#: Flag spellings kept working after a rename, per verb: ``{verb: {old: new}}``. Each flag
#: has one meaning across verbs: ``-o``/``--output`` is where results go, ``--option`` a
#: suite loader option, ``--texts FILE`` a file of texts (one per line), ``--cache-dir`` the
#: embedding cache.
HIDDEN_ALIASES: dict[str, dict[str, str]] = {
    "tune": {"--out": "--output", "--cache": "--cache-dir"},
    "eval": {"--cache": "--cache-dir"},
    "build": {"--text": "--texts"},
}


def rename_flags(args: Sequence[str], renames: dict) -> list[str]:
    """``args`` with each old flag (``--out X`` or ``--out=X``) spelt the new way; nothing
    after ``--`` is touched."""
    out: list[str] = []
    for i, a in enumerate(args):
        if a == "--":
            return out + list(args[i:])
        head, eq, tail = a.partition("=")
        out.append(renames[head] + eq + tail if head in renames else a)
    return out


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=_default) + "\n")


def _default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_skipped(out, skipped: list[dict], what: str) -> None:
    """The first ten of ``skipped`` (``{"path", "reason"}``), one line each, under a yellow
    count of ``what`` (``unreadable pool item(s)``); the rest are counted (see ``--json``)."""
    if not skipped:
        return
    out.print(f"[yellow]skipped {len(skipped)} {what}:[/]")
    for s in skipped[:10]:
        out.print(f"  {s['path']}: {s['reason']}")
    if len(skipped) > 10:
        out.print(f"  … and {len(skipped) - 10} more (see --json)")


def parse_space_options(device: Optional[str] = None, precision: Optional[str] = None,
                        specs: Optional[Sequence[str]] = ()) -> dict:
    """The options for ``freebind.spaces.get(ref, **options)`` from ``--device``,
    ``--precision`` and ``--space-option KEY=VALUE`` (only what was given, so spaces
    fall back to their defaults and FREEBIND_* variables). Raises UsageError (exit 2)."""
    from freebind.util.vocab import merge_space_options, parse_key_values

    return merge_space_options(parse_key_values(specs, what="--space-option"),
                               device=device, precision=precision,
                               names={"device": "--device", "precision": "--precision",
                                      "options": "--space-option"})
