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

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.config import IngestConfig
from dockline.core.contracts import (
    STATION_INFORMATION_SCHEMA,
    STATION_STATUS_SCHEMA,
    TOPIC_STATION_INFORMATION,
    TOPIC_STATION_STATUS,
    TS_TYPE,
    DeadLetter,
    RejectReason,
    dead_letter_id,
)
from dockline.core.errors import ConfigError, ContractError
from dockline.core.time import ensure_utc, from_micros, to_micros
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
    human_duration,
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
_NO_WATERMARK = -(2**62)  # below any real micros value, and far from int64 overflow
_US = 1_000_000
_STATE_VERSION = 1


# --------------------------------------------------------------------------------------------
# The batch


@dataclass(frozen=True)
class Batch:
    """The outcome of normalizing one document or table: accepted rows plus dead letters.

    ``unchanged`` counts records identical in key and time to the station's newest accepted
    event: a station that has not reported since the last poll. They are already in the log, so
    they are neither appended again nor dead letters.
    ``received == accepted.num_rows + unchanged + len(dead_letters)`` always holds.
    """

    accepted: pa.Table
    dead_letters: list[DeadLetter]
    received: int
    last_updated: datetime | None = None
    ttl: int | None = None
    version: str | None = None
    unchanged: int = 0

    def __post_init__(self) -> None:
        if self.accepted.num_rows + self.unchanged + len(self.dead_letters) != self.received:
            raise ContractError(
                f"row accounting broken: accepted {self.accepted.num_rows} + unchanged"
                f" {self.unchanged} + dead letters {len(self.dead_letters)}"
                f" != received {self.received}",
                reason="accounting",
            )


# --------------------------------------------------------------------------------------------
# Arrow construction


def _ts_array(micros: np.ndarray) -> pa.Array:
    return pa.array(micros.astype("datetime64[us]"), type=TS_TYPE)


