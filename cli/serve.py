"""``freebind serve INDEX [--port 8765]``: the search page and JSON API on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from freebind_cli.common import device_option, parse_space_options, precision_option, \
    space_option_option


def serve_command(
    index_dir: Path = typer.Argument(..., help="An index folder (`freebind index`)."),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything but "
                             "127.0.0.1/localhost lets other machines reach the index's "
                             "files."),
    max_upload: int = typer.Option(50, "--max-upload", min=1, help="Largest upload, in MB."),
    device: Optional[str] = device_option(),
    precision: Optional[str] = precision_option(),
    space_option: List[str] = space_option_option(),
) -> None:
    """Serve a search page: a query box, audio/image upload, a result grid with thumbnails and
    players, a modality filter, a preset menu and one slider per bond factor."""
    from freebind.search.serve import is_local, require_packages, serve

    require_packages()
    options = parse_space_options(device, precision, space_option)
    if not is_local(host):
        typer.echo(f"warning: listening on {host}: every machine that can reach it can search "
                   f"the index and fetch its audio and image files", err=True)

    def started(index):
        typer.echo(f"freebind serve: {index.name} · {len(index.items)} items → "
                   f"http://{'[' + host + ']' if ':' in host else host}:{port}/  (Ctrl-C stops)",
                   err=True)

    serve(index_dir, host=host, port=port, max_upload=max_upload * 1024 * 1024,
          space_options=options, on_start=started)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
