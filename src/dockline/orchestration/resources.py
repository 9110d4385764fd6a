"""The data directory as a Dagster resource: every asset, sensor and schedule opens its
:class:`~dockline.pipeline.platform.Platform` through it."""

# No `from __future__ import annotations`: Dagster resolves the config and resource
# parameters' annotations as objects when the definitions load.
from datetime import UTC, datetime

from dagster import ConfigurableResource
from pydantic import Field

from dockline.core.errors import ConfigError
from dockline.core.time import FixedClock, ensure_utc
from dockline.pipeline.platform import Platform

__all__ = ["DocklineResource", "parse_utc"]


def parse_utc(value: str, what: str) -> datetime:
    """An ISO-8601 time from run config, UTC when naive; a bad one is a :class:`ConfigError`
    naming ``what``."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{what} must be an ISO-8601 time; got {value!r}", reason="bad_time"
        ) from None
    return ensure_utc(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


class DocklineResource(ConfigurableResource):
    """Where dockline's state lives, and optionally the moment to evaluate at."""

    data_dir: str | None = Field(
        default=None,
        description="Data directory (default $DOCKLINE_DATA_DIR, else ./.dockline), as the CLI.",
    )
    at: str | None = Field(
        default=None,
        description="Evaluate as of this time (ISO-8601, UTC when naive) instead of the"
        " data dir's clock: replays and backfills.",
    )

    def moment(self) -> datetime | None:
        """``at`` as a UTC datetime, or None for the configured clock."""
        return None if self.at is None else parse_utc(self.at, "DocklineResource.at")

    def platform(self, *, existing: bool = True) -> Platform:
        """The platform of the data directory; ``existing`` refuses one that holds no state
        (as the CLI's reading commands do) instead of creating an empty one."""
        at = self.moment()
        return Platform.open(
            self.data_dir, clock=None if at is None else FixedClock(at), existing=existing
        )
