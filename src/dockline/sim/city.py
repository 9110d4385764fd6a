"""A seeded, vectorized bike-share city: stations, demand, trips, weather, trucks.

Every step (one simulated minute) updates all stations at once with NumPy: bikes arriving from
trips in flight dock (or divert to the nearest free dock when full), new trips start by an
inhomogeneous Poisson process (zone × hour-of-week × weather) and fail when the station is
empty, and trucks deliver. Only rare events (diversions, truck moves) loop in Python.

>>> from datetime import UTC
>>> city = City(CityConfig(stations=50, seed=1, start=datetime(2024, 5, 6, 12, tzinfo=UTC)))
>>> city.run(60).failed_rentals >= 0
True
>>> city.time.isoformat()
'2024-05-06T13:00:00+00:00'
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np

from dockline.core.errors import NotFoundError, ValidationError
from dockline.core.time import from_micros, to_micros
from dockline.sim._demand import (
    HOUR_DEST_CUM,
    WeatherProcess,
    calibrated_hour,
    destination_weights,
    expected_flows,
    weather_factor,
    zone_hour,
)
from dockline.sim._layout import BUSINESS as BUSINESS
from dockline.sim._layout import CENTER as CENTER
from dockline.sim._layout import DETOUR, ZONES, build_layout, distance_km, nearest
from dockline.sim._layout import LEISURE as LEISURE
from dockline.sim._layout import RESIDENTIAL as RESIDENTIAL
from dockline.sim._records import CityConfig, CityMetrics, Move, StationStatus, Weather

# Also importable from here, as before the split: BUSINESS, CENTER, LEISURE, RESIDENTIAL
# (imported ``X as X``, which marks them re-exported for mypy).
__all__ = [
    "ZONES",
    "City",
    "CityConfig",
    "CityMetrics",
    "Move",
    "StationStatus",
    "Weather",
    "weather_factor",
]

_RING = 256  # steps a trip or diversion can stay in flight; a power of two for cheap modulo
_HISTORY = 64  # steps of past counts kept (out-of-order faults republish old counts)
_BIKE_KMH = 14.0
_TRUCK_KMH = 20.0
_TRUCK_HANDLING_MIN = 5.0


class City:
    """The simulated city. ``step()`` advances one step for all stations; ``run(n)`` n steps.

    State (bikes per station, trips in flight, truck loads) only changes through ``step`` and
    ``apply_moves``; the number of bikes in the system never changes.
    """

    def __init__(self, config: CityConfig) -> None:
        self.config = config
        n = config.stations
        self.n = n
        seeds = np.random.SeedSequence(config.seed).spawn(3)
        layout = np.random.Generator(np.random.PCG64(seeds[0]))
        self._rng = np.random.Generator(np.random.PCG64(seeds[1]))
        self._weather_process = WeatherProcess(np.random.Generator(np.random.PCG64(seeds[2])))
        self._tz = ZoneInfo(config.tz)
        self._step_us = int(config.step.total_seconds()) * 1_000_000
        self._step_min = config.step.total_seconds() / 60.0

        lay = build_layout(config, layout)
        zone = self.zone = lay.zone
        self.lat, self.lon = lay.lat, lay.lon
        self._x, self._y = lay.x, lay.y
        self.capacity = lay.capacity
        self.docks_disabled = lay.docks_disabled
        self.bikes = lay.bikes
        self._popularity = lay.popularity
        self._jitter_s = lay.jitter_s
        self.names = lay.names
        self.station_ids = lay.station_ids
        self._index = {sid: i for i, sid in enumerate(self.station_ids)}

        # Destination sampling: stations sorted by zone; zone z owns the interval [z, z + 1).
        self._zone_present = np.bincount(zone, minlength=3) > 0
        self._dest_order, self._dest_cumw = destination_weights(zone, self._popularity)
        self._neighbors = nearest(self._x, self._y, min(n - 1, 16))

        self.is_installed = np.ones(n, dtype=bool)
        self.is_renting = np.ones(n, dtype=bool)
        self._service_until = np.zeros(n, dtype=np.int64)  # step at which maintenance ends

        self._arange = np.arange(n)
        self._ring = np.zeros((_RING, n), dtype=np.int64)
        self._ring_flat = self._ring.reshape(-1)
        self._trucks: list[tuple[int, int, int, int]] = []  # (due step, seq, station, bikes)
        self._truck_seq = 0
        self._truck_load = 0
        self._pending: dict[int, int] = {}  # station -> bikes that found no free dock anywhere
        self._hist_bikes = np.zeros((_HISTORY, n), dtype=np.int64)
        self._hist_docks = np.zeros((_HISTORY, n), dtype=np.int64)

        self.metrics = CityMetrics()
        self.zone_flows = np.zeros((3, 3), dtype=np.int64)  # trips started, origin × dest zone
        self.step_index = 0
        self._now_us = to_micros(config.start)
        self._next_refresh_us = self._now_us
        self.weather = Weather(temp_c=15.0, precip_mm=0.0)
        self._lam = np.zeros(n)
        self.last_failed = np.zeros(n, dtype=np.int64)  # failed rentals per station, last step
        self.last_demand = np.zeros(n, dtype=np.int64)  # rentals attempted per station, last step
        self._no_arrivals = np.zeros(n, dtype=np.int64)
        self.last_arrivals = self._no_arrivals  # returns attempted per station, last step
        self._step_hooks: list[Callable[[int], None]] = []
        self._dest_cum_now = HOUR_DEST_CUM[0]
        self._refresh_hour()
        self._record_history()

    # -- public API --------------------------------------------------------------------------

    @property
    def time(self) -> datetime:
        """Simulated time of the current state (UTC)."""
        return from_micros(self._now_us)

    @property
    def time_s(self) -> int:
        """Simulated time of the current state, POSIX seconds."""
        return self._now_us // 1_000_000

    @property
    def docks_available(self) -> np.ndarray:
        """Free working docks per station (capacity - bikes - disabled docks)."""
        free: np.ndarray = self.capacity - self.bikes - self.docks_disabled
        return free

    @property
    def is_returning(self) -> np.ndarray:
        """Whether each station accepts returns (same as renting: maintenance closes both)."""
        return self.is_renting

    @property
    def bikes_in_flight(self) -> int:
        """Bikes ridden right now (trips and diversions not yet docked)."""
        return int(self._ring.sum()) + sum(self._pending.values())

    @property
    def bikes_in_trucks(self) -> int:
        """Bikes loaded on trucks, not yet delivered."""
        return self._truck_load

    def total_bikes(self) -> int:
        """Bikes in docks + in flight + in trucks; constant for the life of the city."""
        return int(self.bikes.sum()) + self.bikes_in_flight + self._truck_load

    def index_of(self, station_id: str) -> int:
        """Position of ``station_id`` in the station arrays."""
        try:
            return self._index[station_id]
        except KeyError:
            raise NotFoundError(
                f"station {station_id!r} does not exist", reason="unknown_entity"
            ) from None

    def run(self, steps: int) -> CityMetrics:
        """Advance ``steps`` steps; returns the cumulative metrics."""
        for _ in range(steps):
            self.step()
        return self.metrics

    def run_until(self, when: datetime) -> int:
        """Advance while the next step ends at or before ``when``; returns steps taken."""
        target = to_micros(when)
        taken = 0
        while self._now_us + self._step_us <= target:
            self.step()
            taken += 1
        return taken

    def step(self) -> None:
        """Advance one step: arrivals dock, trucks deliver, trips start, metrics count."""
        if self._now_us >= self._next_refresh_us:
            self._refresh_hour()
        for hook in self._step_hooks:
            hook(self.step_index)
        slot = self.step_index & (_RING - 1)
        arriving = self._ring[slot]
        self.last_arrivals = self._no_arrivals
        if arriving.any():
            arrivals = arriving.copy()
            arriving[:] = 0
            self.last_arrivals = arrivals
            self.metrics.trips_ended += int(arrivals.sum())
            self._dock(arrivals)
        if self._trucks and self._trucks[0][0] <= self.step_index:
            self._deliver_trucks()
        if self._pending:
            pending, self._pending = self._pending, {}
            for station, count in pending.items():
                self._divert(station, count)
        demand = self._rng.poisson(self._lam)
        taken = np.minimum(demand, self.bikes * self.is_renting)
        started = int(taken.sum())
        wanted = int(demand.sum())
        self.last_demand = demand
        self.last_failed = demand - taken
        self.metrics.failed_rentals += wanted - started
        if self.config.common_random_numbers and wanted:
            # Every attempted trip's randomness, used or not: the stream ignores the bikes.
            u = self._rng.random((3, wanted))
            if started:
                self.bikes -= taken
                if started < wanted:
                    first = np.repeat(np.cumsum(demand) - demand, demand)
                    u = u[:, (np.arange(wanted) - first) < np.repeat(taken, demand)]
                self._start_trips(taken, started, u)
        elif started:
            self.bikes -= taken
            self._start_trips(taken, started, self._rng.random((3, started)))
        self.step_index += 1
        self._now_us += self._step_us
        bikes = self.bikes
        self.metrics.steps += 1
        self.metrics.empty_station_minutes += int(np.count_nonzero(bikes == 0))
        self.metrics.full_station_minutes += int(
            np.count_nonzero(bikes + self.docks_disabled >= self.capacity)
        )
        self._record_history()

    def apply_moves(
        self, moves: Iterable[Move | tuple[str, str, int]], *, immediate: bool = False
    ) -> list[int]:
        """Load trucks now; deliver after the travel time (or at once if ``immediate``).

        Each move picks up ``min(bikes, bikes at from_station)``; returns the bikes picked up per
        move. Bikes that find no free dock on delivery go to the nearest free dock (counted
        in ``truck_diverted``). Truck km count the street distance from → to.
        """
        picked: list[int] = []
        for move in moves:
            src_id, dst_id, want = move
            if want < 0:
                raise ValidationError(
                    f"a move's bikes must be >= 0; got {want}", reason="bad_value"
                )
            src, dst = self.index_of(src_id), self.index_of(dst_id)
            take = int(min(want, self.bikes[src]))
            picked.append(take)
            if take == 0:
                continue
            self.bikes[src] -= take
            km = distance_km(self._x, self._y, src, dst)
            self.metrics.moves += 1
            self.metrics.bikes_moved += take
            self.metrics.truck_km += km
            if immediate or src == dst:
                self._unload(dst, take)
                continue
            minutes = km / _TRUCK_KMH * 60.0 + _TRUCK_HANDLING_MIN
            due = self.step_index + max(1, math.ceil(minutes / self._step_min))
            self._truck_seq += 1
            heapq.heappush(self._trucks, (due, self._truck_seq, dst, take))
            self._truck_load += take
        return picked

    # -- hooks for trucks (sim.fleet) and forecasts --------------------------------------------

    def add_step_hook(self, hook: Callable[[int], None]) -> None:
        """Call ``hook(step_index)`` at the start of every step (trucks load and unload there)."""
        self._step_hooks.append(hook)

    def load_truck(self, station: int, want: int) -> int:
        """Take up to ``want`` bikes from ``station`` onto a truck; returns the bikes taken."""
        take = int(max(0, min(want, self.bikes[station])))
        self.bikes[station] -= take
        self._truck_load += take
        if take:
            self.metrics.moves += 1
            self.metrics.bikes_moved += take
        return take

    def unload_truck(self, station: int, bikes: int) -> None:
        """Unload ``bikes`` from a truck at ``station`` (the overflow goes to the nearest docks)."""
        self._truck_load -= bikes
        self._unload(station, bikes)

    def expected_flows(
        self, minutes: float, *, weather: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Expected (departures, arrivals) per station over the next ``minutes`` at the demand
        rates of the hours they fall in, the current weather held (``weather=False``: fair
        weather): the simulator's own forecast, without its random numbers or trips in flight."""
        factor = weather_factor(self.weather.temp_c, self.weather.precip_mm) if weather else 1.0
        return expected_flows(
            self.time,
            minutes,
            self._tz,
            zone=self.zone,
            popularity=self._popularity,
            zone_present=self._zone_present,
            per_min=self.config.trips_per_station_hour / 60.0 * factor,
            calibrated=self.config.calibrated,
        )

    def status(self) -> StationStatus:
        """A copy of every station's published status at the current time."""
        return StationStatus(
            time=self.time,
            last_reported=self.time_s - self._jitter_s,
            num_bikes_available=self.bikes.copy(),
            num_docks_available=self.docks_available,
            num_docks_disabled=self.docks_disabled.copy(),
            is_installed=self.is_installed.copy(),
            is_renting=self.is_renting.copy(),
            is_returning=self.is_renting.copy(),
        )

    def past_counts(self, steps_ago: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(bikes, docks available) ``steps_ago`` steps back, if still remembered."""
        if not 0 <= steps_ago < min(_HISTORY, self.step_index + 1):
            return None
        row = (self.step_index - steps_ago) % _HISTORY
        return self._hist_bikes[row].copy(), self._hist_docks[row].copy()

    # -- internals ---------------------------------------------------------------------------

    def _record_history(self) -> None:
        row = self.step_index % _HISTORY
        self._hist_bikes[row] = self.bikes
        self._hist_docks[row] = self.capacity - self.bikes - self.docks_disabled

    def _refresh_hour(self) -> None:
        """Hourly: weather, hour-of-week rates, maintenance and dock faults."""
        now = from_micros(self._now_us)
        local = now.astimezone(self._tz)
        how = local.weekday() * 24 + local.hour
        self.weather = self._weather_process.next_hour(local)
        cal = self.config.calibrated
        if cal is not None:
            self._lam, self._dest_cumw, self._dest_cum_now = calibrated_hour(
                cal, how, self.zone, self._dest_order, self._step_min
            )
        else:
            factor = weather_factor(self.weather.temp_c, self.weather.precip_mm)
            per_step = self.config.trips_per_station_hour / 60.0 * self._step_min
            self._lam, self._dest_cum_now = zone_hour(
                how, self.zone, self._popularity, self._zone_present, per_step * factor
            )
        self._maintenance()
        hour_us = 3_600_000_000
        self._next_refresh_us = (self._now_us // hour_us + 1) * hour_us

    def _maintenance(self) -> None:
        ended = ~self.is_renting & (self._service_until <= self.step_index)
        self.is_renting[ended] = True
        p = self.config.maintenance_per_station_day / 24.0
        if p > 0:
            start = self.is_renting & (self._rng.random(self.n) < p)
            if start.any():
                hours = self._rng.integers(1, 5, size=int(start.sum()))
                self.is_renting[start] = False
                self._service_until[start] = self.step_index + np.ceil(
                    hours * 60 / self._step_min
                ).astype(np.int64)
        # A few docks break or get repaired; a dock breaks only where one is free.
        change = self._rng.random(self.n) < 0.004
        if change.any():
            free = self.capacity - self.bikes - self.docks_disabled
            breaks = change & (self.docks_disabled == 0) & (free > 0)
            self.docks_disabled[change & (self.docks_disabled > 0)] = 0
            self.docks_disabled[breaks] = 1

    def _start_trips(self, taken: np.ndarray, m: int, u: np.ndarray) -> None:
        origins = np.repeat(self._arange, taken)
        oz = self.zone[origins]
        cum = self._dest_cum_now[oz]
        dz = (u[0][:, None] >= cum[:, :2]).sum(axis=1)
        pos = np.searchsorted(self._dest_cumw, dz + u[1], side="right")
        dest = self._dest_order[np.minimum(pos, self.n - 1)]
        dx = self._x[dest] - self._x[origins]
        dy = self._y[dest] - self._y[origins]
        km = np.maximum(np.hypot(dx, dy) * DETOUR, 0.8)
        minutes = 2.0 + km / _BIKE_KMH * 60.0 * np.exp(0.25 * (u[2] - 0.5))
        steps = np.clip(np.ceil(minutes / self._step_min), 1, _RING - 1).astype(np.int64)
        slots = (self.step_index + steps) & (_RING - 1)
        np.add.at(self._ring_flat, slots * self.n + dest, 1)
        self.metrics.trips_started += m
        np.add.at(self.zone_flows, (oz, self.zone[dest]), 1)

    def _dock(self, arrivals: np.ndarray) -> None:
        free = (self.capacity - self.bikes - self.docks_disabled) * self.is_renting
        docked = np.minimum(arrivals, free)
        self.bikes += docked
        over = arrivals - docked
        if over.any():
            for station in np.flatnonzero(over):
                count = int(over[station])
                self.metrics.diverted_returns += count
                self._divert(int(station), count)

    def _divert(self, station: int, count: int) -> int:
        """Dock ``count`` bikes at the stations nearest ``station`` with free docks.

        Bikes that find no free dock nearby ride on to the nearest free dock anywhere; only when
        the whole city is full or closed do they retry next step. Returns bikes docked.
        """
        docked = 0
        for candidate in self._neighbors[station]:
            if count == 0:
                break
            if not self.is_renting[candidate]:
                continue
            free = int(self.capacity[candidate] - self.bikes[candidate])
            free -= int(self.docks_disabled[candidate])
            put = min(free, count)
            if put > 0:
                self.bikes[candidate] += put
                count -= put
                docked += put
        if count:
            # Rare: the neighbourhood is full, so ride on to the nearest free dock anywhere.
            free_all = (self.capacity - self.bikes - self.docks_disabled) * self.is_renting
            order = np.argsort(np.hypot(self._x - self._x[station], self._y - self._y[station]))
            for candidate in order[free_all[order] > 0]:
                put = min(int(free_all[candidate]), count)
                self.bikes[candidate] += put
                count -= put
                docked += put
                if count == 0:
                    break
        if count:
            # The whole city is full or closed: keep riding and retry next step.
            self._pending[station] = self._pending.get(station, 0) + count
        return docked

    def _deliver_trucks(self) -> None:
        while self._trucks and self._trucks[0][0] <= self.step_index:
            _, _, station, bikes = heapq.heappop(self._trucks)
            self._truck_load -= bikes
            self._unload(station, bikes)

    def _unload(self, station: int, bikes: int) -> None:
        free = int(self.capacity[station] - self.bikes[station] - self.docks_disabled[station])
        put = max(0, min(free, bikes))
        self.bikes[station] += put
        if bikes > put:
            self.metrics.truck_diverted += bikes - put
            self._divert(station, bikes - put)
