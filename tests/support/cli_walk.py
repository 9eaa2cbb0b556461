"""Every leaf command of the CLI, read from the CLI itself (for tests that go through each
verb's help or each option)."""

from __future__ import annotations

import typer

from freebind_cli.main import app


def commands() -> list[tuple[list[str], object, object]]:
    """``(path, click command, context)`` of every leaf command (``["mini", "pools"]`` …)."""
    out = []

    def walk(cmd, path):
        ctx = cmd.make_context(path[-1] if path else "freebind", [], resilient_parsing=True)
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])
        else:
            out.append((path, cmd, ctx))

    walk(typer.main.get_command(app), [])
    return out
