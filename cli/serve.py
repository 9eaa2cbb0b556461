"""``freebind serve INDEX [--port 8765]``: the search page and JSON API on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from freebind_cli.options import AccessFlags, SpaceFlags, with_flag_groups


@with_flag_groups
def serve_command(
    index_dir: Path = typer.Argument(..., help="An index folder (`freebind index`)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but "
                             "a loopback address lets other machines reach the index's "
                             "files (name the host names they use with --allowed-host)."),
    allowed_host: List[str] = typer.Option([], "--allowed-host", help="A Host name the "
                                           "server answers to besides this machine's "
                                           "(repeatable; `.example.org` takes its "
                                           "subdomains too; `*` any name, unsafe)."),
    max_upload: int = typer.Option(50, "--max-upload", min=1, help="Largest upload, in MB."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1,
                                   help="Largest uploaded image, in pixels (checked before "
                                        "decoding)."),
    max_seconds: float = typer.Option(600.0, "--max-seconds", min=0.1,
                                      help="Longest uploaded audio, in seconds."),
    access: AccessFlags = ...,
    space_flags: SpaceFlags = ...,
) -> None:
    """Serve a search page: a query box, audio/image upload, a result grid with thumbnails and
    players, a modality filter, a preset menu and one slider per bond factor."""
    from freebind.serve.auth import KeyRing, check_exposure
    from freebind.serve.search_server import require_packages, serve
    from freebind.serve.localhost import WILDCARDS, check_bind_host

    require_packages()
    options = space_flags.parse()
    check_bind_host(host)
    keys = access.keys()
    warning = check_exposure(host, KeyRing(keys), access.no_auth)
    if warning:
        typer.echo(f"{warning} (the index's audio and image files included)", err=True)
    if "*" in allowed_host:
        typer.echo("warning: --allowed-host '*' answers to any Host name, which lets other "
                   "web sites reach this server through DNS rebinding", err=True)
    shown = "127.0.0.1" if host.strip("[]") in WILDCARDS else host

    def started(index):
        typer.echo(f"freebind serve: {index.name} · {len(index.items)} items → "
                   f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/  "
                   f"({len(keys) or 'no'} API key{'s' if len(keys) != 1 else ''}; "
                   f"Ctrl-C stops)", err=True)

    serve(index_dir, host=host, port=port, max_upload=max_upload * 1024 * 1024,
          space_options=options, on_start=started, allowed_hosts=allowed_host,
          max_pixels=max_pixels, max_seconds=max_seconds, keys=keys,
          no_auth=access.no_auth, open_ops=access.public_health)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
