"""The event log on a Kafka-protocol broker (``confluent-kafka``; tested against Tansu).

Layout, for a ``topic_prefix`` of ``dockline.``:

* **Data topics** ``dockline.<topic>``, one per log topic (``station_status``, …), partitioned
  by entity key with the same :func:`~dockline.core.ports.stable_partition` as the SQLite log.
  Each message is one (append, partition) batch — an Arrow IPC stream with LZ4 buffers, split
  below ``max_message_bytes`` — with headers ``schema_version`` (the contract's version),
  ``dockline-count``, ``dockline-txn`` and ``content-type``.
* **The commit topic** ``dockline.__commits`` (one partition): one message per append, written
  after every data message of the append is acknowledged, naming those messages (topic,
  partition, Kafka offset, record count) and carrying the producer states. An append is
  committed when — and only when — its commit record is in the commit topic, so records and
  producer state commit atomically and a ``kill -9`` at any point leaves at worst unreferenced
  data messages, never a partial append.
* **Consumer groups** ``dockline.<group>``: :meth:`KafkaEventLog.commit` stores the group's
  offsets with the broker's group coordinator (``OffsetCommit``).

Offsets are the log's own: per partition, records are numbered 0, 1, 2… in commit-record
order, so they are dense and identical for every reader, while Kafka's message offsets (with
batches, and gaps where a killed producer left orphans) are not. The commit topic is the source
of truth for what exists; data messages are fetched by the Kafka offsets it names.

Why not Kafka transactions: Tansu (0.6) neither times out the open transaction of a killed
producer — ``read_committed`` consumers then stall forever — nor hides its records when a new
producer with the same ``transactional.id`` fences it. The commit-record protocol needs only
an idempotent producer and ordered partitions, which every Kafka-protocol broker gives.
"""

from __future__ import annotations

import bisect
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import msgspec
import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from dockline.core.errors import ConfigError, NotFoundError, StorageError, ValidationError
from dockline.core.ports import OFFSET_COLUMN, AppendResult, ProducerState
from dockline.store.log._common import LogBase, check_read, check_records, producer_states
from dockline.store.log._kafka import (
    COMMIT_TOPIC,
    DEAD_LETTER_TOPIC,
    LOGGER,
    SCHEMA_VERSION,
    TOPIC_NAME,
    DataReaders,
    ensure_topic,
    partition_batches,
    raise_error,
    take,
    topic_partitions,
)

__all__ = ["COMMIT_TOPIC", "DEAD_LETTER_TOPIC", "SCHEMA_VERSION", "KafkaEventLog"]


class _Commit(msgspec.Struct, array_like=True):
    """One committed append: its batches (topic, partition, kafka offset, count) and states."""

    txn: str
    batches: list[tuple[str, int, int, int]]
    states: list[tuple[str, bytes]]


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Commit)


@dataclass
class _PartitionIndex:
    """Where a partition's records live: batch i holds offsets ``bases[i] .. + counts[i]``."""

    bases: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    kafka: list[int] = field(default_factory=list)
    end: int = 0


