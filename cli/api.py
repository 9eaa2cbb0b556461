"""``freebind api [TARGET]``: an OpenAI-compatible embeddings endpoint over a space or a
bundle (:mod:`freebind.serve.embeddings_api`)."""

from __future__ import annotations

from typing import List, Optional

import typer

from freebind_cli.options import SpaceFlags, batch_size_option, with_flag_groups


@with_flag_groups
def api_command(
    target: Optional[str] = typer.Argument(None, help="A space, a bundle (bundle@preset) or "
                                           "hf:ORG/NAME; default: the last build's bundle, "
                                           "or the only one here."),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but "
                             "a loopback address lets other machines use the space."),
    allowed_host: List[str] = typer.Option([], "--allowed-host", metavar="NAME",
                                           help="Another Host name to answer to (a proxy's; "
                                                ".example.org for a domain); repeatable."),
    model: Optional[str] = typer.Option(None, "--model", help="The model id clients send "
                                        "(default: the target's label)."),
    max_body: int = typer.Option(25, "--max-body", min=1, help="Largest request body, in MB."),
    batch_size: int = batch_size_option(32),
    space_flags: SpaceFlags = ...,
) -> None:
    """Serve POST /v1/embeddings and GET /v1/models in the OpenAI format: text, plus audio
    and images as data URLs or base64 objects; factors and presets as extension fields."""
    from freebind.serve.embeddings_api import require_packages, serve
    from freebind.run.targets import open as open_target
    from freebind.serve.localhost import check_bind_host

    require_packages()
    warning = check_bind_host(host)
    if warning:
        typer.echo(warning, err=True)
    if target is None:
        from freebind.run.implicit import default_target

        found = default_target()
        typer.echo(found.describe("serving"), err=True)
        target = found.value
    resolved = open_target(target, space_options=space_flags.parse())

    def started(service):
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"freebind api: {service.model} ({service.target.dim}-d, "
                   f"{', '.join(service.target.modalities)}) → http://{shown}:{port}/v1  "
                   f"(Ctrl-C stops)", err=True)

    serve(resolved, host=host, port=port, model=model, allowed_hosts=allowed_host,
          max_body=max_body * 1024 * 1024, batch_size=batch_size, on_start=started)


def register(app: typer.Typer) -> None:
    app.command("api")(api_command)
