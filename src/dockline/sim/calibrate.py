"""Fit a city to a real station-status archive (Divvy layout) and check the fit.

Per station and hour of week (America/Chicago), departures and arrivals are inferred from the
minute-to-minute change in bikes: a drop is a departure, a rise an arrival. A change of at least
``move_threshold`` bikes between two consecutive snapshots is an operator (truck) move, not riders:
it is kept out of the demand and reported. Rates are censored-corrected: departures are counted
per minute with a bike to rent, arrivals per minute with a free dock. Net changes hide a rental
and a return in the same minute, so the rates are a lower bound on the true flows.

The archive is read month by month (pyarrow, only the needed columns) to bound memory.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dockline.core.errors import ConfigError, NotFoundError, ValidationError

__all__ = [
    "CalibratedCity",
    "Calibration",
    "MonthCounts",
    "OperatorMoves",
    "calibrate",
    "load_city",
    "month_counts",
    "save_city",
]

_MAX_GAP_S = 150  # consecutive snapshots further apart than this are a recorder gap: no flow
_COLUMNS = ["station_id", "obs_ts", "num_bikes_available", "num_docks_available", "is_renting"]


@dataclass(frozen=True, slots=True, eq=False)
class CalibratedCity:
    """A city fitted to an archive: per-station layout and 168 hour-of-week rates (trips/h)."""

    station_ids: tuple[str, ...]
    names: tuple[str, ...]
    lat: np.ndarray
    lon: np.ndarray
    capacity: np.ndarray  # int64
    bikes: np.ndarray  # int64, initial bikes
    departures: np.ndarray  # [n, 168] trips per hour, hour-of-week 0 = Monday 00:00 local
    arrivals: np.ndarray  # [n, 168]
    tz: str = "America/Chicago"
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.station_ids)
        if n == 0:
            raise ValidationError("a calibrated city needs at least one station", reason="empty")
        for name in ("lat", "lon", "capacity", "bikes"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValidationError(f"{name} must have one value per station", reason="shape")
        for name in ("departures", "arrivals"):
            arr = getattr(self, name)
            if np.shape(arr) != (n, 168) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
                raise ValidationError(
                    f"{name} must be [stations, 168] finite rates >= 0", reason="bad_value"
                )
        if (
            np.any(self.capacity < 1)
            or np.any(self.bikes < 0)
            or np.any(self.bikes > self.capacity)
        ):
            raise ValidationError(
                "capacity must be >= 1 and 0 <= bikes <= capacity", reason="bad_value"
            )

    @property
    def n(self) -> int:
        return len(self.station_ids)

    def with_bikes(self, bikes: np.ndarray) -> CalibratedCity:
        """The same city starting from other bike counts (clipped to capacity)."""
        b = np.clip(np.asarray(bikes, dtype=np.int64), 0, self.capacity)
        return CalibratedCity(
            self.station_ids, self.names, self.lat, self.lon, self.capacity, b,
            self.departures, self.arrivals, self.tz, self.source,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class OperatorMoves:
    """Detected operator moves: one row per (station, snapshot) jump of ``delta`` bikes."""

    station: np.ndarray  # index into the calibrated city's stations
    ts_us: np.ndarray  # int64 UTC microseconds of the snapshot after the jump
    delta: np.ndarray  # int64

    @property
    def count(self) -> int:
        return int(self.station.size)

    def summary(self) -> dict[str, int]:
        return {
            "moves": self.count,
            "bikes_removed": int(-self.delta[self.delta < 0].sum()),
            "bikes_added": int(self.delta[self.delta > 0].sum()),
        }


@dataclass(frozen=True, slots=True)
class MonthCounts:
    """One month's sums per (station, hour of week) plus its operator moves and outage minutes."""

    dep: np.ndarray  # [n, 168] departures
    arr: np.ndarray
    dep_exposure: np.ndarray  # [n, 168] minutes with a bike to rent
    arr_exposure: np.ndarray  # minutes with a free dock
    moves: OperatorMoves
    empty_minutes: np.ndarray  # [n] snapshots (renting) with 0 bikes
    full_minutes: np.ndarray  # [n] snapshots (renting) with 0 docks
    observed_minutes: np.ndarray  # [n] renting snapshots
    first_bikes: np.ndarray  # [n] bikes at each station's first snapshot (-1: unseen)
    daily_bikes: np.ndarray  # [n, days] bikes at each station's first snapshot of each local day
    day_ordinal: np.ndarray  # [days] local date ordinals of daily_bikes' columns
    start_us: int
    end_us: int


