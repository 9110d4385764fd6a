"""Write a simulated city's history in the Divvy archive layout (Parquet, no faults).

``station_status/YYYY-MM.parquet`` holds one row per station per step, sorted by station then
time, with exactly the real archive's columns and types; ``station_information.parquet`` one
row per station. A month is buffered as compact int16 arrays and written in station blocks,
so memory stays near ``stations × minutes_in_month × 5`` bytes.

>>> import tempfile
>>> cfg = CityConfig(stations=5, seed=1)
>>> with tempfile.TemporaryDirectory() as tmp:
...     write_archive(cfg, 1, tmp).rows
7200
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dockline.core.errors import ConfigError, StorageError
from dockline.core.time import from_micros, to_micros
from dockline.sim.city import City, CityConfig
from dockline.sim.faults import FaultConfig

__all__ = [
    "ARCHIVE_STATION_INFORMATION_SCHEMA",
    "ARCHIVE_STATION_STATUS_SCHEMA",
    "ArchiveSummary",
    "write_archive",
]

_TS = pa.timestamp("us", tz="UTC")

ARCHIVE_STATION_STATUS_SCHEMA = pa.schema(
    [
        ("station_id", pa.string()),
        ("obs_ts", _TS),
        ("num_bikes_available", pa.int16()),
        ("num_docks_available", pa.int16()),
        ("capacity", pa.int16()),
        ("is_renting", pa.bool_()),
    ]
)
"""Columns of ``station_status/YYYY-MM.parquet`` (as in the real Divvy archive)."""

ARCHIVE_STATION_INFORMATION_SCHEMA = pa.schema(
    [
        ("station_id", pa.string()),
        ("name", pa.string()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("capacity", pa.int16()),
        ("first_seen", _TS),
        ("last_seen", _TS),
        ("snapshots", pa.int64()),
    ]
)
"""Columns of ``station_information.parquet``."""

_BLOCK = 64  # stations per written row group: bounds the memory of the int64 timestamps


@dataclass(frozen=True, slots=True)
class ArchiveSummary:
    """What :func:`write_archive` wrote."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    rows: int = 0
    stations: int = 0
    first_ts: datetime | None = None
    last_ts: datetime | None = None


class _MonthBuffer:
    """Snapshots of the steps whose time falls in [start, end], as (step, station) arrays."""

    def __init__(self, start_us: int, end_us: int, steps: int, n: int) -> None:
        self.start_us = start_us
        self.end_us = end_us
        self.times = np.zeros(steps, dtype=np.int64)
        self.bikes = np.zeros((steps, n), dtype=np.int16)
        self.docks = np.zeros((steps, n), dtype=np.int16)
        self.renting = np.zeros((steps, n), dtype=bool)
        self.used = 0

    def add(self, city: City) -> None:
        i = self.used
        self.times[i] = city.time_s * 1_000_000
        self.bikes[i] = city.bikes
        self.docks[i] = city.docks_available
        self.renting[i] = city.is_renting
        self.used += 1


