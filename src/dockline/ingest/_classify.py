"""Batch classification: the stateful pass every normalized batch goes through.

:class:`Classifier` holds one source's per-station state (the accepted event times within
``allowed_lateness`` of each station's newest one, and a fingerprint of the newest's values) and
turns coerced columns (:class:`Columns`, produced by :mod:`dockline.ingest.normalize` from a
document or a table) into a :class:`Batch`: accepted rows, ``unchanged`` repeats and dead
letters. Parsing lives in ``normalize``; deciding lives here.

Every decision is the one a record-at-a-time validator would take in input order, so it does
not depend on how the input is cut into batches (``ingest.batch_rows``): a record is judged
against the state left by every record before it, in this batch or an earlier one.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.config import IngestConfig
from dockline.core.contracts import (
    CONFIRMATION_SCHEMA,
    STATION_STATUS_SCHEMA,
    TOPIC_STATION_STATUS,
    TS_TYPE,
    DeadLetter,
    RejectReason,
    dead_letter_id,
)
from dockline.core.errors import ConfigError, ContractError
from dockline.core.time import from_micros, to_micros
from dockline.ingest._coerce import PRIORITY, Rejects
from dockline.ingest._time import human_duration, isoformat

__all__ = ["Batch", "Classifier", "Columns", "fingerprints", "ts_array"]

R = RejectReason
_NO_WATERMARK = -(2**62)  # below any real micros value, and far from int64 overflow
_US = 1_000_000
_STATE_VERSION = 2  # 2: each station's newest event has the fingerprint of its values
_UNKNOWN_PRINT = -1  # a time restored from a version-1 state: its values are not known


_NO_CONFIRMATIONS = CONFIRMATION_SCHEMA.empty_table()  # immutable: one shared instance

# --------------------------------------------------------------------------------------------
# The batch


@dataclass(frozen=True)
class Batch:
    """The outcome of normalizing one document or table: accepted rows plus dead letters.

    ``unchanged`` counts records identical in key, time and values to the station's newest
    accepted event: a station that has not reported since the last poll. They are already in
    the log, so they are neither appended again nor dead letters; ``confirmed`` holds them
    (``CONFIRMATION_SCHEMA``: station, the confirmed event time, this batch's ingested_at) for
    documents, and is empty for archive tables.
    ``received == accepted.num_rows + unchanged + len(dead_letters)`` always holds.
    """

    accepted: pa.Table
    dead_letters: list[DeadLetter]
    received: int
    last_updated: datetime | None = None
    ttl: int | None = None
    version: str | None = None
    unchanged: int = 0
    confirmed: pa.Table = field(default_factory=lambda: _NO_CONFIRMATIONS)

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
    """Microseconds since the epoch as a ``TS_TYPE`` array."""
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


def fingerprints(
    bikes: np.ndarray,
    docks: np.ndarray,
    installed: np.ndarray,
    renting: np.ndarray,
    returning: np.ndarray,
) -> np.ndarray:
    """One int64 per record from the values a repeat must match to be ``unchanged``.

    Exact (injective) for counts below 2**30 — a billion bikes at one dock; capacity is left
    out because station information may fill it later.
    """
    packed = (
        (bikes.astype(np.uint64) << np.uint64(33))
        | (docks.astype(np.uint64) << np.uint64(3))
        | (installed.astype(np.uint64) << np.uint64(2))
        | (renting.astype(np.uint64) << np.uint64(1))
        | returning.astype(np.uint64)
    )
    result: np.ndarray = packed.view(np.int64) & np.int64(2**63 - 1)  # never _UNKNOWN_PRINT
    return result


# --------------------------------------------------------------------------------------------
# State


class _State(msgspec.Struct, kw_only=True):
    """Serialized validator state (msgpack); ``prints[sid]``: the newest event's fingerprint."""

    version: int = _STATE_VERSION
    seen: dict[str, list[int]] = msgspec.field(default_factory=dict)
    prints: dict[str, int] = msgspec.field(default_factory=dict)
    capacity: dict[str, int] = msgspec.field(default_factory=dict)
    counters: dict[str, int] = msgspec.field(default_factory=dict)


def _empty_counters() -> dict[str, int]:
    counters = {"received": 0, "accepted": 0, "unchanged": 0}
    counters.update({str(reason): 0 for reason in RejectReason})
    return counters


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


# Stateful outcome codes
_OK, _DUPLICATE, _CONFLICT, _FUTURE, _STALE, _LATE, _UNCHANGED = 0, 1, 2, 3, 4, 5, 6
_TOO_EARLY, _TOO_LATE = 7, 8  # outside the plausible range: reported as stale / future


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
    station's newest accepted event (its watermark), and a fingerprint of the newest's values.
    :meth:`state` serializes it, so an ingester can commit it with the records
    (``ProducerState``) and resume with the same decisions.

    A record with the station and time of the station's newest accepted event is ``unchanged``
    (same values) or a ``conflict`` (other values: the first version stays; a correction is
    never applied silently); one of an older accepted event it still remembers is a
    ``duplicate``. Only the newest event's values are remembered (a fingerprint), so this costs
    one integer per station.
    """

    def __init__(self, source: str, config: IngestConfig, state: bytes | None = None) -> None:
        self.source = source
        self.config = config
        self._lateness = _micros(config.allowed_lateness)
        self._future = _micros(config.future_tolerance)
        self._stale = _micros(config.stale_after)
        self._delay = _micros(config.publication_delay)
        self._earliest = to_micros(config.plausible_from)
        self._latest = to_micros(config.plausible_until)
        self._seen: dict[str, list[int]] = {}
        self._prints: dict[str, int] = {}  # station → fingerprint of its newest event
        self._capacity: dict[str, int] = {}
        self.counters: dict[str, int] = _empty_counters()
        """Cumulative counts: ``received``, ``accepted`` and one per reject reason."""
        if state is not None:
            self._restore(state)

    # ---- state -------------------------------------------------------------------------------

    def state(self) -> bytes:
        """The validator state as msgpack bytes (deterministic: keys sorted, windows pruned)."""
        seen = {}
        prints = {}
        for sid in sorted(self._seen):
            times = self._seen[sid]
            cut = bisect.bisect_left(times, times[-1] - self._lateness)
            seen[sid] = times[cut:]
            prints[sid] = self._prints.get(sid, _UNKNOWN_PRINT)
        snapshot = _State(
            seen=seen,
            prints=prints,
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
        if snapshot.version not in (1, _STATE_VERSION):
            raise ContractError(
                f"validator state version must be 1 or {_STATE_VERSION}; got {snapshot.version}",
                where=self.source,
                reason="bad_state",
            )
        for sid, times in snapshot.seen.items():
            if times:
                self._seen[sid] = sorted(times)
                self._prints[sid] = snapshot.prints.get(sid, _UNKNOWN_PRINT)
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

        def print_at(positions: np.ndarray) -> np.ndarray:
            def column(name: str) -> np.ndarray:
                values = accepted[name].combine_chunks().take(pa.array(positions))
                return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.int64)

            return fingerprints(
                column("num_bikes_available"),
                column("num_docks_available"),
                column("is_installed"),
                column("is_renting"),
                column("is_returning"),
            )

        self._commit(uniq, codes, event, print_at, np.ones(len(codes), dtype=bool))

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
        confirm: bool = False,
    ) -> Batch:
        n = cols.n
        ok = ~cols.rej.mask(n)
        encoded = pc.dictionary_encode(cols.ids)
        uniq: list[str] = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)

        def print_at(positions: np.ndarray) -> np.ndarray:
            return fingerprints(
                cols.bikes[positions],
                cols.docks[positions],
                cols.installed[positions],
                cols.renting[positions],
                cols.returning[positions],
            )

        outcome, prior, first = self._decide(uniq, codes, cols.event_us, cols.ing_us, print_at, ok)
        accepted = ok & (outcome == _OK)
        self._commit(uniq, codes, cols.event_us, print_at, accepted)

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
        same = ok & (outcome == _UNCHANGED)
        unchanged = int(np.count_nonzero(same))
        confirmed = _NO_CONFIRMATIONS
        if confirm and unchanged:
            rows = np.flatnonzero(same)
            confirmed = pa.Table.from_arrays(
                [
                    cols.ids.take(pa.array(rows)),
                    ts_array(cols.event_us[rows]),
                    ts_array(cols.ing_us[rows]),
                ],
                schema=CONFIRMATION_SCHEMA,
            )
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
                first.get(pos),
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
            confirmed=confirmed,
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
        print_at: Callable[[np.ndarray], np.ndarray],
        ok: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, dict[int, bool]]:
        """Decide each row that passed the stateless checks, as if one at a time in input order.

        Returns the outcome per row, the station's newest accepted event time before each row
        (``prior``), and for each repeat of an event accepted earlier in this batch ``True``
        (for the detail text: earlier in this batch, not already stored).
        """
        n = len(codes)
        outcome = np.zeros(n, dtype=np.int8)
        seen = self._seen
        watermark = np.array(
            [seen[sid][-1] if sid in seen else _NO_WATERMARK for sid in uniq], dtype=np.int64
        )
        row_wm = watermark[codes] if n else np.zeros(0, dtype=np.int64)
        lateness = self._lateness
        first: dict[int, bool] = {}
        all_ok = bool(ok.all())

        # 1. events this source accepted before and still remembers: the station's newest one
        # (a quiet station on a re-poll: most of a live feed's records) or an older one within
        # the lateness window. Their fingerprint decides unchanged/duplicate vs conflict.
        has_wm = row_wm != _NO_WATERMARK
        at_wm = has_wm & (event == row_wm)
        older = has_wm & (event < row_wm) & (event >= row_wm - lateness)
        if not all_ok:
            at_wm &= ok
            older &= ok
        known_rows = np.flatnonzero(at_wm)
        known_prints = np.zeros(len(known_rows), dtype=np.int64)
        if len(known_rows):
            newest_print = np.array(
                [self._prints.get(sid, _UNKNOWN_PRINT) for sid in uniq], dtype=np.int64
            )
            known_prints = newest_print[codes[known_rows]]
        if older.any():  # few: repeats of older events, and late rows
            extra_rows: list[int] = []
            for pos in np.flatnonzero(older).tolist():
                times = seen[uniq[codes[pos]]]
                at = int(event[pos])
                i = bisect.bisect_left(times, at)
                if i < len(times) and times[i] == at:
                    extra_rows.append(pos)
            if extra_rows:  # an older event again is a duplicate: its values are not compared
                extra_prints = [_UNKNOWN_PRINT] * len(extra_rows)
                known_rows = np.concatenate([known_rows, np.asarray(extra_rows, np.int64)])
                known_prints = np.concatenate(
                    [known_prints, np.asarray(extra_prints, dtype=np.int64)]
                )
        known = np.zeros(n, dtype=bool)
        known[known_rows] = True

        # 2. plausibility of each row as a new event: near ingested_at, within the configured
        # range (the first that fails names the reason)
        checks = (
            (_FUTURE, event > ing + self._future),
            (_STALE, event < ing - self._stale),
            (_TOO_LATE, event > self._latest),
            (_TOO_EARLY, event < self._earliest),
        )
        implausible = checks[0][1] | checks[1][1] | checks[2][1] | checks[3][1]
        if not all_ok:
            implausible &= ok
        fs = np.zeros(n, dtype=np.int8)
        if implausible.any():
            for code, failed in reversed(checks):  # the earliest check written last wins
                fs[failed] = code
            fs[~implausible] = 0

        # 3. the station's newest accepted event before each row (state or earlier in the
        # batch). Rows that are not implausible new events contribute: accepted rows raise the
        # maximum, and the others (late rows, repeats) never exceed it, so a prefix maximum over
        # them equals the maximum over the accepted ones.
        prior = row_wm.copy()
        rows = np.arange(n) if all_ok else np.flatnonzero(ok)
        if not len(rows):
            return outcome, prior, first
        contributes = ~implausible | known
        c, t = (codes, event) if all_ok else (codes[rows], event[rows])
        sorted_rows = _is_sorted(c, t)
        if sorted_rows and bool(contributes.all()):
            prev = np.full(len(rows), _NO_WATERMARK, dtype=np.int64)
            same_station = c[1:] == c[:-1]
            prev[1:][same_station] = t[:-1][same_station]
        else:
            mask = contributes if all_ok else contributes[rows]
            prev = _grouped_prior_max(c, np.where(mask, t, _NO_WATERMARK))
        if all_ok:
            prior = np.maximum(row_wm, prev)
            within = t >= prior - lateness
        else:
            prior[rows] = np.maximum(row_wm[rows], prev)
            within = np.zeros(n, dtype=bool)
            within[rows] = t >= prior[rows] - lateness

        # 4. repeats within the batch: among rows with the same station and time, the first
        # plausible one is accepted and the later ones repeat them
        repeats = np.zeros(0, dtype=np.int64)
        origins = np.zeros(0, dtype=np.int64)
        candidates = within if all_ok else ok & within
        if len(known_rows):
            candidates = candidates & ~known
        fresh = np.flatnonzero(candidates)
        if len(fresh) > 1:
            whole = len(fresh) == n
            fc, ft = (codes, event) if whole else (codes[fresh], event[fresh])
            if sorted_rows and (whole or _is_sorted(fc, ft)):
                order = None
                cs, ts_ = fc, ft
            else:
                order = np.lexsort((ft, fc))  # stable: equal keys keep input order
                cs, ts_ = fc[order], ft[order]
            same_key = (cs[1:] == cs[:-1]) & (ts_[1:] == ts_[:-1])
            if same_key.any():
                ordered = fresh if order is None else fresh[order]
                same_key = np.r_[False, same_key]
                starts = np.flatnonzero(~same_key)
                run = np.cumsum(~same_key) - 1
                plausible = ~implausible[ordered]
                if plausible.all():
                    origin = starts[run]
                else:  # the first plausible row of each run (len(order) when none is)
                    index = np.where(plausible, np.arange(len(ordered)), len(ordered))
                    origin = np.minimum.reduceat(index, starts)[run]
                is_repeat = np.arange(len(ordered)) > origin
                repeats = ordered[is_repeat]
                origins = ordered[origin[is_repeat]]
                first = dict.fromkeys(repeats.tolist(), True)

        # 5. repeats of a remembered event: of the station's newest one, the values decide
        # between unchanged and conflict; of an older one, a duplicate
        kept = within[known_rows]
        rep_rows = np.concatenate([known_rows[kept], repeats])
        if len(rep_rows):
            newest = event[rep_rows] == prior[rep_rows]
            outcome[rep_rows] = _DUPLICATE
            compare = np.flatnonzero(newest)
            if len(compare):
                stored = np.concatenate(
                    [
                        known_prints[kept],
                        print_at(origins) if len(origins) else np.zeros(0, dtype=np.int64),
                    ]
                )[compare]
                rows_compared = rep_rows[compare]
                conflict = (stored != print_at(rows_compared)) & (stored != _UNKNOWN_PRINT)
                outcome[rows_compared] = np.where(conflict, _CONFLICT, _UNCHANGED)
        # 6. the rest are new events: implausible, late, or accepted
        decided = np.zeros(n, dtype=bool)
        decided[rep_rows] = True
        new = ~decided if all_ok else ok & ~decided
        if implausible.any():
            outcome[new & implausible] = fs[new & implausible]
            new &= ~implausible
        outcome[new & ~within] = _LATE
        return outcome, prior, first

    def _commit(
        self,
        uniq: list[str],
        codes: np.ndarray,
        event: np.ndarray,
        print_at: Callable[[np.ndarray], np.ndarray],
        accepted: np.ndarray,
    ) -> None:
        """Add accepted event times to the per-station windows; remember the newest's values."""
        idx = np.flatnonzero(accepted)
        if not len(idx):
            return
        c, t = codes[idx], event[idx]
        if not _is_sorted(c, t):
            order = np.lexsort((t, c))
            idx, c, t = idx[order], c[order], t[order]
        # only the tail within the lateness window of each station's new maximum matters
        last = np.ones(len(c), dtype=bool)
        last[:-1] = c[1:] != c[:-1]
        group = np.cumsum(np.r_[True, c[1:] != c[:-1]]) - 1
        group_max = t[last][group]
        keep = t >= group_max - self._lateness
        seen = self._seen
        lateness = self._lateness
        # the values of each station's newest row in this commit (-1 on the other rows): they
        # become the station's remembered values when that row is its new newest event
        last_kept = last[keep]
        kept_prints = np.full(len(last_kept), -1, dtype=np.int64)
        kept_prints[last_kept] = print_at(idx[last])
        prints = self._prints
        for code, time, fp in zip(
            c[keep].tolist(), t[keep].tolist(), kept_prints.tolist(), strict=True
        ):
            sid = uniq[code]
            times = seen.get(sid)
            if times is None:
                seen[sid] = [time]
                prints[sid] = fp
            elif time > times[-1]:
                times.append(time)
                if fp >= 0:
                    prints[sid] = fp
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
        in_batch: bool | None,
    ) -> tuple[int, RejectReason, str]:
        when = event_dt.isoformat()
        cfg = self.config
        where = "earlier in this batch" if in_batch else "already"
        if outcome == _DUPLICATE:
            reason = R.DUPLICATE
            detail = (
                f"station {sid} {where} has an accepted event with {field} {when}"
                f" (same values; its newest is {isoformat(prior)})"
            )
        elif outcome == _CONFLICT:
            reason = R.CONFLICT
            detail = (
                f"station {sid} {where} has an accepted event with {field} {when} and other"
                " counts or flags; the first version is kept"
            )
        elif outcome == _TOO_LATE:
            reason = R.FUTURE
            detail = (
                f"{field} {when} is after the plausible range"
                f" (plausible_until {cfg.plausible_until.isoformat()})"
            )
        elif outcome == _TOO_EARLY:
            reason = R.STALE
            detail = (
                f"{field} {when} is before the plausible range"
                f" (plausible_from {cfg.plausible_from.isoformat()})"
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
