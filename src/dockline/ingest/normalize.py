"""Validation at the edge: GBFS documents and archive tables → normalized Arrow + dead letters.

Every input record is either accepted into a table with exactly
:data:`~dockline.core.contracts.STATION_STATUS_SCHEMA` (or ``STATION_INFORMATION_SCHEMA``) or
rejected into a :class:`~dockline.core.contracts.DeadLetter` with a
:class:`~dockline.core.contracts.RejectReason`; nothing is dropped silently.

Checks run in a fixed order per record — stateless first (``missing_field``, ``bad_type``,
``negative_count``, ``bad_value``), then stateful (``duplicate``, ``future``, ``stale``,
``late``) — and a record gets the first reason that applies.

The hot path is columnar: one ``orjson`` parse, one list comprehension per field, type checks
over whole columns, NumPy for the rules; per-record Python runs only for the rare bad records.

This module holds the ``station_status`` front ends (documents and archive tables), which turn
their input into coerced columns; the stateful pass is :mod:`dockline.ingest._classify`'s,
document parsing :mod:`dockline.ingest._document`'s. :func:`map_columns` (from
:mod:`~dockline.ingest.archive`) and :func:`normalize_station_information` (from
:mod:`~dockline.ingest.information`) stay importable from here.

>>> from datetime import UTC, datetime
>>> from dockline.core.config import IngestConfig
>>> doc = b'{"last_updated": 1700000000, "ttl": 60, "version": "2.3", "data": {"stations": ['
>>> doc += b'{"station_id": 7, "num_bikes_available": 3, "num_docks_available": 9,'
>>> doc += b' "is_installed": 1, "is_renting": true, "is_returning": true,'
>>> doc += b' "last_reported": 1700000000000}]}}'
>>> norm = StationStatusNormalizer("demo", IngestConfig())
>>> batch = norm.normalize_document(
...     doc, ingested_at=datetime(2023, 11, 14, 22, 14, tzinfo=UTC), batch_id="b1")
>>> batch.accepted.column("station_id").to_pylist(), batch.dead_letters
(['7'], [])
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from dockline.core.contracts import (
    STATION_STATUS_SCHEMA,
    TOPIC_STATION_STATUS,
    RejectReason,
)
from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc, to_micros
from dockline.ingest import _document as gbfs
from dockline.ingest._batch import Batch, Columns
from dockline.ingest._classify import Classifier
from dockline.ingest._coerce import (
    Rejects,
    arrow_counts,
    arrow_flags,
    arrow_ids,
    arrow_timestamps,
    json_counts,
    json_flags,
    json_ids,
    json_timestamps,
)
from dockline.ingest._document import dump_record, load_document
from dockline.ingest._letters import malformed_batch
from dockline.ingest._time import isoformat
from dockline.ingest.archive import map_columns
from dockline.ingest.information import normalize_station_information

__all__ = [
    "Batch",
    "StationStatusNormalizer",
    "map_columns",
    "normalize_station_information",
]

R = RejectReason


class StationStatusNormalizer(Classifier):
    """Stateful validator for one source (one feed or one archive). Pure: no I/O.

    Parses GBFS documents and archive tables into coerced columns; the stateful decisions and
    the state itself are :class:`~dockline.ingest._classify.Classifier`'s.
    """

    # ---- documents ----------------------------------------------------------------------------

    def normalize_document(self, payload: bytes, *, ingested_at: datetime, batch_id: str) -> Batch:
        """Validate one ``station_status`` document (GBFS 1.x, 2.x or 3.0).

        A payload that is not JSON or not a ``station_status`` document yields one dead letter
        with reason ``malformed`` (``received == 1``).
        """
        ingested_at = ensure_utc(ingested_at)
        doc, problem, exact = load_document(payload)
        if problem is not None:
            return self._malformed(payload, ingested_at, batch_id, problem)
        stations = gbfs.stations(doc)
        if stations is None:
            return self._malformed(
                payload, ingested_at, batch_id, "not a GBFS document: data.stations must be a list"
            )
        if gbfs.foreign_feed(stations):
            return self._malformed(
                payload,
                ingested_at,
                batch_id,
                "not a station_status document: its records have no availability counts but"
                " have station_information or vehicle fields",
            )
        assert isinstance(doc, dict)
        version = gbfs.version(doc)
        last_updated_raw = doc.get("last_updated")
        is_str_time = isinstance(last_updated_raw, str)
        legacy = version.startswith("1.") if version else not is_str_time
        v3 = version.startswith("3.") if version else is_str_time

        n = len(stations)
        rej = Rejects()
        original = stations
        try:
            ids_raw = [s.get("station_id") for s in stations]
        except AttributeError:
            stations = [s if isinstance(s, dict) else {} for s in stations]
            ids_raw = [s.get("station_id") for s in stations]
        bike_key, alt_key = (
            ("num_vehicles_available", "num_bikes_available")
            if v3
            else ("num_bikes_available", "num_vehicles_available")
        )
        bikes_raw = [s.get(bike_key) for s in stations]
        if None in bikes_raw:  # tolerate feeds that mix up the v3.0 and v2.x names
            for pos in [i for i, v in enumerate(bikes_raw) if v is None]:
                bikes_raw[pos] = stations[pos].get(alt_key)
        caps_raw = [s.get("capacity") for s in stations]

        ids, bad_ids = json_ids(ids_raw, rej)
        event_us, bad_ts = json_timestamps(
            [s.get("last_reported") for s in stations], "last_reported", rej
        )
        bikes, _ = json_counts(bikes_raw, bike_key, rej)
        docks, _ = json_counts(
            [s.get("num_docks_available") for s in stations], "num_docks_available", rej
        )
        flags = [
            json_flags([s.get(name) for s in stations], name, rej, default_true=legacy)
            for name in ("is_installed", "is_renting", "is_returning")
        ]
        if caps_raw.count(None) == n:
            caps, cap_null = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
        else:
            caps, cap_null = json_counts(caps_raw, "capacity", rej, nullable=True)
        if stations is not original:
            for pos in gbfs.reject_non_objects(original, rej):
                bad_ids.add(pos)
                bad_ts.add(pos)

        cols = Columns(
            n=n,
            rej=rej,
            ids=pa.array(ids, type=pa.string()),
            bad_ids=bad_ids,
            event_us=event_us,
            bad_ts=bad_ts,
            ing_us=np.full(n, to_micros(ingested_at), dtype=np.int64),
            bikes=bikes,
            docks=docks,
            caps=caps,
            cap_null=cap_null,
            installed=flags[0],
            renting=flags[1],
            returning=flags[2],
        )
        self._dedupe_document(cols, ids)

        def raw(positions: list[int]) -> list[bytes]:
            return [dump_record(original[pos], exact=exact) for pos in positions]

        return self._finish(
            cols,
            raw=raw,
            batch_id=batch_id,
            ts_field="last_reported",
            last_updated=gbfs.maybe_datetime(last_updated_raw),
            ttl=gbfs.ttl(doc),
            version=version,
            confirm=True,
        )

    def _dedupe_document(self, cols: Columns, ids: list[str]) -> None:
        """Same station twice in one document: keep the newest last_reported (ties: the first)."""
        ok = ~cols.rej.mask(cols.n)
        ok_pos = np.flatnonzero(ok).tolist()
        ok_ids = [ids[pos] for pos in ok_pos] if len(ok_pos) < cols.n else ids
        if len(set(ok_ids)) == len(ok_ids):
            return
        event = cols.event_us
        best: dict[str, int] = {}
        for pos in ok_pos:
            sid = ids[pos]
            kept = best.get(sid)
            if kept is None or event[pos] > event[kept]:
                best[sid] = pos
        for pos in ok_pos:
            sid = ids[pos]
            kept = best[sid]
            if kept == pos:
                continue
            if event[pos] == event[kept]:
                detail = (
                    f"station {sid} appears more than once in this batch with last_reported"
                    f" {isoformat(int(event[pos]))}; kept the first"
                )
            else:
                detail = (
                    f"station {sid} appears more than once in this batch; kept the newest"
                    f" last_reported {isoformat(int(event[kept]))}, this one is"
                    f" {isoformat(int(event[pos]))}"
                )
            cols.rej.add(pos, R.DUPLICATE, detail)

    def _malformed(
        self, payload: bytes, ingested_at: datetime, batch_id: str, detail: str
    ) -> Batch:
        self.counters["received"] += 1
        self.counters[str(R.MALFORMED)] += 1
        return malformed_batch(
            payload,
            source=self.source,
            topic=TOPIC_STATION_STATUS,
            empty=STATION_STATUS_SCHEMA.empty_table(),
            ingested_at=ingested_at,
            batch_id=batch_id,
            detail=detail,
        )

    # ---- tables -------------------------------------------------------------------------------

    def normalize_table(self, table: pa.Table, *, batch_id: str) -> Batch:
        """Validate an archive batch already mapped to normalized column names (vectorized).

        Required columns: ``station_id``, ``event_ts``, ``num_bikes_available``,
        ``num_docks_available``. Optional: ``ingested_at`` (default ``event_ts +
        publication_delay``), ``capacity`` (default: from station information), and the flags
        ``is_installed``/``is_renting``/``is_returning`` (default True).
        """
        for name in ("station_id", "event_ts", "num_bikes_available", "num_docks_available"):
            if name not in table.column_names:
                raise ConfigError(
                    f"archive batch must have a {name!r} column; got {table.column_names}",
                    where=batch_id,
                )
        n = table.num_rows
        rej = Rejects()

        def column(name: str) -> pa.Array:
            return table.column(name).combine_chunks()

        ids, bad_ids = arrow_ids(column("station_id"), rej)
        event_us, bad_ts = arrow_timestamps(column("event_ts"), "event_ts", rej)
        if "ingested_at" in table.column_names:
            ing_us, bad_ing = arrow_timestamps(column("ingested_at"), "ingested_at", rej)
        else:
            ing_us, bad_ing = event_us + self._delay, set(bad_ts)
        if bad_ing:
            # a dead letter still needs an ingestion time: use the batch's latest known one
            known = np.ones(n, dtype=bool)
            known[list(bad_ing)] = False
            fallback = int(ing_us[known].max()) if known.any() else self._delay
            ing_us = np.where(known, ing_us, fallback)
        bikes, _ = arrow_counts(column("num_bikes_available"), "num_bikes_available", rej)
        docks, _ = arrow_counts(column("num_docks_available"), "num_docks_available", rej)
        if "capacity" in table.column_names:
            caps, cap_null = arrow_counts(column("capacity"), "capacity", rej, nullable=True)
        else:
            caps, cap_null = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
        flags = [
            arrow_flags(column(name), name, rej)
            if name in table.column_names
            else np.ones(n, dtype=bool)
            for name in ("is_installed", "is_renting", "is_returning")
        ]
        cols = Columns(
            n=n,
            rej=rej,
            ids=ids,
            bad_ids=bad_ids,
            event_us=event_us,
            bad_ts=bad_ts,
            ing_us=ing_us,
            bikes=bikes,
            docks=docks,
            caps=caps,
            cap_null=cap_null,
            installed=flags[0],
            renting=flags[1],
            returning=flags[2],
        )

        def raw(positions: list[int]) -> list[bytes]:
            return [orjson.dumps(row, default=str) for row in _rows(table, positions)]

        return self._finish(cols, raw=raw, batch_id=batch_id, ts_field="event_ts")


def _rows(table: pa.Table, positions: list[int]) -> list[dict[str, Any]]:
    """The rows at ``positions`` as dicts (what a dead letter keeps as its raw record)."""
    rows = table.take(pa.array(positions, type=pa.int64()))
    try:
        result: list[dict[str, Any]] = rows.to_pylist()
    except OverflowError:
        # a time Python cannot represent: keep such columns as integers in the epoch's unit
        arrays = [
            col.cast(pa.int64()) if pa.types.is_timestamp(col.type) else col for col in rows.columns
        ]
        result = pa.Table.from_arrays(arrays, names=rows.column_names).to_pylist()
    return result