def write_archive(
    config: CityConfig,
    days: float,
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> ArchiveSummary:
    """Simulate ``days`` days of ``config`` and write the Divvy-layout archive to ``out_dir``.

    ``obs_ts`` is each station's ``last_reported`` (the step time minus its seconds jitter);
    rows go to the month of their ``obs_ts`` (UTC). ``progress(done, total)`` counts steps.
    """
    if days <= 0:
        raise ConfigError(f"days must be > 0; got {days}")
    # Archives carry no faults, but keep the id scheme, so an archive and a live feed of the
    # same city name their stations alike.
    config = dataclasses.replace(config, faults=FaultConfig(numeric_ids=config.faults.numeric_ids))
    out = Path(out_dir)
    try:
        (out / "station_status").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the archive directory: {exc}", where=str(out)) from exc
    city = City(config)
    n = city.n
    total = round(days * 86_400 / config.step.total_seconds())
    step_us = int(config.step.total_seconds()) * 1_000_000
    jitter_us = (city.time_s - city.status().last_reported) * 1_000_000
    ids = pa.array(city.station_ids, pa.string())
    capacity = city.capacity.astype(np.int16)
    files: list[Path] = []
    rows = 0
    first_us = to_micros(config.start)
    last_step_us = first_us + (total - 1) * step_us

    # Rows go to the month of obs_ts = t - jitter, so a step on or just after a month boundary
    # feeds two months: the step that crosses a buffer's end is added to both buffers.
    buffer = _new_buffer(first_us - 60_000_000, first_us, last_step_us, step_us, n)
    done = 0
    report_every = max(1, round(86_400 / config.step.total_seconds()))
    while True:
        buffer.add(city)
        t = int(buffer.times[buffer.used - 1])
        if t >= buffer.end_us:
            path, written = _flush(buffer, out, ids, capacity, jitter_us)
            if written:
                files.append(path)
                rows += written
            buffer = _new_buffer(t, t, last_step_us, step_us, n)
            buffer.add(city)
        if t == last_step_us:
            path, written = _flush(buffer, out, ids, capacity, jitter_us)
            if written:
                files.append(path)
                rows += written
            break
        city.step()
        done += 1
        if progress is not None and (done % report_every == 0):
            progress(done, total)
    if progress is not None:
        progress(total, total)

    snapshots = np.full(n, total, dtype=np.int64)
    info = pa.Table.from_arrays(
        [
            ids,
            pa.array(city.names, pa.string()),
            pa.array(city.lat, pa.float64()),
            pa.array(city.lon, pa.float64()),
            pa.array(capacity, pa.int16()),
            pa.array(first_us - jitter_us, _TS),
            pa.array(last_step_us - jitter_us, _TS),
            pa.array(snapshots, pa.int64()),
        ],
        schema=ARCHIVE_STATION_INFORMATION_SCHEMA,
    )
    info_path = out / "station_information.parquet"
    pq.write_table(info, info_path)
    files.append(info_path)
    return ArchiveSummary(
        out_dir=out,
        files=files,
        rows=rows,
        stations=n,
        first_ts=from_micros(int((first_us - jitter_us).min())),
        last_ts=from_micros(int((last_step_us - jitter_us).max())),
    )


def _month_bounds(us: int) -> tuple[int, int]:
    when = from_micros(us)
    start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (start + timedelta(days=32)).replace(day=1)
    return to_micros(start), to_micros(nxt)


def _new_buffer(
    month_of_us: int, t_us: int, last_step_us: int, step_us: int, n: int
) -> _MonthBuffer:
    """A buffer for the month containing ``month_of_us``, sized for the steps from ``t_us``."""
    month_start, month_end = _month_bounds(month_of_us)
    steps = max(2, (min(month_end, last_step_us) - t_us) // step_us + 2)
    return _MonthBuffer(month_start, month_end, steps, n)


def _flush(
    buffer: _MonthBuffer, out: Path, ids: pa.Array, capacity: np.ndarray, jitter_us: np.ndarray
) -> tuple[Path, int]:
    """Write the buffer's rows whose ``obs_ts`` lies in its month; returns (path, rows)."""
    used = buffer.used
    times = buffer.times[:used]
    label = from_micros(buffer.start_us).strftime("%Y-%m")
    path = out / "station_status" / f"{label}.parquet"
    written = 0
    with pq.ParquetWriter(path, ARCHIVE_STATION_STATUS_SCHEMA) as writer:
        for lo in range(0, len(capacity), _BLOCK):
            hi = min(len(capacity), lo + _BLOCK)
            obs = times[None, :] - jitter_us[lo:hi, None]  # (stations, steps): station-major
            keep = (obs >= buffer.start_us) & (obs < buffer.end_us)
            count = int(keep.sum())
            if count == 0:
                continue
            per_station = keep.sum(axis=1)
            station_idx = np.repeat(np.arange(lo, hi, dtype=np.int32), per_station)
            table = pa.Table.from_arrays(
                [
                    pa.DictionaryArray.from_arrays(pa.array(station_idx), ids).cast(pa.string()),
                    pa.array(obs[keep], _TS),
                    pa.array(buffer.bikes[:used, lo:hi].T[keep], pa.int16()),
                    pa.array(buffer.docks[:used, lo:hi].T[keep], pa.int16()),
                    pa.array(np.repeat(capacity[lo:hi], per_station), pa.int16()),
                    pa.array(buffer.renting[:used, lo:hi].T[keep], pa.bool_()),
                ],
                schema=ARCHIVE_STATION_STATUS_SCHEMA,
            )
            writer.write_table(table)
            written += count
    if written == 0:
        path.unlink()
    return path, written
