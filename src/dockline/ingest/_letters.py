"""Dead-letter assembly: the reason and detail of each rejected row, and the letters themselves.

The stateless checks (:mod:`dockline.ingest._coerce`) leave their reason per row in
:class:`~dockline.ingest._coerce.Rejects`; the stateful pass (:mod:`dockline.ingest._windows`)
leaves an outcome code. Both become :class:`~dockline.core.contracts.DeadLetter` here, with the
raw record as received, so every rejection says why in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import numpy as np
import pyarrow as pa

from dockline.core.config import IngestConfig
from dockline.core.contracts import (
    TOPIC_STATION_STATUS,
    DeadLetter,
    RejectReason,
    dead_letter_id,
)
from dockline.core.time import from_micros
from dockline.ingest import _windows as W
from dockline.ingest._batch import Batch, Columns
from dockline.ingest._coerce import PRIORITY
from dockline.ingest._time import human_duration, isoformat

__all__ = ["malformed_batch", "stateful_reject", "status_letters"]

R = RejectReason
_US = 1_000_000


def malformed_batch(
    payload: bytes,
    *,
    source: str,
    topic: str,
    empty: pa.Table,
    ingested_at: datetime,
    batch_id: str,
    detail: str,
) -> Batch:
    """A document that cannot be read at all: one ``malformed`` dead letter with its bytes."""
    letter = DeadLetter(
        id=dead_letter_id(source, batch_id, 0),
        source=source,
        topic=topic,
        reason=R.MALFORMED,
        detail=detail,
        raw=bytes(payload),
        ingested_at=ingested_at,
    )
    return Batch(accepted=empty, dead_letters=[letter], received=1)


def status_letters(
    cols: Columns,
    *,
    ok: np.ndarray,
    outcome: np.ndarray,
    prior: np.ndarray,
    first: dict[int, bool],
    uniq: list[str],
    codes: np.ndarray,
    raw: Callable[[list[int]], list[bytes]],
    source: str,
    batch_id: str,
    ts_field: str,
    config: IngestConfig,
) -> list[DeadLetter]:
    """Dead letters of one status batch, in input order: stateless rejects plus stateful ones.

    Adds the stateful rejects to ``cols.rej``; ``raw(positions)`` gives the records' bytes.
    """
    rejected = cols.rej.by_pos
    stateful = np.flatnonzero(ok & (outcome != W.OK) & (outcome != W.UNCHANGED)).tolist()
    positions = sorted(rejected.keys() | set(stateful))
    # datetimes once per rejected row (and once per distinct ingestion time)
    event_dt = {
        pos: from_micros(int(cols.event_us[pos])) for pos in positions if pos not in cols.bad_ts
    }
    ing_dt = {int(us): from_micros(int(us)) for us in np.unique(cols.ing_us[positions])}
    for pos in stateful:
        rejected[pos] = stateful_reject(
            config,
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
    bad_ids = cols.bad_ids
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
    return letters


def stateful_reject(
    config: IngestConfig,
    outcome: int,
    sid: str,
    event_dt: datetime,
    event: int,
    ing: int,
    prior: int,
    field: str,
    in_batch: bool | None,
) -> tuple[int, RejectReason, str]:
    """The dead-letter reason and detail of a row the stateful pass rejected (``outcome``)."""
    when = event_dt.isoformat()
    where = "earlier in this batch" if in_batch else "already"
    if outcome == W.DUPLICATE:
        reason = R.DUPLICATE
        detail = (
            f"station {sid} {where} has an accepted event with {field} {when}"
            f" (same values; its newest is {isoformat(prior)})"
        )
    elif outcome == W.CONFLICT:
        reason = R.CONFLICT
        detail = (
            f"station {sid} {where} has an accepted event with {field} {when} and other"
            " counts or flags; the first version is kept"
        )
    elif outcome == W.TOO_LATE:
        reason = R.FUTURE
        detail = (
            f"{field} {when} is after the plausible range"
            f" (plausible_until {config.plausible_until.isoformat()})"
        )
    elif outcome == W.TOO_EARLY:
        reason = R.STALE
        detail = (
            f"{field} {when} is before the plausible range"
            f" (plausible_from {config.plausible_from.isoformat()})"
        )
    elif outcome == W.FUTURE:
        reason = R.FUTURE
        detail = (
            f"{field} {when} is {human_duration((event - ing) / _US)} after ingested_at"
            f" (future_tolerance {human_duration(config.future_tolerance)})"
        )
    elif outcome == W.STALE:
        reason = R.STALE
        detail = (
            f"{field} {when} is {human_duration((ing - event) / _US)} before ingested_at"
            f" (stale_after {human_duration(config.stale_after)})"
        )
    else:
        reason = R.LATE
        detail = (
            f"{field} {when} is {human_duration((prior - event) / _US)} behind station {sid}'s"
            f" newest accepted event {isoformat(prior)}"
            f" (allowed_lateness {human_duration(config.allowed_lateness)})"
        )
    return PRIORITY[reason], reason, detail
