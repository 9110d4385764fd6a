"""What every command shares: the data-dir state, common options, time parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc

if TYPE_CHECKING:
    from dockline.pipeline.platform import Platform

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
ProjectOpt = Annotated[
    Path | None,
    typer.Option(help="Project directory or file (default: features.project in dockline.toml)."),
]


class State:
    """Options given before the subcommand (``dockline --data-dir D COMMAND``)."""

    data_dir: Path | None = None


def open_platform() -> Platform:
    """The platform of the chosen data dir."""
    from dockline.pipeline.platform import Platform  # imported lazily: keeps `--help` fast

    return Platform.open(State.data_dir)


def parse_start(value: str | None) -> datetime | None:
    """``--start`` of the simulator: ISO-8601, UTC when naive."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--start must be an ISO-8601 time; got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return ensure_utc(parsed)


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO-8601 time option, UTC when naive."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option} must be an ISO-8601 time; got {value!r}") from None
    return ensure_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