@dataclass(frozen=True, slots=True)
class Calibration:
    """What :func:`calibrate` returns: the city, the moves it saw, and what it was fitted on."""

    city: CalibratedCity
    moves: OperatorMoves
    months: tuple[str, ...]
    trips: int  # departures counted


def _month_path(archive: Path, month: str) -> Path:
    path = archive / "station_status" / f"{month}.parquet"
    if not path.is_file():
        raise NotFoundError(f"no archive month {month} at {path}", reason="missing_month")
    return path


def read_stations(archive: Path) -> pa.Table:
    """``station_information.parquet`` sorted by station id."""
    path = Path(archive) / "station_information.parquet"
    if not path.is_file():
        raise NotFoundError(f"no station_information.parquet in {archive}", reason="missing_file")
    table = pq.read_table(path, columns=["station_id", "name", "lat", "lon", "capacity"])
    return table.sort_by("station_id")


def month_counts(
    archive: Path, month: str, station_ids: tuple[str, ...], *, move_threshold: int = 4
) -> MonthCounts:
    """Vectorized per-(station, hour-of-week) flows of one archive month."""
    table = pq.read_table(_month_path(Path(archive), month), columns=_COLUMNS)
    n = len(station_ids)
    index = pa.array(station_ids)
    # Stations outside ``station_ids`` (unknown to station_information) index as -1: skipped.
    found = pc.index_in(table["station_id"], value_set=index)
    st = pc.fill_null(found, -1).to_numpy().astype(np.int64)
    ts = table["obs_ts"].cast(pa.timestamp("us", tz="UTC"))
    local = ts.cast(pa.timestamp("us", tz="America/Chicago"))
    how = pc.day_of_week(local).to_numpy().astype(np.int64) * 24 + pc.hour(local).to_numpy().astype(
        np.int64
    )
    ts_us = ts.cast(pa.int64()).to_numpy()
    bikes = table["num_bikes_available"].to_numpy().astype(np.int64)
    docks = table["num_docks_available"].to_numpy().astype(np.int64)
    renting = table["is_renting"].to_numpy(zero_copy_only=False).astype(bool)
    sel = st >= 0
    st, how, ts_us, bikes, docks, renting = (
        a[sel] for a in (st, how, ts_us, bikes, docks, renting)
    )
    # The archive is sorted by station then time; make sure, since the diffs depend on it.
    order = np.lexsort((ts_us, st))
    st, how, ts_us, bikes, docks, renting = (
        a[order] for a in (st, how, ts_us, bikes, docks, renting)
    )
    # Duplicated snapshot times: keep the first.
    dup = np.zeros(st.size, dtype=bool)
    dup[1:] = (st[1:] == st[:-1]) & (ts_us[1:] == ts_us[:-1])
    st, how, ts_us, bikes, docks, renting = (
        a[~dup] for a in (st, how, ts_us, bikes, docks, renting)
    )
    up = renting
    empty = np.bincount(st[up], weights=(bikes[up] == 0), minlength=n).astype(np.int64)
    full = np.bincount(st[up], weights=(docks[up] == 0), minlength=n).astype(np.int64)
    observed = np.bincount(st[up], minlength=n).astype(np.int64)
    first = np.full(n, -1, dtype=np.int64)
    if st.size:
        starts = np.flatnonzero(np.r_[True, st[1:] != st[:-1]])
        first[st[starts]] = bikes[starts]

    day = (
        pc.year(local).to_numpy().astype(np.int64) * 400
        + pc.day_of_year(local).to_numpy().astype(np.int64)
    )[sel][order][~dup]
    days = np.unique(day)
    col = np.searchsorted(days, day)
    daily = np.full((n, days.size), -1, dtype=np.int64)
    first_of_day = np.r_[True, (st[1:] != st[:-1]) | (day[1:] != day[:-1])] & renting
    daily[st[first_of_day], col[first_of_day]] = bikes[first_of_day]

    # Consecutive pairs of the same station, both renting, within a normal snapshot gap.
    same = st[1:] == st[:-1]
    gap = (ts_us[1:] - ts_us[:-1]) <= _MAX_GAP_S * 1_000_000
    valid = same & gap & renting[1:] & renting[:-1]
    d = bikes[1:] - bikes[:-1]
    is_move = valid & (np.abs(d) >= move_threshold)
    flow = valid & ~is_move
    s0, h0 = st[:-1], how[:-1]
    cell = s0 * 168 + h0
    size = n * 168
    dep = np.bincount(cell[flow], weights=np.maximum(-d[flow], 0), minlength=size)
    arr = np.bincount(cell[flow], weights=np.maximum(d[flow], 0), minlength=size)
    minutes = (ts_us[1:] - ts_us[:-1]) / 60e6
    dep_exp = np.bincount(
        cell[flow & (bikes[:-1] > 0)], weights=minutes[flow & (bikes[:-1] > 0)], minlength=size
    )
    arr_exp = np.bincount(
        cell[flow & (docks[:-1] > 0)], weights=minutes[flow & (docks[:-1] > 0)], minlength=size
    )
    moves = OperatorMoves(
        station=st[1:][is_move], ts_us=ts_us[1:][is_move], delta=d[is_move].astype(np.int64)
    )
    return MonthCounts(
        dep=dep.reshape(n, 168),
        arr=arr.reshape(n, 168),
        dep_exposure=dep_exp.reshape(n, 168),
        arr_exposure=arr_exp.reshape(n, 168),
        moves=moves,
        empty_minutes=empty,
        full_minutes=full,
        observed_minutes=observed,
        first_bikes=first,
        daily_bikes=daily,
        day_ordinal=days,
        start_us=int(ts_us.min()) if ts_us.size else 0,
        end_us=int(ts_us.max()) if ts_us.size else 0,
    )


