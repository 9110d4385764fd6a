"""``dockline serve``: the champion over HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from dockline.cli._common import open_platform
from dockline.cli._output import err_console


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: config serve.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: config serve.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: config serve.workers).")
    ] = None,
) -> None:
    """Serve the champion: /v1/predict, /v1/predict/batch, /health, /ready, /metrics, /docs.

    Example: dockline serve --port 8000 --workers 2
    """
    from dockline.pipeline.serve import run_server

    platform = open_platform()
    config = platform.config.serve
    bind_host, bind_port = host or config.host, config.port if port is None else port
    err_console.print(f"serving on http://{bind_host}:{bind_port} (OpenAPI at /docs); Ctrl-C stops")
    run_server(platform, bind_host, bind_port, workers or config.workers)
