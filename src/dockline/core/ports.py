"""Ports: the narrow Protocols that storage backends implement.

What exists today: every storage port has an embedded SQLite implementation
(:class:`EventLog`, :class:`DeadLetterStore`, :class:`OnlineStore`); the online store also has a
distributed one (Redis) and the event log a Kafka-protocol one (``dockline.store.log.kafka``).
Each implementation passes its port's shared contract-test class (``tests/store/contract_*.py``);
a distributed dead-letter store would subclass the same tests. :class:`ModelRegistry` has one
implementation (MLflow, ``dockline.train.registry``); :class:`FeatureReader` has the serving
readers (read-time evaluation in ``dockline.features.served``, stored vectors in
``dockline.serve``). Signatures use domain types — Arrow tables and typed records — and
serialization stays inside the backend.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dockline.core.contracts import DeadLetter, GateVerdict, ModelVersion, PromotionEvent

__all__ = [
    "OFFSET_COLUMN",
    "AppendResult",
    "DeadLetterStore",
    "EventLog",
    "FeatureReader",
    "ModelRegistry",
    "OnlineStore",
    "OnlineValue",
    "OnlineVector",
    "ProducerState",
    "ServedVector",
    "stable_partition",
]

OFFSET_COLUMN = "_offset"
"""Column that :meth:`EventLog.read` adds: each row's offset in its partition."""


