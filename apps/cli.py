"""``diag serve``: the Panel app. Only typer at import time, so the CLI starts fast."""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5006,
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps the app private to this machine.")]
    = "127.0.0.1",
    allow_origin: Annotated[list[str] | None, typer.Option(
        help="Extra HOST:PORT allowed to open the app's websocket (e.g. when reached through a proxy).")] = None,
) -> None:
    """Serve the Panel app: Runs page and one page per analysis, reports at /report/RUN_ID."""
    from apps.server import serve as serve_app

    serve_app(port=port, host=host, origins=allow_origin)
