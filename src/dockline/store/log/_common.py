"""What every event log checks and does alike, whatever keeps its records (SQLite, Kafka)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from dockline.core.errors import NotFoundError, ValidationError
from dockline.core.ports import OFFSET_COLUMN, AppendResult, ProducerState

__all__ = ["LogBase", "check_read", "check_records", "producer_states"]


def check_records(records: pa.Table, key: str) -> None:
    """Records an append accepts: ``key`` a column without nulls, no ``_offset`` column yet."""
    if key not in records.column_names:
        raise ValidationError(
            f"key must be a column of the records; got {key!r}", reason="missing_field"
        )
    if OFFSET_COLUMN in records.column_names:
        raise ValidationError(
            f"records must not have a {OFFSET_COLUMN!r} column; the log assigns offsets",
            reason="bad_value",
        )
    if records[key].null_count:
        raise ValidationError(f"key column {key!r} must not contain nulls", reason="missing_field")


def check_read(offset: int, max_records: int) -> None:
    """A read's arguments: ``offset >= 0`` and ``max_records >= 1``."""
    if offset < 0:
        raise ValidationError(f"offset must be >= 0; got {offset}", reason="bad_value")
    if max_records < 1:
        raise ValidationError(f"max_records must be >= 1; got {max_records}", reason="bad_value")


def producer_states(state: ProducerState | Sequence[ProducerState] | None) -> list[ProducerState]:
    """The producer states an append commits, as a list (one, many or none)."""
    return [state] if isinstance(state, ProducerState) else list(state or ())


class LogBase:
    """The part of the ``EventLog`` port every log implements the same way."""

    def partitions(self, topic: str) -> int:
        """Partition count of ``topic``; :class:`NotFoundError` if it does not exist."""
        raise NotImplementedError

    def append_many(
        self,
        appends: Sequence[tuple[str, pa.Table]],
        *,
        key: str,
        state: ProducerState | Sequence[ProducerState] | None = None,
    ) -> list[AppendResult]:
        """Append to several topics atomically with ``state``; see :meth:`append`."""
        raise NotImplementedError

    def append(
        self,
        topic: str,
        records: pa.Table,
        *,
        key: str,
        state: ProducerState | Sequence[ProducerState] | None = None,
    ) -> AppendResult:
        """Append ``records`` partitioned by ``key``, atomically with ``state`` (one or many).

        Rows keep their order within each partition. ``key`` must be a column without nulls;
        ``records`` must not already have an ``_offset`` column. An empty table stores no
        records but still commits ``state``.
        """
        return self.append_many([(topic, records)], key=key, state=state)[0]

    def _check_partition(self, topic: str, partition: int) -> None:
        count = self.partitions(topic)
        if not 0 <= partition < count:
            raise NotFoundError(
                f"partition must be in 0..{count - 1}; got {partition}",
                reason="unknown_partition",
                where=topic,
            )
