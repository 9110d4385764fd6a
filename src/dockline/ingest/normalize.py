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

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from dockline.core.contracts import (
    STATION_INFORMATION_SCHEMA,
    STATION_STATUS_SCHEMA,
    TOPIC_STATION_INFORMATION,
    TOPIC_STATION_STATUS,
    DeadLetter,
    RejectReason,
    dead_letter_id,
)
from dockline.core.errors import ConfigError
from dockline.core.time import ensure_utc, from_micros, to_micros
from dockline.ingest._batch import Batch, Columns, ts_array
from dockline.ingest._classify import Classifier
from dockline.ingest._coerce import (
    PRIORITY,
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
from dockline.ingest._time import (
    TimestampError,
    isoformat,
    parse_timestamp,
    show_value,
)

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
        stations = _stations(doc)
        if stations is None:
            return self._malformed(
                payload, ingested_at, batch_id, "not a GBFS document: data.stations must be a list"
            )
        if _foreign_feed(stations):
            return self._malformed(
                payload,
                ingested_at,
                batch_id,
                "not a station_status document: its records have no availability counts but"
                " have station_information or vehicle fields",
            )
        assert isinstance(doc, dict)
        version = _version(doc)
        last_updated_raw = doc.get("last_updated")
        is_str_time = isinstance(last_updated_raw, str)
        legacy = version.startswith("1.") if version else not is_str_time
        v3 = version.startswith("3.") if version else is_str_time
        ttl = doc.get("ttl")

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
            for pos, record in enumerate(original):
                if not isinstance(record, dict):
                    # a non-object has no fields: its only fault is its type
                    rej.by_pos[pos] = (
                        PRIORITY[R.BAD_TYPE],
                        R.BAD_TYPE,
                        f"a station record must be a JSON object; got {show_value(record)}",
                    )
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
            last_updated=_maybe_datetime(last_updated_raw),
            ttl=ttl if type(ttl) is int else None,
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
        letter = DeadLetter(
            id=dead_letter_id(self.source, batch_id, 0),
            source=self.source,
            topic=TOPIC_STATION_STATUS,
            reason=R.MALFORMED,
            detail=detail,
            raw=bytes(payload),
            ingested_at=ingested_at,
        )
        self.counters["received"] += 1
        self.counters[str(R.MALFORMED)] += 1
        return Batch(
            accepted=STATION_STATUS_SCHEMA.empty_table(), dead_letters=[letter], received=1
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

    # ---- the stateful pass and assembly -------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Document helpers

_AMBIGUOUS_KEYS = ("data", "stations")
_QUOTE_D = np.frombuffer(b'"d', dtype="<u2")[0]


def _data_keys(payload: bytes) -> int:
    """Occurrences of ``"data"`` in ``payload``: a vectorized scan for the rare pair ``"d``.

    ``bytes.count`` takes ~15 % of an orjson parse here (``"`` is everywhere in JSON, so its
    search cannot skip); comparing byte pairs as 16-bit words at even and odd offsets takes
    ~3 %. More than one sends the document to the exact (slow) duplicate-key check.
    """
    size = len(payload)
    even = np.frombuffer(payload, dtype="<u2", count=size // 2)
    odd = (
        np.frombuffer(payload, dtype="<u2", count=(size - 1) // 2, offset=1)
        if size > 1
        else even[:0]
    )
    starts = [*(np.flatnonzero(even == _QUOTE_D) * 2).tolist()]
    starts += (np.flatnonzero(odd == _QUOTE_D) * 2 + 1).tolist()
    return sum(payload.startswith(b'"data"', start) for start in starts)


def load_document(payload: bytes) -> tuple[Any, str | None, bool]:
    """Parse a GBFS document: ``(doc, None, exact)``, or ``(None, why it is malformed, True)``.

    ``exact`` is False when the standard library parsed it: its records may hold numbers that
    orjson would write back differently (``NaN``, ``Infinity``), see :func:`dump_record`.

    ``orjson`` first (the hot path). What it refuses only for a number it cannot hold — an
    integer beyond 64 bits, ``1e999``, ``NaN`` — is parsed again by the standard library, so the
    one record with that number is dead-lettered by the field checks, not the whole document.
    Nesting deeper than orjson's limit is malformed (never a RecursionError), and so is a
    document with ``data`` twice (or, then, ``stations``): a parser keeps one copy silently.
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc) or "recursion" in str(exc):
            return None, f"not valid JSON: {exc}", True
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):
            return None, f"not valid JSON: {exc}", True
        exact = False
    else:
        exact = True
    if _data_keys(payload) > 1:
        repeated = _repeated_keys(payload)
        if repeated:
            return (
                None,
                (
                    f"the document has the key {repeated[0]!r} more than once; which copy holds"
                    " the records is ambiguous"
                ),
                True,
            )
    return doc, None, exact


def _repeated_keys(payload: bytes) -> list[str]:
    """Keys among ``data``/``stations`` that occur twice in one JSON object (slow; rare)."""
    found: list[str] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            found.extend(k for k in _AMBIGUOUS_KEYS if keys.count(k) > 1)
        return dict(pairs)

    try:
        json.loads(payload, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return []
    return found


def dump_record(record: Any, *, exact: bool = True) -> bytes:
    """A record as JSON bytes for its dead letter, as close to what was received as possible.

    orjson first; the standard library beyond orjson's depth limit, or when the document came
    from the standard library (``exact=False``: orjson would write ``NaN``/``Infinity`` as null).
    """
    if exact:
        try:
            return orjson.dumps(record)
        except (orjson.JSONEncodeError, TypeError):
            pass
    try:
        return json.dumps(record, allow_nan=True).encode()
    except (ValueError, TypeError, RecursionError):
        return repr(record).encode()[:10_000]


_STATUS_KEYS = frozenset(
    {"last_reported", "num_bikes_available", "num_vehicles_available", "num_docks_available"}
)
_FOREIGN_KEYS = frozenset({"lat", "lon", "bike_id", "vehicle_id"})


def _foreign_feed(stations: list[Any]) -> bool:
    """Records of another feed (information, vehicles) and none of station_status."""
    objects = [s for s in stations if isinstance(s, dict)]
    return (
        bool(objects)
        and not any(_STATUS_KEYS.intersection(s) for s in objects)
        and any(_FOREIGN_KEYS.intersection(s) for s in objects)
    )


def _stations(doc: Any) -> list[Any] | None:
    if not isinstance(doc, dict):
        return None
    data = doc.get("data")
    if not isinstance(data, dict):
        return None
    stations = data.get("stations")
    return stations if isinstance(stations, list) else None


def _version(doc: dict[str, Any]) -> str | None:
    version = doc.get("version")
    if version is None or isinstance(version, bool):
        return None
    return str(version)


def _maybe_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return from_micros(parse_timestamp(value))
    except (TimestampError, OverflowError):
        return None


def _localized(value: Any) -> str | None:
    """A plain string, or a v3.0 list of ``{text, language}`` (English, else the first)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for item in value:
            if str(item.get("language", "")).lower().startswith("en") and isinstance(
                item.get("text"), str
            ):
                return str(item["text"])
        first = value[0].get("text")
        if isinstance(first, str):
            return first
    raise TypeError(value)


# --------------------------------------------------------------------------------------------
# station_information


def normalize_station_information(
    payload: bytes, *, source: str, ingested_at: datetime, batch_id: str
) -> Batch:
    """Validate one ``station_information`` document into ``STATION_INFORMATION_SCHEMA`` rows.

    ``event_ts`` is the document's ``last_updated``; a document without a usable
    ``last_updated`` is ``malformed``. Duplicate station ids keep the first record.
    """
    ingested_at = ensure_utc(ingested_at)

    def malformed(detail: str) -> Batch:
        letter = DeadLetter(
            id=dead_letter_id(source, batch_id, 0),
            source=source,
            topic=TOPIC_STATION_INFORMATION,
            reason=R.MALFORMED,
            detail=detail,
            raw=bytes(payload),
            ingested_at=ingested_at,
        )
        return Batch(
            accepted=STATION_INFORMATION_SCHEMA.empty_table(), dead_letters=[letter], received=1
        )

    doc, problem, exact = load_document(payload)
    if problem is not None:
        return malformed(problem)
    stations = _stations(doc)
    if stations is None:
        return malformed("not a GBFS document: data.stations must be a list")
    assert isinstance(doc, dict)
    last_updated = _maybe_datetime(doc.get("last_updated"))
    if last_updated is None:
        return malformed(
            f"last_updated must be a POSIX or RFC 3339 timestamp; got"
            f" {show_value(doc.get('last_updated'))}"
        )
    ttl = doc.get("ttl")
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
            names.append(_localized(value))
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
    for pos, record in enumerate(stations):
        if not isinstance(record, dict):
            rej.by_pos[pos] = (
                PRIORITY[R.BAD_TYPE],
                R.BAD_TYPE,
                f"a station record must be a JSON object; got {show_value(record)}",
            )
            bad_ids.add(pos)
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
        ttl=ttl if type(ttl) is int else None,
        version=_version(doc),
    )


# --------------------------------------------------------------------------------------------
# Archive column mapping


def map_columns(table: pa.Table, mapping: Mapping[str, str]) -> pa.Table:
    """Rename archive columns to normalized names, e.g. ``{"obs_ts": "event_ts"}``.

    A mapped source column that does not exist, or a rename that would create a duplicate
    column, is a :class:`~dockline.core.errors.ConfigError` naming the column.
    """
    names: Sequence[str] = table.column_names
    for src, dst in mapping.items():
        if src not in names:
            raise ConfigError(
                f"mapped column {src!r} (→ {dst!r}) does not exist; columns are {list(names)}"
            )
    renamed = [mapping.get(name, name) for name in names]
    if len(set(renamed)) != len(renamed):
        clash = sorted({name for name in renamed if renamed.count(name) > 1})
        raise ConfigError(
            f"column mapping produces duplicate columns {clash}; columns are {list(names)}"
        )
    return table.rename_columns(renamed)