class KafkaEventLog(LogBase):
    """An :class:`~dockline.core.ports.EventLog` on a Kafka-protocol broker; see the module doc.

    * ``retention_ms`` is set explicitly on every topic it creates (``-1``: keep forever) —
      brokers' defaults differ and Tansu's must not be relied on.
    * Reads never depend on the broker's high watermark for correctness: what was read of the
      commit topic is always a consistent prefix of the commits; the watermark only says how
      long to keep reading, and one that stays ahead of the records is not waited for again.
    * One handle is safe for one thread at a time per method (a lock serializes broker I/O).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic_prefix: str = "dockline.",
        default_partitions: int = 4,
        retention_ms: int = -1,
        timeout: float = 15.0,
        poll_timeout: float = 0.2,
        max_message_bytes: int = 4 << 20,
    ) -> None:
        if default_partitions < 1:
            raise ConfigError(f"default_partitions must be >= 1; got {default_partitions}")
        if not TOPIC_NAME.match(topic_prefix + "x"):
            raise ConfigError(f"topic_prefix must match {TOPIC_NAME.pattern}; got {topic_prefix!r}")
        self.bootstrap_servers = bootstrap_servers
        self.prefix = topic_prefix
        self.default_partitions = default_partitions
        self.retention_ms = retention_ms
        self.timeout = timeout
        self.poll_timeout = poll_timeout
        self.max_message_bytes = max_message_bytes
        self._base: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "socket.timeout.ms": int(timeout * 1000),
            "logger": LOGGER,
        }
        self._lock = threading.RLock()
        self._closed = False
        self._admin = AdminClient(self._base)
        self._producer: Producer | None = None
        self._groups: dict[str, Consumer] = {}
        self._partitions: dict[str, int] = {}
        self._index: dict[tuple[str, int], _PartitionIndex] = {}
        self._last_batch: dict[str, tuple[int, int]] = {}  # topic → (partition, kafka offset)
        self._states: dict[str, bytes] = {}
        self._control = self.prefix + COMMIT_TOPIC
        self._control_next = 0
        self._overstated = -1  # a commit-topic watermark found to stay ahead of its records
        self._ensure_kafka_topic(self._control, 1, keep=True)  # the index of everything
        self._data = DataReaders(
            self.prefix,
            lambda: self._consumer(f"{self.prefix}__reader"),
            timeout=timeout,
            poll_timeout=poll_timeout,
        )
        self._control_reader = self._consumer(f"{self.prefix}__reader")
        self._control_reader.assign([TopicPartition(self._control, 0, 0)])
        # librdkafka takes ~0.5 s to get an idempotent producer its id: start now, in the
        # background, so a producer's first append does not wait for it
        self._producer_handle()

    # -- plumbing -------------------------------------------------------------------------------

    def _consumer(self, group: str) -> Consumer:
        return Consumer(
            {
                **self._base,
                "group.id": group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # not read_committed: the log does not use Kafka transactions (module doc)
                "isolation.level": "read_uncommitted",
                "fetch.max.bytes": 64 << 20,
                "max.partition.fetch.bytes": max(self.max_message_bytes * 2, 1 << 20),
                "fetch.wait.max.ms": 10,
            }
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("the Kafka event log is closed", reason="closed")

    def _kafka_topic(self, topic: str) -> str:
        if not isinstance(topic, str) or not TOPIC_NAME.match(topic):
            raise ValidationError(
                "topic must be a non-empty name of letters, digits, '.', '_' or '-';"
                f" got {topic!r}",
                reason="bad_value",
            )
        return self.prefix + topic

    def _ensure_kafka_topic(self, name: str, partitions: int, *, keep: bool = False) -> None:
        ensure_topic(
            self._admin,
            name,
            partitions,
            retention_ms=-1 if keep else self.retention_ms,
            timeout=self.timeout,
            servers=self.bootstrap_servers,
        )

    def _kafka_partitions(self, name: str) -> int | None:
        return topic_partitions(
            self._admin, name, timeout=self.timeout, servers=self.bootstrap_servers
        )

    # -- topics ---------------------------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int) -> None:
        """Create ``topic`` with ``partitions`` partitions; a no-op if it exists with that many.

        Raises ``ConfigError`` if it exists with another number of partitions.
        """
        name = self._kafka_topic(topic)
        if partitions < 1:
            raise ConfigError(f"partitions must be >= 1; got {partitions}", where=topic)
        with self._lock:
            self._check_open()
            existing = self._partitions.get(topic) or self._kafka_partitions(name)
            if existing is None:
                self._ensure_kafka_topic(name, partitions)
                existing = self._kafka_partitions(name)
            assert existing is not None
            self._partitions[topic] = existing
        if existing != partitions:
            raise ConfigError(
                f"topic exists with {existing} partitions; got a request for {partitions}",
                reason="partitions_mismatch",
                where=topic,
            )

    def partitions(self, topic: str) -> int:
        """Number of partitions of ``topic`` (``NotFoundError`` if it does not exist)."""
        cached = self._partitions.get(topic)
        if cached is not None:
            return cached
        name = self._kafka_topic(topic)
        with self._lock:
            self._check_open()
            count = self._kafka_partitions(name)
            if count is None:
                raise NotFoundError("topic does not exist", reason="unknown_topic", where=topic)
            self._partitions[topic] = count
            return count

    # -- the commit topic -----------------------------------------------------------------------

    def _apply(self, commit: _Commit) -> None:
        """Index one commit record: assign its records the next offsets of their partitions."""
        for topic, partition, kafka_offset, count in commit.batches:
            part = self._index.setdefault((topic, partition), _PartitionIndex())
            part.bases.append(part.end)
            part.counts.append(count)
            part.kafka.append(kafka_offset)
            part.end += count
            self._last_batch[topic] = (partition, kafka_offset)
        for producer, value in commit.states:
            self._states[producer] = value

    def _refresh(self, until: int | None = None) -> None:
        """Read the commit topic: to its end (``until`` None) or past Kafka offset ``until``.

        "Its end" is the high watermark when the refresh starts, so a refresh sees every append
        committed before it. A watermark that stays ahead of what can be read for ``timeout``
        seconds (the broker's bookkeeping, not records: Tansu's is not to be trusted) is logged
        and never waited for again; what was read is a consistent prefix of the commits anyway.
        """
        deadline = time.monotonic() + self.timeout
        if until is None:
            try:
                _, high = self._control_reader.get_watermark_offsets(
                    TopicPartition(self._control, 0), timeout=self.timeout, cached=False
                )
            except KafkaException as exc:
                raise_error(exc.args[0], "cannot read the commit topic's end", self._control)
            if high == self._overstated:
                return
            target = high - 1
        else:
            target = until
        while self._control_next <= target:
            messages = take(self._control_reader, self.poll_timeout)
            if not messages:
                if time.monotonic() <= deadline:
                    continue
                if until is None:
                    LOGGER.warning(
                        "%s: the watermark %d stayed ahead of the readable records (%d);"
                        " not waiting for it again",
                        self._control,
                        target + 1,
                        self._control_next,
                    )
                    self._overstated = target + 1
                    return
                raise StorageError(
                    f"commit record at offset {until} not readable within {self.timeout}s",
                    reason="kafka_timeout",
                    where=self._control,
                )
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise_error(error, "cannot read the commit topic", self._control)
                offset = message.offset()
                if offset is None or offset < self._control_next:
                    continue
                value = message.value()
                if value:
                    self._apply(_DECODER.decode(value))
                self._control_next = offset + 1

    # -- writing --------------------------------------------------------------------------------

    def _producer_handle(self) -> Producer:
        if self._producer is None:
            self._producer = Producer(
                {
                    **self._base,
                    "enable.idempotence": True,  # acks=all, no duplicates from retries
                    "linger.ms": 1,
                    "message.max.bytes": self.max_message_bytes + (1 << 20),
                    "compression.type": "none",  # the Arrow buffers are LZ4 already
                }
            )
        return self._producer

    def append_many(
        self,
        appends: Sequence[tuple[str, pa.Table]],
        *,
        key: str,
        state: ProducerState | Sequence[ProducerState] | None = None,
    ) -> list[AppendResult]:
        """Append to several topics atomically with ``state``: data first, then one commit
        record naming it (see the module doc); returns each topic's offsets."""
        prepared = [(topic, self._prepare(topic, records, key)) for topic, records in appends]
        states = producer_states(state)
        if not states and not any(pieces for _, pieces in prepared):
            return [AppendResult({}) for _ in prepared]  # nothing to commit: no round trip
        txn = uuid.uuid4().hex
        with self._lock:
            self._check_open()
            producer = self._producer_handle()
            delivered: list[tuple[str, int, int | None, KafkaError | None]] = []

            def report(error: KafkaError | None, message: Message) -> None:
                delivered.append(
                    (message.topic() or "", message.partition() or 0, message.offset(), error)
                )

            batches: list[tuple[str, int, int]] = []  # topic, partition, count (send order)
            for topic, pieces in prepared:
                for partition, table, blob, version in pieces:
                    producer.produce(
                        self.prefix + topic,
                        value=blob,
                        partition=partition,
                        headers=[
                            ("schema_version", version),
                            ("dockline-count", str(table.num_rows).encode()),
                            ("dockline-txn", txn.encode()),
                            ("content-type", b"application/vnd.apache.arrow.stream"),
                        ],
                        on_delivery=report,
                    )
                    batches.append((topic, partition, table.num_rows))
                    producer.poll(0)
            self._flush(producer, len(batches), delivered)
            # one produce per (topic, partition) in order: delivery reports of a partition come
            # in send order, so the i-th report of a partition is its i-th batch
            offsets: dict[tuple[str, int], list[int]] = {}
            for kafka_topic, partition, offset, _ in delivered:
                offsets.setdefault((kafka_topic, partition), []).append(int(offset or 0))
            named: list[tuple[str, int, int, int]] = []
            for topic, partition, count in batches:
                named.append(
                    (topic, partition, offsets[(self.prefix + topic, partition)].pop(0), count)
                )
            commit = _Commit(
                txn=txn, batches=named, states=[(s.producer, bytes(s.value)) for s in states]
            )
            delivered.clear()
            producer.produce(
                self._control, value=_ENCODER.encode(commit), partition=0, on_delivery=report
            )
            self._flush(producer, 1, delivered)
            commit_offset = int(delivered[0][2] or 0)
            self._refresh(until=commit_offset)
            return [self._ranges_of(topic, named) for topic, _ in prepared]

    def _ranges_of(self, topic: str, named: list[tuple[str, int, int, int]]) -> AppendResult:
        """The offsets a commit's batches of ``topic`` got, once the commit is indexed."""
        ranges: dict[int, tuple[int, int]] = {}
        for t, partition, kafka_offset, _ in named:
            if t != topic:
                continue
            part = self._index[(t, partition)]
            # commit order, not Kafka order (concurrent producers): search back from the newest
            i = len(part.kafka) - 1
            while part.kafka[i] != kafka_offset:
                i -= 1
            first, last = part.bases[i], part.bases[i] + part.counts[i] - 1
            if partition in ranges:
                first = min(first, ranges[partition][0])
                last = max(last, ranges[partition][1])
            ranges[partition] = (first, last)
        return AppendResult(ranges)

    def _flush(
        self,
        producer: Producer,
        expected: int,
        delivered: list[tuple[str, int, int | None, KafkaError | None]],
    ) -> None:
        deadline = time.monotonic() + self.timeout
        while len(delivered) < expected:
            producer.flush(max(0.0, deadline - time.monotonic()))
            if time.monotonic() > deadline and len(delivered) < expected:
                raise StorageError(
                    f"the broker acknowledged {len(delivered)} of {expected} messages"
                    f" within {self.timeout}s",
                    reason="kafka_timeout",
                    where=self.bootstrap_servers,
                )
        for topic, _, _, error in delivered:
            raise_error(error, "append failed", topic)

    def _prepare(
        self, topic: str, records: pa.Table, key: str
    ) -> list[tuple[int, pa.Table, bytes, bytes]]:
        """Check ``records``, create the topic if needed, partition, split and encode them."""
        self._kafka_topic(topic)
        check_records(records, key)
        try:
            count = self.partitions(topic)
        except NotFoundError:
            self.create_topic(topic, self.default_partitions)
            count = self.partitions(topic)
        return partition_batches(records, key, count, self.max_message_bytes)

    # -- reading --------------------------------------------------------------------------------

    def read(self, topic: str, partition: int, offset: int, max_records: int) -> pa.Table:
        """Up to ``max_records`` records from ``offset`` on, with an ``_offset`` column.

        Records are gathered across batches until ``max_records`` (fewer only at the end of the
        partition or at an incompatible schema change). At or past the end: an empty table
        with the topic's last schema.
        """
        check_read(offset, max_records)
        self._check_partition(topic, partition)
        with self._lock:
            self._check_open()
            part = self._index.get((topic, partition), _PartitionIndex())
            if offset + max_records > part.end:
                self._refresh()  # there may be more now
                part = self._index.get((topic, partition), _PartitionIndex())
            first = max(0, bisect.bisect_right(part.bases, offset) - 1)
            chosen: list[int] = []
            have = 0
            for i in range(first, len(part.bases)):
                if have >= max_records:
                    break
                skip = max(0, offset - part.bases[i])
                if skip >= part.counts[i]:
                    continue
                chosen.append(i)
                have += part.counts[i] - skip
            tables = self._data.fetch(topic, partition, [part.kafka[i] for i in chosen])
            pieces: list[pa.Table] = []
            schema: pa.Schema | None = None
            first_offset = offset
            wanted = max_records
            for i, table in zip(chosen, tables, strict=True):
                skip = max(0, offset - part.bases[i])
                if schema is not None and not table.schema.equals(schema, check_metadata=False):
                    try:
                        pa.unify_schemas([schema, table.schema], promote_options="permissive")
                    except (pa.ArrowInvalid, pa.ArrowTypeError):
                        break
                if schema is None:
                    schema = table.schema
                    first_offset = part.bases[i] + skip
                take = min(part.counts[i] - skip, wanted)
                pieces.append(table.slice(skip, take))
                wanted -= take
            if not pieces:
                return self._empty(topic)
        result = (
            pieces[0]
            if len(pieces) == 1
            else pa.concat_tables(pieces, promote_options="permissive")
        )
        offsets = np.arange(first_offset, first_offset + result.num_rows, dtype=np.int64)
        return result.append_column(OFFSET_COLUMN, pa.array(offsets))

    def _empty(self, topic: str) -> pa.Table:
        """An empty read: the topic's last committed schema (none yet: no columns)."""
        last = self._last_batch.get(topic)
        schema = pa.schema([])
        if last is not None:
            schema = self._data.fetch(topic, last[0], [last[1]])[0].schema
        return schema.empty_table().append_column(OFFSET_COLUMN, pa.array([], pa.int64()))

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the offset the next appended record will get (as far as committed)."""
        count = self.partitions(topic)
        with self._lock:
            self._check_open()
            self._refresh()
            return {
                p: self._index[(topic, p)].end if (topic, p) in self._index else 0
                for p in range(count)
            }

    # -- consumer groups and producer state -----------------------------------------------------

    def _group(self, group: str) -> Consumer:
        if not isinstance(group, str) or not group:
            raise ValidationError(f"group must be a non-empty string; got {group!r}")
        consumer = self._groups.get(group)
        if consumer is None:
            consumer = self._groups[group] = self._consumer(self.prefix + group)
        return consumer

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Per partition, the next offset ``group`` will read (0 when nothing is committed)."""
        count = self.partitions(topic)
        name = self.prefix + topic
        with self._lock:
            self._check_open()
            try:
                found = self._group(group).committed(
                    [TopicPartition(name, p) for p in range(count)], timeout=self.timeout
                )
            except KafkaException as exc:
                raise_error(exc.args[0], "cannot read committed offsets", topic)
                raise  # unreachable: _raise raised
        result = dict.fromkeys(range(count), 0)
        for tp in found:
            raise_error(tp.error, "cannot read committed offsets", topic)
            if tp.offset >= 0:
                result[tp.partition] = tp.offset
        return result

    def commit(self, group: str, topic: str, offsets: Mapping[int, int]) -> None:
        """Record that ``group`` has processed ``topic`` up to (excluding) these offsets.

        Offsets may move backwards (a rewind to replay); each must be in ``0..end``.
        """
        for partition, offset in offsets.items():
            self._check_partition(topic, partition)
            if offset < 0:
                raise ValidationError(f"offset must be >= 0; got {offset}", reason="bad_value")
        with self._lock:
            self._check_open()
            ends = self.end_offsets(topic)
            for partition, offset in offsets.items():
                if offset > ends[partition]:
                    raise ValidationError(
                        f"offset must be <= the end offset {ends[partition]} of partition"
                        f" {partition}; got {offset}",
                        reason="bad_value",
                        where=topic,
                    )
            name = self.prefix + topic
            try:
                self._group(group).commit(
                    offsets=[TopicPartition(name, p, int(o)) for p, o in offsets.items()],
                    asynchronous=False,
                )
            except KafkaException as exc:
                raise_error(exc.args[0], "cannot commit offsets", topic)

    def producer_state(self, producer: str) -> bytes | None:
        """The last :class:`ProducerState` value committed by ``producer``, if any."""
        with self._lock:
            self._check_open()
            self._refresh()
            return self._states.get(producer)

    def close(self) -> None:
        """Flush and close the clients; later calls raise ``StorageError``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._producer is not None:
                self._producer.flush(self.timeout)
                self._producer = None
            self._data.close()
            for consumer in (self._control_reader, *self._groups.values()):
                consumer.close()
            self._groups.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