@dataclass(frozen=True, slots=True)
class ProducerState:
    """A producer's resume point, committed atomically with the records it describes.

    A producer (an ingester following a feed, an archive import) stores here what it needs to
    resume without duplicating: per-entity watermarks, files done. Because it commits in the same
    transaction as the append, a ``kill -9`` between two appends loses nothing and repeats nothing.
    The Kafka-protocol log carries the states in the commit record that makes an append visible.
    """

    producer: str
    value: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Offsets assigned by one append: ``{partition: (first_offset, last_offset)}``."""

    ranges: Mapping[int, tuple[int, int]]

    @property
    def count(self) -> int:
        """Number of records appended."""
        return sum(last - first + 1 for first, last in self.ranges.values())


@runtime_checkable
class EventLog(Protocol):
    """An ordered, durable, partitioned log of Arrow records (Kafka's model, narrowed).

    * Records are partitioned by a key column (:func:`stable_partition`); order is kept per
      partition; offsets start at 0 and increase by one per record.
    * Consumer groups commit the next offset to read per partition; replay from any offset.
    * Everything committed survives ``kill -9`` of writer or reader.
    """

    def create_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions; a no-op if it exists with that many."""
        ...

    def partitions(self, topic: str) -> int:
        """Number of partitions of ``topic`` (raises ``NotFoundError`` if it does not exist)."""
        ...

    def append(
        self,
        topic: str,
        records: pa.Table,
        *,
        key: str,
        state: ProducerState | Sequence[ProducerState] | None = None,
    ) -> AppendResult:
        """Append ``records`` partitioned by column ``key``, atomically with ``state``.

        Several states (distinct producers' keys) commit together: a producer can keep a small
        resume point written on every append and a large snapshot written now and then.
        """
        ...

    def append_many(
        self,
        appends: Sequence[tuple[str, pa.Table]],
        *,
        key: str,
        state: ProducerState | Sequence[ProducerState] | None = None,
    ) -> list[AppendResult]:
        """Append to several topics in one transaction with ``state`` (one result per topic).

        E.g. a feed poll's accepted records and its confirmations: both or neither.
        """
        ...

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> pa.Table:
        """Up to ``max_records`` records from ``offset`` on, with an ``_offset`` column."""
        ...

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get."""
        ...

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the next offset ``group`` will read (0 when nothing is committed)."""
        ...

    def commit(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Record that ``group`` has processed ``topic`` up to (excluding) these offsets."""
        ...

    def producer_state(self, producer: str) -> bytes | None:
        """The last :class:`ProducerState` value committed by ``producer``, if any."""
        ...

    def close(self) -> None:
        """Release the backend's resources."""
        ...


@runtime_checkable
class DeadLetterStore(Protocol):
    """Where rejected records go, with their reason; nothing is silently dropped."""

    def add(self, letters: Sequence[DeadLetter]) -> int:
        """Store ``letters`` (idempotent on ``id``); return how many were new."""
        ...

    def counts(self, *, source: str | None = None, pending_only: bool = False) -> dict[str, int]:
        """Number of dead letters by reason."""
        ...

    def examples(self, reason: str, limit: int = 3) -> list[DeadLetter]:
        """A few dead letters with ``reason``, oldest first."""
        ...

    def pending(
        self, *, reason: str | None = None, source: str | None = None
    ) -> Iterator[DeadLetter]:
        """Dead letters not yet replayed successfully, oldest first."""
        ...

    def mark_replayed(self, ids: Sequence[str], at: datetime) -> None:
        """Mark dead letters as re-ingested successfully at ``at``."""
        ...

    def close(self) -> None:
        """Release the backend's resources."""
        ...


OnlineValue = int | float | str | bool | bytes | None
"""A value as stored online (Arrow scalars become Python scalars; binary columns hold the
per-entity state that read-time evaluation decodes)."""


@dataclass(frozen=True, slots=True)
class OnlineVector:
    """The latest feature vector of one group for one entity.

    ``values`` follow the group's registered column order. ``as_of`` is the point in time the
    vector is exact for: it equals the offline value at ``(entity, as_of)`` (for the streaming
    materializer, the newest ``ingested_at`` it had processed), so its age is ``now - as_of``;
    the event times behind it travel as ``<group>__as_of`` values. ``written_at`` is when it was
    written (freshness of the write path itself). Times are microseconds since the epoch, UTC —
    integers keep the read path free of datetime construction.
    """

    values: tuple[OnlineValue, ...]
    as_of_us: int
    written_at_us: int


@runtime_checkable
class OnlineStore(Protocol):
    """Latest feature vector per (entity, group), for low-latency serving.

    A group's column names are registered once; vectors are stored as values in that order.
    ``write`` upserts; ``read``/``read_many`` return, per requested group, the vector or ``None``.
    """

    def register(self, group: str, columns: Sequence[str]) -> None:
        """Declare (or re-declare, replacing) the ordered value columns of ``group``."""
        ...

    def columns(self, group: str) -> tuple[str, ...]:
        """The registered columns of ``group`` (``NotFoundError`` if never registered)."""
        ...

    def write(self, group: str, rows: pa.Table, *, key: str, as_of: str, written_at_us: int) -> int:
        """Upsert one vector per row of ``rows``: entity in column ``key``, event time in column
        ``as_of`` (timestamp), values in the group's registered columns; returns rows written."""
        ...

    def read(self, entity: str, groups: Sequence[str]) -> dict[str, OnlineVector | None]:
        """The vectors of one entity for ``groups``, in one round trip."""
        ...

    def read_many(
        self, entities: Sequence[str], groups: Sequence[str]
    ) -> list[dict[str, OnlineVector | None]]:
        """``read`` for many entities in one round trip, in the order given."""
        ...

    def close(self) -> None:
        """Release the backend's resources."""
        ...


@dataclass(frozen=True, slots=True)
class ServedVector:
    """One entity's feature vector evaluated at a request time ``t_us``.

    ``values`` follow :meth:`FeatureReader.columns`; they equal the offline value at
    ``(entity, t_us)`` given what was known at ``known_us`` (the reader's knowledge watermark:
    every event ingested up to then is in). ``confirmed_us`` is when the feed last confirmed the
    entity's newest event (a new event, or the same one re-seen on a newer poll): the age that
    serving reports and gates on is ``t_us - confirmed_us``. Microseconds since the epoch, UTC.
    """

    values: tuple[OnlineValue, ...]
    t_us: int
    confirmed_us: int
    known_us: int


@runtime_checkable
class FeatureReader(Protocol):
    """Feature vectors as of a request time, for serving (Tecton/Chronon-style read-time
    evaluation: windows slide, ``time_since`` grows and the calendar moves on with ``t``)."""

    def columns(self) -> tuple[str, ...]:
        """The feature names, in the order of :attr:`ServedVector.values`."""
        ...

    def read_at(self, entities: Sequence[str], t_us: int) -> list[ServedVector | None]:
        """Each entity's vector at ``t_us`` (``None`` for an entity with no state), in order."""
        ...

    def close(self) -> None:
        """Release the reader's resources."""
        ...


def stable_partition(keys: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """Partition number for each key: ``crc32(utf-8 key) % partitions``.

    Stable across processes, Python versions and log implementations (unlike ``hash()``), and
    vectorized: the CRC is computed once per distinct key.
    """
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    encoded = pc.dictionary_encode(keys.cast(pa.string()))
    dictionary = encoded.dictionary.to_pylist()
    per_key = np.fromiter(
        (zlib.crc32(k.encode("utf-8")) % partitions for k in dictionary),
        dtype=np.int32,
        count=len(dictionary),
    )
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    result: np.ndarray = per_key[indices]
    return result


@runtime_checkable
class ModelRegistry(Protocol):
    """Registered model versions, their bundles, aliases and alias history.

    Aliases (``champion``, ``challenger``) name versions; serving resolves an alias to a bundle.
    The history is append-only: every alias move is recorded with who, when and why.
    """

    def register(
        self, name: str, bundle: Path, *, run_id: str | None, gate: GateVerdict | None
    ) -> ModelVersion:
        """Register ``bundle`` (a verified bundle directory) as the next version of ``name``."""
        ...

    def get(self, name: str, version: int) -> ModelVersion:
        """One version; :class:`~dockline.core.errors.NotFoundError` when absent."""
        ...

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first (empty when the model is unknown)."""
        ...

    def resolve(self, name: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at, with its bundle local and verified; None when unset."""
        ...

    def peek(self, name: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` points at, from metadata alone (no bundle read); None when unset.

        For pollers: compare the answer with what is loaded, and :meth:`resolve` only on a move.
        """
        ...

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int | None,
        *,
        actor: str,
        reason: str,
        action: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> PromotionEvent:
        """Point ``alias`` at ``version`` (None removes it) and append the move to the history."""
        ...

    def history(self, name: str) -> list[PromotionEvent]:
        """The alias history of ``name``, oldest first."""
        ...
