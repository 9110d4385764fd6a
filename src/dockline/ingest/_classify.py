"""Batch classification: the stateful pass every normalized batch goes through.

:class:`Classifier` holds one source's per-station state (the accepted event times within
``allowed_lateness`` of each station's newest one) and turns coerced columns (:class:`Columns`,
produced by :mod:`dockline.ingest.normalize` from a document or a table) into a :class:`Batch`:
accepted rows, ``unchanged`` repeats and dead letters. Parsing lives in ``normalize``; deciding
lives here.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.config import IngestConfig
from dockline.core.contracts import (
    STATION_STATUS_SCHEMA,
    TOPIC_STATION_STATUS,
    TS_TYPE,
    DeadLetter,
    RejectReason,
    dead_letter_id,
)
from dockline.core.errors import ConfigError, ContractError
from dockline.core.time import from_micros
from dockline.ingest._coerce import PRIORITY, Rejects
from dockline.ingest._time import human_duration, isoformat

__all__ = ["Batch", "Classifier", "Columns", "ts_array"]

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


def ts_array(micros: np.ndarray) -> pa.Array:
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
            ts_array(event_us),
            ts_array(ingested_us),
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
class Columns:
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


class Classifier:
    """Stateful classification for one source (one feed or one archive). Pure: no I/O.

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

    # ---- the stateful pass and assembly -------------------------------------------------------

    def _finish(
        self,
        cols: Columns,
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
        self, cols: Columns, uniq: list[str], codes: np.ndarray, idx: np.ndarray
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