def _status_table(
    *,
    ids: pa.Array,
    event_us: np.ndarray,
    ingested_us: np.ndarray,
    bikes: np.ndarray,
    docks: np.ndarray,
    capacity: pa.Array,
    installed: np.ndarray,
    renting: np.ndarray,
    returning: np.ndarray,
    source: str,
) -> pa.Table:
    n = len(event_us)
    return pa.Table.from_arrays(
        [
            ids,
            _ts_array(event_us),
            _ts_array(ingested_us),
            pa.array(bikes.astype(np.int32), type=pa.int32()),
            pa.array(docks.astype(np.int32), type=pa.int32()),
            capacity,
            pa.array(installed, type=pa.bool_()),
            pa.array(renting, type=pa.bool_()),
            pa.array(returning, type=pa.bool_()),
            pa.array([source] * n, type=pa.string()),
        ],
        schema=STATION_STATUS_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# State


class _State(msgspec.Struct, kw_only=True):
    """Serialized validator state (msgpack)."""

    version: int = _STATE_VERSION
    seen: dict[str, list[int]] = msgspec.field(default_factory=dict)
    capacity: dict[str, int] = msgspec.field(default_factory=dict)
    counters: dict[str, int] = msgspec.field(default_factory=dict)


def _empty_counters() -> dict[str, int]:
    counters = {"received": 0, "accepted": 0, "unchanged": 0}
    counters.update({str(reason): 0 for reason in RejectReason})
    return counters


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


# Stateful outcome codes, in the order they are checked
_OK, _DUP_STATE, _DUP_BATCH, _FUTURE, _STALE, _LATE, _UNCHANGED = 0, 1, 2, 3, 4, 5, 6


@dataclass(slots=True)
class _Columns:
    """Coerced columns of one batch, before the stateful pass (positions = input positions)."""

    n: int
    rej: Rejects
    ids: pa.Array  # string, no nulls ("" where unreadable)
    bad_ids: set[int]
    event_us: np.ndarray
    bad_ts: set[int]
    ing_us: np.ndarray
    bikes: np.ndarray
    docks: np.ndarray
    caps: np.ndarray
    cap_null: np.ndarray
    installed: np.ndarray
    renting: np.ndarray
    returning: np.ndarray


class StationStatusNormalizer:
    """Stateful validator for one source (one feed or one archive). Pure: no I/O.

    The state is, per station, the accepted event times within ``allowed_lateness`` of the
    station's newest accepted event (its watermark). :meth:`state` serializes it, so an ingester
    can commit it with the records (``ProducerState``) and resume with the same decisions.
    """

    def __init__(self, source: str, config: IngestConfig, state: bytes | None = None) -> None:
        self.source = source
        self.config = config
        self._lateness = _micros(config.allowed_lateness)
        self._future = _micros(config.future_tolerance)
        self._stale = _micros(config.stale_after)
        self._delay = _micros(config.publication_delay)
        self._seen: dict[str, list[int]] = {}
        self._capacity: dict[str, int] = {}
        self.counters: dict[str, int] = _empty_counters()
        """Cumulative counts: ``received``, ``accepted`` and one per reject reason."""
        if state is not None:
            self._restore(state)

    # ---- state -------------------------------------------------------------------------------

    def state(self) -> bytes:
        """The validator state as msgpack bytes (deterministic: keys sorted, windows pruned)."""
        seen = {}
        for sid in sorted(self._seen):
            times = self._seen[sid]
            seen[sid] = times[bisect.bisect_left(times, times[-1] - self._lateness) :]
        snapshot = _State(
            seen=seen,
            capacity={k: self._capacity[k] for k in sorted(self._capacity)},
            counters=dict(self.counters),
        )
        return msgspec.msgpack.encode(snapshot)

    def _restore(self, state: bytes) -> None:
        try:
            snapshot = msgspec.msgpack.decode(state, type=_State)
        except msgspec.DecodeError as exc:
            raise ContractError(
                f"validator state is invalid: {exc}", where=self.source, reason="bad_state"
            ) from exc
        if snapshot.version != _STATE_VERSION:
            raise ContractError(
                f"validator state version must be {_STATE_VERSION}; got {snapshot.version}",
                where=self.source,
                reason="bad_state",
            )
        self._seen = {sid: sorted(times) for sid, times in snapshot.seen.items() if times}
        self._capacity = dict(snapshot.capacity)
        self.counters.update(snapshot.counters)

    def observe(self, accepted: pa.Table) -> None:
        """Re-apply records this source accepted before (idempotent).

        Used after a restart to bring a state snapshot up to date with the records appended
        since it was taken (the log's tail), so the state need not be written on every append.
        """
        if not accepted.num_rows:
            return
        encoded = pc.dictionary_encode(accepted["station_id"].combine_chunks())
        uniq = [str(v) for v in encoded.dictionary.to_pylist()]
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        event = accepted["event_ts"].cast(pa.int64()).to_numpy(zero_copy_only=False)
        self._commit(uniq, codes, event, np.ones(len(codes), dtype=bool))

    def update_information(self, info: pa.Table) -> None:
        """Remember each station's capacity from ``station_id``/``capacity`` columns (last wins)."""
        for name in ("station_id", "capacity"):
            if name not in info.column_names:
                raise ConfigError(
                    f"station information must have a {name!r} column; got {info.column_names}"
                )
        ids = info.column("station_id").cast(pa.string()).to_pylist()
        caps = info.column("capacity").to_pylist()
        for sid, cap in zip(ids, caps, strict=True):
            if sid is not None and cap is not None:
                self._capacity[sid] = int(cap)

    # ---- documents ----------------------------------------------------------------------------

    def normalize_document(self, payload: bytes, *, ingested_at: datetime, batch_id: str) -> Batch:
        """Validate one ``station_status`` document (GBFS 1.x, 2.x or 3.0).

        A payload that is not JSON or not a ``station_status`` document yields one dead letter
        with reason ``malformed`` (``received == 1``).
        """
        ingested_at = ensure_utc(ingested_at)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return self._malformed(payload, ingested_at, batch_id, f"not valid JSON: {exc}")
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

        cols = _Columns(
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
            return [orjson.dumps(original[pos]) for pos in positions]

        return self._finish(
            cols,
            raw=raw,
            batch_id=batch_id,
            ts_field="last_reported",
            last_updated=_maybe_datetime(last_updated_raw),
            ttl=ttl if type(ttl) is int else None,
            version=version,
        )

    def _dedupe_document(self, cols: _Columns, ids: list[str]) -> None:
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
        cols = _Columns(
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

    def _finish(
        self,
        cols: _Columns,
        *,
        raw: Callable[[list[int]], list[bytes]],
        batch_id: str,
        ts_field: str,
        last_updated: datetime | None = None,
        ttl: int | None = None,
        version: str | None = None,
    ) -> Batch:
        n = cols.n
        ok = ~cols.rej.mask(n)
        encoded = pc.dictionary_encode(cols.ids)
        uniq: list[str] = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        outcome, prior = self._decide(uniq, codes, cols.event_us, cols.ing_us, ok)
        accepted = ok & (outcome == _OK)
        self._commit(uniq, codes, cols.event_us, accepted)

        idx = np.flatnonzero(accepted)
        capacity = self._capacity_column(cols, uniq, codes, idx)
        table = _status_table(
            ids=cols.ids.take(pa.array(idx)),
            event_us=cols.event_us[idx],
            ingested_us=cols.ing_us[idx],
            bikes=cols.bikes[idx],
            docks=cols.docks[idx],
            capacity=capacity,
            installed=cols.installed[idx],
            renting=cols.renting[idx],
            returning=cols.returning[idx],
            source=self.source,
        )

        rejected = cols.rej.by_pos
        unchanged = int(np.count_nonzero(ok & (outcome == _UNCHANGED)))
        stateful = np.flatnonzero(ok & (outcome != _OK) & (outcome != _UNCHANGED)).tolist()
        positions = sorted(rejected.keys() | set(stateful))
        # datetimes once per rejected row (and once per distinct ingestion time)
        event_dt = {
            pos: from_micros(int(cols.event_us[pos])) for pos in positions if pos not in cols.bad_ts
        }
        ing_dt = {int(us): from_micros(int(us)) for us in np.unique(cols.ing_us[positions])}
        for pos in stateful:
            rejected[pos] = self._stateful_reject(
                int(outcome[pos]),
                uniq[codes[pos]],
                event_dt[pos],
                int(cols.event_us[pos]),
                int(cols.ing_us[pos]),
                int(prior[pos]),
                ts_field,
            )
        raws = raw(positions)
        letters = []
        source, bad_ids = self.source, cols.bad_ids
        for pos, payload in zip(positions, raws, strict=True):
            _, reason, detail = rejected[pos]
            letters.append(
                DeadLetter(
                    id=dead_letter_id(source, batch_id, pos),
                    source=source,
                    topic=TOPIC_STATION_STATUS,
                    reason=reason,
                    detail=detail,
                    raw=payload,
                    ingested_at=ing_dt[int(cols.ing_us[pos])],
                    key=None if pos in bad_ids else uniq[codes[pos]],
                    event_ts=event_dt.get(pos),
                )
            )
        counters = self.counters
        counters["received"] += n
        counters["accepted"] += len(idx)
        counters["unchanged"] += unchanged
        for letter in letters:
            counters[letter.reason.value] += 1
        return Batch(
            accepted=table,
            dead_letters=letters,
            received=n,
            last_updated=last_updated,
            ttl=ttl,
            version=version,
            unchanged=unchanged,
        )

    def _capacity_column(
        self, cols: _Columns, uniq: list[str], codes: np.ndarray, idx: np.ndarray
    ) -> pa.Array:
        caps = cols.caps[idx]
        null = cols.cap_null[idx]
        if null.any() and self._capacity:
            known = self._capacity
            per_station = np.array([known.get(sid, -1) for sid in uniq], dtype=np.int64)
            fill = per_station[codes[idx]]
            use = null & (fill >= 0)
            caps = np.where(use, fill, caps)
            null = null & ~use
        return pa.array(caps.astype(np.int32), type=pa.int32(), mask=null if null.any() else None)

    def _decide(
        self,
        uniq: list[str],
        codes: np.ndarray,
        event: np.ndarray,
        ing: np.ndarray,
        ok: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Duplicate → future → stale → late, for rows that passed the stateless checks."""
        n = len(codes)
        outcome = np.zeros(n, dtype=np.int8)
        seen = self._seen
        watermark = np.array(
            [seen[sid][-1] if sid in seen else _NO_WATERMARK for sid in uniq], dtype=np.int64
        )
        row_wm = watermark[codes] if n else np.zeros(0, dtype=np.int64)
        lateness = self._lateness

        # the station's newest accepted event again: it has not reported since the last poll,
        # which is most of a live feed's stations on most polls. Not an error, and already
        # stored, so it is counted, not dead-lettered.
        known = ok & (row_wm != _NO_WATERMARK)
        outcome[known & (event == row_wm)] = _UNCHANGED
        # repeats of older accepted events kept in the state (only the lateness window is kept;
        # anything older is judged `late` instead, the same way before and after a restart)
        maybe = np.flatnonzero(known & (event < row_wm) & (event >= row_wm - lateness))
        for pos in maybe.tolist():
            times = seen[uniq[codes[pos]]]
            at = int(event[pos])
            i = bisect.bisect_left(times, at)
            if i < len(times) and times[i] == at:
                outcome[pos] = _DUP_STATE

        # duplicates within the batch: same (station, event time); the first copy is kept
        live = np.flatnonzero(ok & (outcome == _OK))
        c, t = codes[live], event[live]
        in_order = _is_sorted(c, t)
        if in_order:
            same = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
            outcome[live[1:][same]] = _DUP_BATCH
        else:
            order = np.lexsort((t, c))  # stable: equal keys keep input order
            cs, ts_ = c[order], t[order]
            same = (cs[1:] == cs[:-1]) & (ts_[1:] == ts_[:-1])
            outcome[live[order[1:][same]]] = _DUP_BATCH

        pending = ok & (outcome == _OK)
        outcome[pending & (event > ing + self._future)] = _FUTURE
        pending &= outcome == _OK
        outcome[pending & (event < ing - self._stale)] = _STALE
        pending &= outcome == _OK

        # late: older than the newest accepted event of the station (state or earlier in the
        # batch) minus the allowed lateness; late rows never raise the maximum, so a prefix
        # maximum over all candidates equals the maximum over the accepted ones
        prior = row_wm.copy()
        cand = np.flatnonzero(pending)
        if len(cand):
            c, t = codes[cand], event[cand]
            if _is_sorted(c, t):
                prev = np.full(len(cand), _NO_WATERMARK, dtype=np.int64)
                same_station = c[1:] == c[:-1]
                prev[1:][same_station] = t[:-1][same_station]
                prior[cand] = np.maximum(row_wm[cand], prev)
            else:
                prior[cand] = np.maximum(row_wm[cand], _grouped_prior_max(c, t))
            late = t < prior[cand] - lateness
            outcome[cand[late]] = _LATE
        return outcome, prior

    def _commit(
        self, uniq: list[str], codes: np.ndarray, event: np.ndarray, accepted: np.ndarray
    ) -> None:
        """Add accepted event times to the per-station windows."""
        idx = np.flatnonzero(accepted)
        if not len(idx):
            return
        c, t = codes[idx], event[idx]
        if not _is_sorted(c, t):
            order = np.lexsort((t, c))
            c, t = c[order], t[order]
        # only the tail within the lateness window of each station's new maximum matters
        last = np.ones(len(c), dtype=bool)
        last[:-1] = c[1:] != c[:-1]
        group = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1
        group_max = t[last][group]
        keep = t >= group_max - self._lateness
        seen = self._seen
        lateness = self._lateness
        for code, time in zip(c[keep].tolist(), t[keep].tolist(), strict=True):
            sid = uniq[code]
            times = seen.get(sid)
            if times is None:
                seen[sid] = [time]
            elif time > times[-1]:
                times.append(time)
                # prune now and then, not on every append: decisions only look inside the
                # window and state() prunes exactly, so this bounds memory at no cost per row
                if len(times) % 32 == 0 and times[0] < time - lateness:
                    del times[: bisect.bisect_left(times, time - lateness)]
            else:
                i = bisect.bisect_left(times, time)
                if i == len(times) or times[i] != time:
                    times.insert(i, time)

    def _stateful_reject(
        self,
        outcome: int,
        sid: str,
        event_dt: datetime,
        event: int,
        ing: int,
        prior: int,
        field: str,
    ) -> tuple[int, RejectReason, str]:
        when = event_dt.isoformat()
        cfg = self.config
        if outcome == _DUP_STATE:
            reason = R.DUPLICATE
            detail = f"station {sid} already has an accepted event with {field} {when}"
        elif outcome == _DUP_BATCH:
            reason = R.DUPLICATE
            detail = (
                f"station {sid} appears twice in this batch with {field} {when}; kept the first"
            )
        elif outcome == _FUTURE:
            reason = R.FUTURE
            detail = (
                f"{field} {when} is {human_duration((event - ing) / _US)} after ingested_at"
                f" (future_tolerance {human_duration(cfg.future_tolerance)})"
            )
        elif outcome == _STALE:
            reason = R.STALE
            detail = (
                f"{field} {when} is {human_duration((ing - event) / _US)} before ingested_at"
                f" (stale_after {human_duration(cfg.stale_after)})"
            )
        else:
            reason = R.LATE
            detail = (
                f"{field} {when} is {human_duration((prior - event) / _US)} behind station {sid}'s"
                f" newest accepted event {isoformat(prior)}"
                f" (allowed_lateness {human_duration(cfg.allowed_lateness)})"
            )
        return PRIORITY[reason], reason, detail


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


def _is_sorted(codes: np.ndarray, times: np.ndarray) -> bool:
    """Whether rows are ordered by (station code, time) — the common case, checked in O(n)."""
    if len(codes) < 2:
        return True
    dc = codes[1:] - codes[:-1]
    return bool(np.all((dc > 0) | ((dc == 0) & (times[1:] >= times[:-1]))))


def _grouped_prior_max(codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """For each row, the max time of earlier rows (input order) with the same code."""
    order = np.argsort(codes, kind="stable")
    cs = codes[order]
    uniq_t, rank = np.unique(times[order], return_inverse=True)
    m = len(uniq_t)
    # offset each group's ranks so one running maximum never leaks across groups
    group = np.cumsum(np.r_[True, cs[1:] != cs[:-1]]) - 1
    key = group.astype(np.int64) * m + rank
    running = np.maximum.accumulate(key)
    prev = np.full(len(cs), _NO_WATERMARK, dtype=np.int64)
    same = cs[1:] == cs[:-1]
    prev_key = running[:-1][same] - group[1:][same] * m
    prev[1:][same] = uniq_t[prev_key]
    result = np.empty_like(prev)
    result[order] = prev
    return result


# --------------------------------------------------------------------------------------------
# Document helpers

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

    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return malformed(f"not valid JSON: {exc}")
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
            _ts_array(event),
            _ts_array(np.full(k, to_micros(ingested_at), dtype=np.int64)),
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
            raw=orjson.dumps(stations[pos]),
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
