"""``dockline ui``: the dashboard, served by the serving app at ``/ui``.

The dashboard reads only the serving app's JSON, so ``dockline ui`` runs that app (one worker)
and says where to point a browser. Without a champion it still starts: every read-only page
works, and a station page shows the API's reason (``no_model``) where the live prediction
would be. Registered by the root app with ``app.command("ui")(_ui.ui)``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dockline.cli._common import DataDirOpt, ProjectOpt, open_platform
from dockline.cli._output import err_console

__all__ = ["ui"]


def ui(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: config serve.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: config serve.port).")] = None,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the dashboard (station map, health, drift, performance, models, lineage) at /ui.

    It is the serving app (the same /v1 APIs, one worker); Ctrl-C stops it.

    Examples:
      dockline --data-dir .dockline-demo ui
      dockline ui --host 127.0.0.1 --port 8080
    """
    import os

    from dockline.cli._serve import startup_lines
    from dockline.pipeline.features import PROJECT_ENV, project_path
    from dockline.pipeline.serve import run_server
    from dockline.ui import UI_PATH

    platform = open_platform(data_dir)
    if project is not None:
        os.environ[PROJECT_ENV] = str(project_path(platform, project)[0].resolve())
    config = platform.config.serve
    bind_host, bind_port = host or config.host, config.port if port is None else port
    for line in startup_lines(platform):
        err_console.print(line, markup=False)
    shown = "127.0.0.1" if bind_host in ("0.0.0.0", "::") else bind_host
    # on stdout, alone on its line: scripts (and the tests) read the address from here
    typer.echo(f"dashboard: http://{shown}:{bind_port}{UI_PATH}/")
    err_console.print("Ctrl-C stops", markup=False)
    run_server(platform, bind_host, bind_port, 1)
