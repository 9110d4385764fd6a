"""What every command shares: global options, the data dir, durations, times, JSON mode.

``--data-dir`` and ``--json`` are accepted before the subcommand (``dockline --json models
list``) and after it (``dockline models list --json``), as git, dbt and mlflow users expect; the
value after the subcommand wins.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dockline.core.config import DATA_DIR_ENV
from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc, parse_duration

if TYPE_CHECKING:
    from dockline.pipeline.platform import Platform

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON object instead of tables (errors too).")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help=f"Directory holding all state (default ${DATA_DIR_ENV}, else ./.dockline).",
        show_default=False,
    ),
]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(
        help="Project directory or file (default: the one the data dir records, else the"
        " bike-share example). The first one given is recorded in the data dir.",
        show_default=False,
    ),
]


class State:
    """Options given before the subcommand (``dockline --data-dir D --json COMMAND``)."""

    data_dir: Path | None = None
    data_dir_source: str = "default"
    """Where ``data_dir`` came from: ``flag`` or ``env`` (``$DOCKLINE_DATA_DIR``)."""
    json: bool = False


def want_json(flag: bool) -> bool:
    """JSON output: ``--json`` after the subcommand or before it."""
    return flag or State.json


def open_platform(data_dir: Path | None = None, *, existing: bool = True) -> Platform:
    """The platform of the chosen data dir.

    ``existing`` (commands that read state): refuse a data dir that does not exist or holds no
    dockline state, rather than creating an empty one by mistake.
    """
    from dockline.pipeline.platform import Platform  # imported lazily: keeps `--help` fast

    return Platform.open(data_dir or State.data_dir, existing=existing)


_BARE_NUMBER = re.compile(r"\s*\d+(\.\d*)?\s*")


def parse_cli_duration(value: str, option: str) -> timedelta:
    """A duration option; the unit is required (``--every 5`` is refused: 5s? 5m?)."""
    if _BARE_NUMBER.fullmatch(value):
        number = value.strip()
        raise ConfigError(
            f"{option} needs a unit; got {value!r} ({number}s? {number}m? {number}h?)",
            reason="bad_duration",
        )
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}", reason="bad_duration") from None


def parse_start(value: str | None) -> datetime | None:
    """``--start`` of the simulator: ISO-8601, UTC when naive."""
    return parse_time(value, "--start")


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO-8601 time option, UTC when naive."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be an ISO-8601 time; got {value!r}") from None
    return ensure_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


def group_platform(ctx: typer.Context) -> Platform:
    """The platform of a command group's ``--data-dir`` (else the root's), opened as it is:
    monitoring and lineage read what is there and never create a data dir."""
    from dockline.core.config import DataDir, resolve_data_dir
    from dockline.pipeline.platform import Platform, configured_clock

    data_dir = ctx.obj if isinstance(ctx.obj, Path) else None
    if data_dir is None:
        root = ctx.find_root().params.get("data_dir")
        data_dir = Path(root) if root else None
    data = DataDir(resolve_data_dir(data_dir))
    config = data.config()
    return Platform(data=data, config=config, clock=configured_clock(data, config))
