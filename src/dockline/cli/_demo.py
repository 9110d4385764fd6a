"""``dockline demo`` and ``dockline init``: a first run and a first project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dockline.cli._common import DataDirOpt, JsonOpt, open_platform, want_json
from dockline.cli._output import console, unwrap_piped_consoles
from dockline.core.errors import ConfigError


def demo(
    stations: Annotated[int, typer.Option(help="Stations in the simulated city.")] = 200,
    hours: Annotated[float, typer.Option(help="Simulated hours to ingest live.")] = 4.0,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 900.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    history_days: Annotated[
        float, typer.Option(help="Days of history imported first (what the model learns from).")
    ] = 7.0,
    train: Annotated[
        bool, typer.Option(help="Train and register a champion on the history.")
    ] = True,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The whole loop on a simulated city with embedded defaults; prints where to look.

    It needs a new (or empty) data dir: the city starts at the same instant every run.

    Examples:
      dockline demo --data-dir .dockline-demo
      dockline demo --data-dir /tmp/quick --stations 50 --history-days 3 --no-train
    """
    from dockline.pipeline.demo import run_demo

    json_out = want_json(json_out)
    unwrap_piped_consoles(stderr=json_out)  # the demo's report goes where its console writes
    run_demo(
        open_platform(data_dir, existing=False),
        stations=stations,
        hours=hours,
        speed=speed,
        seed=seed,
        history_days=history_days,
        train=train,
        json_out=json_out,
    )


def init(
    path: Annotated[Path, typer.Argument(help="Directory to create the project in.")],
) -> None:
    """Scaffold a project (project.py) from the bike-share reference project.

    Examples:
      dockline init my-city
      dockline features materialize --project my-city   # recorded: later commands use it
    """
    import shutil

    from dockline.pipeline.features import EXAMPLE_PROJECT

    source = EXAMPLE_PROJECT
    target = path / "project.py"
    if target.exists():
        raise ConfigError("a project already exists there", where=str(target))
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "project.py", target)
    console.print(f"created {target}; point dockline at it with --project {path}")
