"""Station information: GBFS ``station_information`` documents and tabular archives (the Divvy
``station_information.parquet``) → ``STATION_INFORMATION_SCHEMA`` rows plus dead letters."""

from __future__ import annotations

from datetime import datetime, timedelta

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
from dockline.core.time import ensure_utc, from_micros, to_micros
from dockline.ingest import _document as gbfs
from dockline.ingest._batch import Batch, ts_array
from dockline.ingest._coerce import Rejects, json_counts, json_ids
from dockline.ingest._document import dump_record, load_document
from dockline.ingest._letters import malformed_batch
from dockline.ingest._time import show_value

__all__ = ["normalize_information_table", "normalize_station_information"]

R = RejectReason

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


def normalize_station_information(
    payload: bytes, *, source: str, ingested_at: datetime, batch_id: str
) -> Batch:
    """Validate one ``station_information`` document into ``STATION_INFORMATION_SCHEMA`` rows.

    ``event_ts`` is the document's ``last_updated``; a document without a usable
    ``last_updated`` is ``malformed``. Duplicate station ids keep the first record.
    """
    ingested_at = ensure_utc(ingested_at)

    def malformed(detail: str) -> Batch:
        return malformed_batch(
            payload,
            source=source,
            topic=TOPIC_STATION_INFORMATION,
            empty=STATION_INFORMATION_SCHEMA.empty_table(),
            ingested_at=ingested_at,
            batch_id=batch_id,
            detail=detail,
        )

    doc, problem, exact = load_document(payload)
    if problem is not None:
        return malformed(problem)
    stations = gbfs.stations(doc)
    if stations is None:
        return malformed("not a GBFS document: data.stations must be a list")
    assert isinstance(doc, dict)
    last_updated = gbfs.maybe_datetime(doc.get("last_updated"))
    if last_updated is None:
        return malformed(
            f"last_updated must be a POSIX or RFC 3339 timestamp; got"
            f" {show_value(doc.get('last_updated'))}"
        )
    rej = Rejects()
    n = len(stations)
    records = [s if isinstance(s, dict) else {} for s in stations]
    ids, bad_ids = json_ids([s.get("station_id") for s in records], rej)
    names: list[str | None] = []
    for pos, record in enumerate(records):
        value = record.get("name")
        if value is None:
            names.append(None)
            continue
        try:
            names.append(gbfs.localized(value))
        except TypeError:
            names.append(None)
            rej.add(
                pos,
                R.BAD_TYPE,
                f"name must be a string or localized texts; got {show_value(value)}",
            )
    coords = {}
    for field, limit in (("lat", 90.0), ("lon", 180.0)):
        values = np.zeros(n, dtype=np.float64)
        for pos, record in enumerate(records):
            value = record.get(field)
            if value is None:
                rej.add(pos, R.MISSING_FIELD, f"{field} is missing")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                rej.add(pos, R.BAD_TYPE, f"{field} must be a number; got {show_value(value)}")
            elif not -limit <= value <= limit:
                rej.add(pos, R.BAD_VALUE, f"{field} must be within ±{limit:g}; got {value}")
            else:
                values[pos] = value
        coords[field] = values
    caps, cap_null = json_counts(
        [s.get("capacity") for s in records], "capacity", rej, nullable=True
    )
    regions: list[str | None] = []
    for pos, record in enumerate(records):
        value = record.get("region_id")
        if value is None or isinstance(value, str):
            regions.append(value)
        elif type(value) is int:
            regions.append(str(value))
        else:
            regions.append(None)
            rej.add(pos, R.BAD_TYPE, f"region_id must be a string; got {show_value(value)}")
    bad_ids.update(gbfs.reject_non_objects(stations, rej))
    first: dict[str, int] = {}
    ok = ~rej.mask(n)
    for pos in np.flatnonzero(ok).tolist():
        sid = ids[pos]
        if sid in first:
            rej.add(pos, R.DUPLICATE, f"station {sid} appears more than once; kept the first")
        else:
            first[sid] = pos
    ok = ~rej.mask(n)
    idx = np.flatnonzero(ok)
    k = len(idx)
    event = np.full(k, to_micros(last_updated), dtype=np.int64)
    table = pa.Table.from_arrays(
        [
            pa.array([ids[i] for i in idx.tolist()], type=pa.string()),
            ts_array(event),
            ts_array(np.full(k, to_micros(ingested_at), dtype=np.int64)),
            pa.array([names[i] for i in idx.tolist()], type=pa.string()),
            pa.array(coords["lat"][idx], type=pa.float64()),
            pa.array(coords["lon"][idx], type=pa.float64()),
            pa.array(caps[idx].astype(np.int32), type=pa.int32(), mask=cap_null[idx]),
            pa.array([regions[i] for i in idx.tolist()], type=pa.string()),
            pa.array([source] * k, type=pa.string()),
        ],
        schema=STATION_INFORMATION_SCHEMA,
    )
    letters = [
        DeadLetter(
            id=dead_letter_id(source, batch_id, pos),
            source=source,
            topic=TOPIC_STATION_INFORMATION,
            reason=reason,
            detail=detail,
            raw=dump_record(stations[pos], exact=exact),
            ingested_at=ingested_at,
            key=None if pos in bad_ids else ids[pos],
            event_ts=last_updated,
        )
        for pos, (_, reason, detail) in sorted(rej.by_pos.items())
    ]
    return Batch(
        accepted=table,
        dead_letters=letters,
        received=n,
        last_updated=last_updated,
        ttl=gbfs.ttl(doc),
        version=gbfs.version(doc),
    )
