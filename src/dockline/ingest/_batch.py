"""The shapes the normalizer passes around: a :class:`Batch` (its result), :class:`Columns` (one
batch's coerced columns, between the front ends and the stateful pass) and their Arrow builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa

from dockline.core.contracts import (
    CONFIRMATION_SCHEMA,
    STATION_STATUS_SCHEMA,
    TS_TYPE,
    DeadLetter,
)
from dockline.core.errors import ContractError
from dockline.ingest._coerce import Rejects

__all__ = ["NO_CONFIRMATIONS", "Batch", "Columns", "fingerprints", "status_table", "ts_array"]

NO_CONFIRMATIONS = CONFIRMATION_SCHEMA.empty_table()  # immutable: one shared instance

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
    confirmed: pa.Table = field(default_factory=lambda: NO_CONFIRMATIONS)

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


def status_table(
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
    """Accepted rows as a ``STATION_STATUS_SCHEMA`` table (``source`` on every row)."""
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
    result: np.ndarray = packed.view(np.int64) & np.int64(2**63 - 1)  # never negative (-1: unknown)
    return result


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
