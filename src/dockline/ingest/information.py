"""Station information from tabular archives (the Divvy ``station_information.parquet``)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.contracts import (
    STATION_INFORMATION_SCHEMA,
    TOPIC_STATION_INFORMATION,
    TS_TYPE,
    DeadLetter,
    RejectReason,
    dead_letter_id,
)
from dockline.core.errors import ConfigError
from dockline.core.time import from_micros
from dockline.ingest.normalize import Batch

__all__ = ["normalize_information_table"]

_REQUIRED = ("station_id", "lat", "lon")


def normalize_information_table(
    table: pa.Table,
    *,
    source: str,
    batch_id: str = "station_information",
    publication_delay: timedelta = timedelta(0),
) -> Batch:
    """Validate a station_information table into ``STATION_INFORMATION_SCHEMA`` rows.

    The information's ``event_ts`` is the column ``event_ts`` if present, else ``first_seen``
    (when the station first appeared — so a point-in-time join never sees a station before it
    existed); ``ingested_at = event_ts + publication_delay``. Rows with a missing id or
    coordinate, or coordinates outside the globe, become dead letters.
    """
    missing = [name for name in _REQUIRED if name not in table.column_names]
    time_column = "event_ts" if "event_ts" in table.column_names else "first_seen"
    if time_column not in table.column_names:
        missing.append("event_ts or first_seen")
    if missing:
        raise ConfigError(
            f"station information needs columns {missing}; has {table.column_names}",
            where=batch_id,
        )
    n = table.num_rows
    ids = table["station_id"].cast(pa.string())
    lat = table["lat"].cast(pa.float64())
    lon = table["lon"].cast(pa.float64())
    event = table[time_column].cast(TS_TYPE)
    reasons: list[tuple[RejectReason, str] | None] = [None] * n
    null_id = pc.is_null(ids).to_numpy(zero_copy_only=False)
    null_time = pc.is_null(event).to_numpy(zero_copy_only=False)
    lat_np = lat.to_numpy(zero_copy_only=False).astype(np.float64)
    lon_np = lon.to_numpy(zero_copy_only=False).astype(np.float64)
    for pos in np.flatnonzero(null_id | null_time | np.isnan(lat_np) | np.isnan(lon_np)):
        field = "station_id" if null_id[pos] else time_column if null_time[pos] else "lat/lon"
        reasons[pos] = (RejectReason.MISSING_FIELD, f"{field} is required; got null")
    bad_coords = (np.abs(lat_np) > 90) | (np.abs(lon_np) > 180)
    for pos in np.flatnonzero(bad_coords):
        if reasons[pos] is None:
            reasons[pos] = (
                RejectReason.BAD_VALUE,
                f"lat/lon must be within [-90, 90] × [-180, 180]; got {lat_np[pos]}, {lon_np[pos]}",
            )
    keep = np.array([r is None for r in reasons], dtype=bool)
    event_us = event.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    delay_us = int(publication_delay / timedelta(microseconds=1))
    rows = table.to_pylist() if not keep.all() else []
    letters = [
        DeadLetter(
            id=dead_letter_id(source, batch_id, int(pos)),
            source=source,
            topic=TOPIC_STATION_INFORMATION,
            reason=reason[0],
            detail=reason[1],
            raw=orjson.dumps(rows[pos], default=str),
            # an archive has no arrival time: the same rule as accepted rows (epoch if unknown)
            ingested_at=from_micros(int(event_us[pos]) + delay_us if not null_time[pos] else 0),
            key=rows[pos].get("station_id") if rows[pos].get("station_id") is not None else None,
        )
        for pos, reason in enumerate(reasons)
        if reason is not None
    ]
    mask = pa.array(keep)
    event_kept = event.filter(mask)
    ingested = pc.add(event_kept.cast(pa.int64()), delay_us).cast(TS_TYPE)

    def optional(name: str, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
        if name in table.column_names:
            return table[name].cast(kind).filter(mask)
        return pa.nulls(int(keep.sum()), kind)

    accepted = pa.Table.from_arrays(
        [
            ids.filter(mask),
            event_kept,
            ingested,
            optional("name", pa.string()),
            lat.filter(mask),
            lon.filter(mask),
            optional("capacity", pa.int32()),
            optional("region_id", pa.string()),
            pa.array([source] * int(keep.sum()), pa.string()),
        ],
        schema=STATION_INFORMATION_SCHEMA,
    )
    return Batch(accepted=accepted, dead_letters=letters, received=n)
