"""The ``freebind`` command: one module per verb under ``cli/``, each with ``register(app)``.

Nothing heavy is imported here: verbs import torch and encoders inside their functions, so
``freebind --help`` stays instant."""

from __future__ import annotations

import importlib

import typer

from freebind_cli.common import FreebindGroup

#: Verb modules, in the order ``freebind --help`` lists them.
VERBS = ["plan", "spaces", "info", "build", "embed", "import", "eval", "tune", "index", "search",
         "serve", "download", "convert", "push", "export", "api", "mini"]
#: verbs whose module has another name (``import`` is a Python keyword)
_MODULES = {"import": "importing"}

app = typer.Typer(
    cls=FreebindGroup,
    name="freebind",
    help="Bind pretrained multimodal embedding spaces with space bonds (FreeBind).",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                 is_eager=True),
) -> None:
    if version:
        from freebind.util.version import __version__

        typer.echo(f"freebind {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


for _verb in VERBS:
    importlib.import_module(f"freebind_cli.{_MODULES.get(_verb, _verb)}").register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
