"""The CLI's one error boundary: every problem a command meets ends as one line on stderr
(``error: …``) and a documented exit status, never a traceback (``FREEBIND_DEBUG=1`` prints
the traceback as well, for a bug report).

Exit statuses, the same in every verb:

====  ============================================================================
0     success
1     the work could not be done: this machine lacks something (an optional package,
      weights, the device or precision asked for), an input could not be read, a strict
      run skipped inputs, or an unexpected error (a bug: ``FREEBIND_DEBUG=1`` shows where)
2     the command line is wrong: an unknown option, a bad or missing value, a path of the
      wrong kind (a file where a folder is wanted, or the reverse), an unknown
      hyper-parameter, suite, space or preset — nothing was done
130   interrupted (Ctrl-C); a re-run resumes
====  ============================================================================
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Optional

import typer
from typer._click import exceptions as click_exceptions

#: exit statuses (see the module's table; docs/cli.md and the README list them too)
OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = {
    OK: "success",
    FAILED: "the work could not be done (missing package, weights, device or precision; an "
            "unreadable input; a strict run that skipped inputs; an unexpected error)",
    USAGE: "the command line is wrong (unknown option, bad or missing value, a path of the "
           "wrong kind, unknown hyper-parameter, suite, space or preset); nothing was done",
    INTERRUPTED: "interrupted (Ctrl-C); run the same command again to resume",
}


def debugging() -> bool:
    """``FREEBIND_DEBUG`` is set to something other than 0/false/no/empty."""
    return os.environ.get("FREEBIND_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def command_name(ctx) -> str:
    """``freebind embed`` (``freebind mini pools``) from a click context, whatever the
    program was called (``python -m freebind_cli.main``, a test runner)."""
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["freebind", *[n for n in reversed(names[:-1]) if n]])


def one_line(text: str) -> str:
    """``text`` on one line: its lines joined with '; ', blank ones dropped."""
    return "; ".join(s.strip() for s in str(text).splitlines() if s.strip())


def _click_line(exc, ctx) -> str:
    where = command_name(getattr(exc, "ctx", None) or ctx)
    message = one_line(exc.format_message()).rstrip(".")
    message = message[:1].lower() + message[1:] if message[:2] != message[:2].upper() \
        else message
    hint = f" (see '{where} --help')" if isinstance(exc, click_exceptions.UsageError) else ""
    return f"error: {where}: {message}{hint}"


def report(exc: BaseException, ctx=None) -> int:
    """Print ``exc`` as the user should see it (stderr) and return the exit status."""
    from freebind.util.errors import FreebindError

    if debugging() and not isinstance(exc, KeyboardInterrupt):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, KeyboardInterrupt):
        typer.echo("interrupted; run the same command again to resume", err=True)
        return INTERRUPTED
    if isinstance(exc, FreebindError):
        typer.echo(exc.render(), err=True)
        return exc.exit_code
    if isinstance(exc, click_exceptions.NoArgsIsHelpError):  # `freebind mini`: its help
        exc.show()
        return exc.exit_code
    if isinstance(exc, click_exceptions.ClickException):
        typer.echo(_click_line(exc, ctx), err=True)
        return exc.exit_code
    if isinstance(exc, BrokenPipeError):  # `freebind … | head`: the reader left
        return FAILED
    verb = getattr(ctx, "invoked_subcommand", None)
    where = command_name(ctx) + (f" {verb}" if verb else "") if ctx is not None else ""
    what = "an unexpected error" + (f" in {where}" if where else "")
    detail = one_line(str(exc)) or "(no message)"
    hint = "" if debugging() else "; FREEBIND_DEBUG=1 shows the traceback"
    typer.echo(f"error: {what}: {type(exc).__name__}: {detail}{hint}", err=True)
    return FAILED


def guarded(call, ctx=None) -> Optional[object]:
    """``call()``; any exception other than an exit becomes :func:`report`'s line and a
    ``typer.Exit`` with its status."""
    try:
        return call()
    except (typer.Exit, typer.Abort):
        raise
    except (Exception, KeyboardInterrupt) as exc:  # the boundary: nothing gets past
        raise typer.Exit(code=report(exc, ctx)) from None
