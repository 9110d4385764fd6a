"""``dockline serve``: the champion over HTTP, and what it can answer, said at start."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Annotated

import typer

from dockline.cli._common import DataDirOpt, ProjectOpt, open_platform
from dockline.cli._config import format_value
from dockline.cli._output import err_console
from dockline.core.time import from_micros, to_micros

if TYPE_CHECKING:
    from dockline.pipeline.platform import Platform


def _online_entities(platform: Platform) -> str:
    """How many entities the online store can answer, and how many of them are fresh."""
    config = platform.config
    if config.online.kind != "sqlite":
        return f"online store: {config.online.kind} at {config.online.url}"
    path = platform.data.online_sqlite
    if not path.exists():
        return "the online store is empty: run `dockline features materialize` first"
    now_us = to_micros(platform.clock.now())
    fresh_after = now_us - int(config.serve.max_feature_age.total_seconds() * 1_000_000)
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as con:
        entities, fresh, newest = con.execute(
            "SELECT count(*), coalesce(sum(newest >= ?), 0), max(newest) FROM"
            " (SELECT max(as_of_us) AS newest FROM vectors GROUP BY entity)",
            (fresh_after,),
        ).fetchone()
    if not entities:
        return "the online store is empty: run `dockline features materialize` first"
    age = from_micros(now_us) - from_micros(int(newest))
    max_age = format_value(config.serve.max_feature_age)
    return (
        f"{entities:,} entities in the online store, {fresh:,} with features fresher than"
        f" serve.max_feature_age ({max_age}); newest features as of"
        f" {from_micros(int(newest)).isoformat(timespec='seconds')}"
        f" ({age.total_seconds() / 3600:,.1f} h before the serving clock)"
    )


def startup_lines(platform: Platform) -> list[str]:
    """What the server will answer with: the champion's name and version, the entities."""
    from dockline.pipeline.serve import model_name
    from dockline.pipeline.train import open_registry
    from dockline.train.registry import CHAMPION

    name = model_name(platform)
    champion = open_registry(platform).peek(name, CHAMPION)
    if champion is None:
        model = (
            f"no {CHAMPION} for model {name} yet: /v1/predict answers 503 until one is"
            " promoted (`dockline train --promote` or `dockline models promote`)"
        )
    else:
        model = f"model {name} version {champion.version} ({CHAMPION}, bundle {champion.bundle_id})"
    return [model, _online_entities(platform)]


def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface (default: config serve.host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: config serve.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: config serve.workers).")
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every request on stderr.")
    ] = False,
    project: ProjectOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve the champion: /v1/predict, /v1/predict/batch, /health, /ready, /metrics, /docs.

    Examples:
      dockline --data-dir .dockline-demo serve
      dockline serve --port 8000 --workers 2 --access-log
    """
    from dockline.pipeline.features import PROJECT_ENV, project_path
    from dockline.pipeline.serve import run_server

    platform = open_platform(data_dir)
    if project is not None:
        # The workers are separate processes that read the data dir: hand the project on.
        os.environ[PROJECT_ENV] = str(project_path(platform, project)[0].resolve())
    config = platform.config.serve
    bind_host, bind_port = host or config.host, config.port if port is None else port
    for line in startup_lines(platform):
        err_console.print(line, markup=False)
    err_console.print(f"serving on http://{bind_host}:{bind_port} (OpenAPI at /docs); Ctrl-C stops")
    run_server(platform, bind_host, bind_port, workers or config.workers, access_log=access_log)
