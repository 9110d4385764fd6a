"""What defines a simulated city and what it reports: its config, truck moves, run metrics, the
hour's weather and the published station status (re-exported by :mod:`dockline.sim.city`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc
from dockline.sim.calibrate import CalibratedCity
from dockline.sim.faults import FaultConfig

__all__ = ["CityConfig", "CityMetrics", "Move", "StationStatus", "Weather"]


@dataclass(frozen=True, slots=True)
class CityConfig:
    """Everything that defines a simulated city; same config ⇒ same trajectory.

    ``trips_per_station_hour`` is the mean departure rate of an average station at an
    hour-of-week multiplier of 1 in fair weather; ``maintenance_per_station_day`` the chance a
    station goes out of service for a few hours on a given day.
    """

    stations: int = 300
    seed: int = 0
    start: datetime = datetime(2024, 5, 6, 5, tzinfo=UTC)  # Monday 00:00 in Chicago
    tz: str = "America/Chicago"
    step: timedelta = timedelta(minutes=1)
    faults: FaultConfig = field(default_factory=FaultConfig)
    trips_per_station_hour: float = 1.2
    initial_fill: tuple[float, float] = (0.3, 0.7)
    maintenance_per_station_day: float = 0.02
    system_id: str = "dockline_sim"
    system_name: str = "dockline simulated city"
    common_random_numbers: bool = False
    """Draw the randomness of every attempted trip, taken or failed, so the random stream does
    not depend on the bikes: runs that differ only in truck moves then see the same riders
    (policy evaluation). Off, a seed keeps the trajectory it always had."""
    calibrated: CalibratedCity | None = field(default=None, compare=False)
    """A city fitted to real data (:mod:`dockline.sim.calibrate`): its stations, positions,
    capacities and bikes replace the generated layout, and each station's own hour-of-week
    departure rates replace the zone model (no weather factor: the rates already average the
    fitted months' weather); a trip's destination is drawn in proportion to the stations'
    arrival rates that hour. ``stations`` is set to its station count. None: the generated city."""

    def __post_init__(self) -> None:
        if self.calibrated is not None:
            object.__setattr__(self, "stations", self.calibrated.n)
            object.__setattr__(self, "tz", self.calibrated.tz)
        if not 1 <= self.stations <= 100_000:
            raise ConfigError(f"stations must be in [1, 100000]; got {self.stations}")
        object.__setattr__(self, "start", ensure_utc(self.start).replace(microsecond=0))
        if self.step <= timedelta(0) or self.step.total_seconds() % 1 != 0:
            raise ConfigError(f"step must be a positive whole number of seconds; got {self.step}")
        try:
            ZoneInfo(self.tz)
        except Exception as exc:  # ZoneInfoNotFoundError, ValueError for malformed keys
            raise ConfigError(f"tz must be an IANA time zone; got {self.tz!r}") from exc
        if self.trips_per_station_hour < 0:
            raise ConfigError(
                f"trips_per_station_hour must be >= 0; got {self.trips_per_station_hour}"
            )
        low, high = self.initial_fill
        if not 0.0 <= low <= high <= 1.0:
            raise ConfigError(f"initial_fill must be 0 <= low <= high <= 1; got {low, high}")


class Move(NamedTuple):
    """A truck move: take up to ``bikes`` bikes from one station to another."""

    from_station: str
    to_station: str
    bikes: int


@dataclass(slots=True)
class CityMetrics:
    """Cumulative scores of a run: what a rebalancing policy is judged on."""

    steps: int = 0
    empty_station_minutes: int = 0
    full_station_minutes: int = 0
    failed_rentals: int = 0
    diverted_returns: int = 0
    trips_started: int = 0
    trips_ended: int = 0
    moves: int = 0
    bikes_moved: int = 0
    truck_km: float = 0.0
    truck_diverted: int = 0

    def as_dict(self) -> dict[str, int | float]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Weather:
    """The weather during the current hour."""

    temp_c: float
    precip_mm: float


@dataclass(frozen=True, slots=True)
class StationStatus:
    """Status of every station at ``time`` (arrays indexed like :attr:`City.station_ids`)."""

    time: datetime
    last_reported: np.ndarray  # int64 POSIX seconds, <= time (per-station jitter)
    num_bikes_available: np.ndarray
    num_docks_available: np.ndarray
    num_docks_disabled: np.ndarray
    is_installed: np.ndarray
    is_renting: np.ndarray
    is_returning: np.ndarray
