"""``freebind api [TARGET]``: an OpenAI-compatible embeddings endpoint over a space or a
bundle (:mod:`freebind.serve.embeddings_api`)."""

from __future__ import annotations

from typing import List, Optional

import typer

from freebind_cli.options import AccessFlags, SpaceFlags, batch_size_option, with_flag_groups


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
    batch_window: float = typer.Option(5.0, "--batch-window", min=0.0, max=1000.0,
                                       help="Milliseconds a batch waits for requests that "
                                            "arrive together."),
    max_batch: int = typer.Option(64, "--max-batch", min=1, help="Most inputs encoded in "
                                  "one batch of requests."),
    max_seconds: float = typer.Option(600.0, "--max-seconds", min=0.1,
                                      help="Longest audio input, in seconds (checked in the "
                                           "header before decoding)."),
    access: AccessFlags = ...,
    space_flags: SpaceFlags = ...,
) -> None:
    """Serve POST /v1/embeddings and GET /v1/models in the OpenAI format: text, plus audio
    and images as data URLs or base64 objects; factors and presets as extension fields."""
    from freebind.data.audio_limits import AudioLimits
    from freebind.serve.auth import KeyRing, check_exposure
    from freebind.serve.embeddings_api import require_packages, serve
    from freebind.run.targets import open as open_target
    from freebind.serve.localhost import check_bind_host

    require_packages()
    check_bind_host(host)
    keys = access.keys()
    warning = check_exposure(host, KeyRing(keys), access.no_auth)
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
                   f"({_keys_line(keys)}; Ctrl-C stops)", err=True)

    serve(resolved, host=host, port=port, model=model, allowed_hosts=allowed_host,
          max_body=max_body * 1024 * 1024, batch_size=batch_size, on_start=started,
          keys=keys, no_auth=access.no_auth, open_ops=access.public_health,
          window=batch_window / 1000.0, max_batch=max_batch,
          audio_limits=AudioLimits(max_seconds=max_seconds))


def _keys_line(keys) -> str:
    """How many keys guard the server (never the keys)."""
    return f"{len(keys)} API key{'s' if len(keys) != 1 else ''}" if keys else "no API key"


def register(app: typer.Typer) -> None:
    app.command("api")(api_command)
