"""Batch classification: the stateful pass every normalized batch goes through.

:class:`Classifier` holds one source's state (per station: the accepted event times within
``allowed_lateness`` of its newest one and a fingerprint of the newest's values, kept by
:class:`~dockline.ingest._windows.StationWindows`; known capacities; counters) and turns coerced
columns (:class:`~dockline.ingest._batch.Columns`, produced by :mod:`dockline.ingest.normalize`
from a document or a table) into a :class:`~dockline.ingest._batch.Batch`: accepted rows,
``unchanged`` repeats and dead letters (assembled by :mod:`dockline.ingest._letters`). Parsing
lives in ``normalize``; deciding lives in ``_windows``; this module ties them together.

Every decision is the one a record-at-a-time validator would take in input order, so it does
not depend on how the input is cut into batches (``ingest.batch_rows``): a record is judged
against the state left by every record before it, in this batch or an earlier one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.config import IngestConfig
from dockline.core.contracts import CONFIRMATION_SCHEMA, RejectReason
from dockline.core.errors import ConfigError, ContractError
from dockline.ingest import _windows as W
from dockline.ingest._batch import (
    NO_CONFIRMATIONS,
    Batch,
    Columns,
    fingerprints,
    status_table,
    ts_array,
)
from dockline.ingest._letters import status_letters

__all__ = ["Batch", "Classifier", "Columns", "fingerprints", "ts_array"]

_STATE_VERSION = 2  # 2: each station's newest event has the fingerprint of its values


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
        self._delay = W.micros(config.publication_delay)
        self._windows = W.StationWindows(config)
        self._capacity: dict[str, int] = {}
        self.counters: dict[str, int] = _empty_counters()
        """Cumulative counts: ``received``, ``accepted`` and one per reject reason."""
        if state is not None:
            self._restore(state)

    # ---- state -------------------------------------------------------------------------------

    def state(self) -> bytes:
        """The validator state as msgpack bytes (deterministic: keys sorted, windows pruned)."""
        seen, prints = self._windows.snapshot()
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
        self._windows.restore(snapshot.seen, snapshot.prints)
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

        self._windows.commit(uniq, codes, event, print_at, np.ones(len(codes), dtype=bool))

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

        outcome, prior, first = self._windows.decide(
            uniq, codes, cols.event_us, cols.ing_us, print_at, ok
        )
        accepted = ok & (outcome == W.OK)
        self._windows.commit(uniq, codes, cols.event_us, print_at, accepted)

        idx = np.flatnonzero(accepted)
        capacity = self._capacity_column(cols, uniq, codes, idx)
        table = status_table(
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

        same = ok & (outcome == W.UNCHANGED)
        unchanged = int(np.count_nonzero(same))
        confirmed = NO_CONFIRMATIONS
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
        letters = status_letters(
            cols,
            ok=ok,
            outcome=outcome,
            prior=prior,
            first=first,
            uniq=uniq,
            codes=codes,
            raw=raw,
            source=self.source,
            batch_id=batch_id,
            ts_field=ts_field,
            config=self.config,
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