def _rates(events: np.ndarray, exposure_min: np.ndarray, prior_weight: float = 120.0) -> np.ndarray:
    """Trips per hour per (station, hour of week), shrunk toward the station's mean rate
    (``prior_weight`` minutes of pseudo-exposure) so sparse cells do not read as zero."""
    tot_e = events.sum(axis=1, keepdims=True)
    tot_x = np.maximum(exposure_min.sum(axis=1, keepdims=True), 1.0)
    station_mean = tot_e / tot_x  # per minute
    rate = (events + prior_weight * station_mean) / (exposure_min + prior_weight)
    out: np.ndarray = rate * 60.0
    return out


def calibrate(
    archive: str | Path,
    months: tuple[str, ...] = ("2013-09", "2013-10"),
    *,
    move_threshold: int = 4,
) -> Calibration:
    """Fit stations, capacities, positions and per-station hour-of-week demand to ``months``."""
    if not months:
        raise ConfigError("calibrate needs at least one month")
    if move_threshold < 2:
        raise ConfigError(f"move_threshold must be >= 2; got {move_threshold}")
    archive = Path(archive)
    info = read_stations(archive)
    all_ids = tuple(info["station_id"].to_pylist())
    parts = [month_counts(archive, m, all_ids, move_threshold=move_threshold) for m in months]
    dep = sum(p.dep for p in parts)
    arr = sum(p.arr for p in parts)
    dep_x = sum(p.dep_exposure for p in parts)
    arr_x = sum(p.arr_exposure for p in parts)
    seen = sum(p.observed_minutes for p in parts) > 0
    assert isinstance(dep, np.ndarray) and isinstance(arr, np.ndarray)
    assert isinstance(dep_x, np.ndarray) and isinstance(arr_x, np.ndarray)
    assert isinstance(seen, np.ndarray)
    if not seen.any():
        raise ValidationError(f"no renting station seen in {', '.join(months)}", reason="empty")
    keep = np.flatnonzero(seen)
    remap = np.full(len(all_ids), -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    capacity = info["capacity"].to_numpy().astype(np.int64)[keep]
    capacity = np.maximum(capacity, 1)
    # Start each station at the bikes of its last month's first snapshot, else half full.
    first = parts[-1].first_bikes[keep]
    bikes = np.where(first >= 0, np.minimum(first, capacity), capacity // 2)
    mv = [p.moves for p in parts]
    moves_station = np.concatenate([m.station for m in mv])
    moves = OperatorMoves(
        station=remap[moves_station],
        ts_us=np.concatenate([m.ts_us for m in mv]),
        delta=np.concatenate([m.delta for m in mv]),
    )
    city = CalibratedCity(
        station_ids=tuple(all_ids[i] for i in keep),
        names=tuple(str(x) for x in np.asarray(info["name"].to_pylist(), dtype=object)[keep]),
        lat=info["lat"].to_numpy()[keep].astype(float),
        lon=info["lon"].to_numpy()[keep].astype(float),
        capacity=capacity,
        bikes=bikes.astype(np.int64),
        departures=_rates(dep[keep], dep_x[keep]),
        arrivals=_rates(arr[keep], arr_x[keep]),
        source=f"{archive.name} {','.join(months)} move_threshold={move_threshold}",
    )
    return Calibration(city=city, moves=moves, months=tuple(months), trips=int(dep.sum()))


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in values) + "]"


def save_city(city: CalibratedCity, path: str | Path) -> Path:
    """Write ``city`` as TOML (deterministic bytes)."""
    lines = [
        "# dockline calibrated city: rates are trips per hour by hour of week",
        "# (0 = Monday 00:00 local time)",
        f"tz = {_toml_str(city.tz)}",
        f"source = {_toml_str(city.source)}",
        "",
    ]
    for i in range(city.n):
        lines += [
            "[[stations]]",
            f"id = {_toml_str(city.station_ids[i])}",
            f"name = {_toml_str(city.names[i])}",
            f"lat = {float(city.lat[i]):.6f}",
            f"lon = {float(city.lon[i]):.6f}",
            f"capacity = {int(city.capacity[i])}",
            f"bikes = {int(city.bikes[i])}",
            f"departures = {_fmt(city.departures[i])}",
            f"arrivals = {_fmt(city.arrivals[i])}",
            "",
        ]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
    return out


def load_city(path: str | Path) -> CalibratedCity:
    """Read a city written by :func:`save_city` (a clear error on a malformed file)."""
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"no city file at {p}", reason="missing_file", where=str(p))
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
        rows = doc["stations"]
        city = CalibratedCity(
            station_ids=tuple(str(r["id"]) for r in rows),
            names=tuple(str(r.get("name", r["id"])) for r in rows),
            lat=np.array([float(r["lat"]) for r in rows]),
            lon=np.array([float(r["lon"]) for r in rows]),
            capacity=np.array([int(r["capacity"]) for r in rows], dtype=np.int64),
            bikes=np.array([int(r["bikes"]) for r in rows], dtype=np.int64),
            departures=np.array([r["departures"] for r in rows], dtype=float),
            arrivals=np.array([r["arrivals"] for r in rows], dtype=float),
            tz=str(doc.get("tz", "America/Chicago")),
            source=str(doc.get("source", "")),
        )
    except ValidationError as exc:
        raise ValidationError(exc.message, reason=exc.reason, where=str(p)) from exc
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValidationError(
            f"malformed city file: {exc}", reason="bad_city_file", where=str(p)
        ) from exc
    if any(math.isnan(x) for x in city.lat) or any(math.isnan(x) for x in city.lon):
        raise ValidationError("lat/lon must be numbers", reason="bad_value", where=str(p))
    return city
