"""Plumbing of the Kafka log (:mod:`dockline.store.log.kafka`) and the dead-letter topic
(:mod:`dockline.store.log.kafka_deadletters`): names, encoding, topic creation, data readers."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from dockline.core.contracts import Contract
from dockline.core.errors import StorageError
from dockline.core.ports import stable_partition

__all__ = [
    "CACHE_BYTES",
    "COMMIT_TOPIC",
    "DEAD_LETTER_TOPIC",
    "LOGGER",
    "SCHEMA_VERSION",
    "TOPIC_NAME",
    "DataReaders",
    "decode",
    "encode",
    "ensure_topic",
    "partition_batches",
    "raise_error",
    "take",
    "topic_partitions",
]

COMMIT_TOPIC = "__commits"
"""Suffix (after the prefix) of the commit topic: one record per committed append."""

DEAD_LETTER_TOPIC = "deadletters"
"""Suffix (after the prefix) of the dead-letter topic (seed 004's own topic for bad events)."""

SCHEMA_VERSION = str(Contract.model_fields["schema_version"].default)
"""The contracts' version, sent in every message's ``schema_version`` header unless the Arrow
schema's metadata names its own (``schema_version``)."""

LOGGER = logging.getLogger("dockline.store.kafka")  # librdkafka's logs, instead of stderr
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4", use_threads=False)
CACHE_BYTES = 64 << 20  # decoded data messages kept per handle, for sequential readers


@dataclass
class _Reader:
    """A consumer kept assigned to one data partition, and the next Kafka offset it returns."""

    consumer: Consumer
    position: int


def raise_error(error: KafkaError | None, what: str, where: str | None = None) -> None:
    if error is not None:
        raise StorageError(f"{what}: {error.str()}", reason="kafka_error", where=where)


def take(consumer: Consumer, timeout: float, limit: int = 1000) -> list[Message]:
    """What is buffered, else what arrives first within ``timeout``.

    ``consume(n, timeout)`` waits for all ``n`` messages or the whole timeout, so it is only
    used with a zero timeout; ``poll`` returns as soon as one message is there.
    """
    messages = consumer.consume(limit, timeout=0)
    if messages:
        return list(messages)
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(limit - 1, timeout=0)]


def encode(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=IPC_OPTIONS) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode(blob: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(blob)).read_all()


def partition_batches(
    records: pa.Table, key: str, partitions: int, max_message_bytes: int
) -> list[tuple[int, pa.Table, bytes, bytes]]:
    """``records`` as data messages: (partition, rows, Arrow IPC bytes, schema_version) each.

    Partitioned by ``key`` with :func:`stable_partition` (order kept within a partition) and
    split so no message holds more than ``max_message_bytes`` of Arrow data.
    """
    metadata = records.schema.metadata or {}
    version = metadata.get(b"schema_version", SCHEMA_VERSION.encode())
    pieces: list[tuple[int, pa.Table, bytes, bytes]] = []
    if not records.num_rows:
        return pieces
    parts = stable_partition(records[key], partitions)
    sizes = np.bincount(parts, minlength=partitions)
    ordered = records
    if np.count_nonzero(sizes) > 1:
        # small integer keys make numpy's stable argsort a radix sort
        narrow = parts.astype(np.uint8 if partitions <= 256 else np.int32)
        ordered = records.take(pa.array(np.argsort(narrow, kind="stable")))
    start = 0
    for partition, size in enumerate(sizes.tolist()):
        if not size:
            continue
        part = ordered.slice(start, size)
        start += size
        # Arrow's in-memory size bounds the compressed message: split below the limit.
        chunks = max(1, -(-part.nbytes // max_message_bytes))
        step = -(-size // chunks)
        for offset in range(0, size, step):
            piece = part.slice(offset, step)
            pieces.append((partition, piece, encode(piece), version))
    return pieces


def ensure_topic(
    admin: AdminClient,
    name: str,
    partitions: int,
    *,
    retention_ms: int,
    timeout: float,
    servers: str,
) -> None:
    """Create a Kafka topic with an explicit ``retention.ms``; an existing one is left as it is.

    Returns once the topic is in the metadata with its partitions (creation is asynchronous).
    """
    config = {"retention.ms": str(retention_ms)}
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1, config=config)], request_timeout=timeout
    )
    try:
        futures[name].result(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0]
        if error.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT):
            raise StorageError(
                f"cannot create topic: no answer from the broker at {servers} within"
                f" {timeout}s ({error.str()})",
                reason="kafka_unreachable",
                where=name,
            ) from exc
        if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise_error(error, "cannot create topic", name)
    except Exception as exc:  # the admin future's timeout: no broker answered
        raise StorageError(
            f"cannot create topic: no answer from the broker at {servers} within {timeout}s"
            f" ({type(exc).__name__})",
            reason="kafka_unreachable",
            where=name,
        ) from exc
    deadline = time.monotonic() + timeout
    while topic_partitions(admin, name, timeout=timeout, servers=servers) is None:
        if time.monotonic() > deadline:
            raise StorageError("topic did not appear in the metadata", where=name)
        time.sleep(0.02)


def topic_partitions(admin: AdminClient, name: str, *, timeout: float, servers: str) -> int | None:
    """Partitions of Kafka topic ``name`` from the cluster's metadata; None when absent."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise StorageError(
            f"cannot reach the broker at {servers}: {exc.args[0].str()}", reason="kafka_error"
        ) from exc
    found = metadata.topics.get(name)
    if found is None or found.error is not None or not found.partitions:
        return None
    return len(found.partitions)


class DataReaders:
    """Data messages fetched by Kafka offset: one consumer kept assigned per partition read,
    and a bounded cache of decoded messages (a sequential reader's next batches)."""

    def __init__(
        self, prefix: str, make: Callable[[], Consumer], *, timeout: float, poll_timeout: float
    ) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self.poll_timeout = poll_timeout
        self._make = make
        self._readers: dict[tuple[str, int], _Reader] = {}
        self._cache: OrderedDict[tuple[str, int, int], pa.Table] = OrderedDict()
        self._cache_bytes = 0

    def fetch(self, topic: str, partition: int, kafka_offsets: Sequence[int]) -> list[pa.Table]:
        """The data messages at ``kafka_offsets`` of one partition, decoded (cached)."""
        name = self.prefix + topic
        found: dict[int, pa.Table] = {}
        for offset in kafka_offsets:
            table = self._cache.get((topic, partition, offset))
            if table is not None:
                self._cache.move_to_end((topic, partition, offset))
                found[offset] = table
        missing = sorted(set(kafka_offsets) - set(found))
        if missing:
            wanted = set(missing)
            reader = self._position(topic, partition, missing[0])
            deadline = time.monotonic() + self.timeout
            try:
                while wanted:
                    messages = take(reader.consumer, self.poll_timeout, 500)
                    if not messages and time.monotonic() > deadline:
                        raise StorageError(
                            f"data message(s) {sorted(wanted)[:3]} of partition {partition}"
                            f" not readable within {self.timeout}s",
                            reason="kafka_timeout",
                            where=name,
                        )
                    past = False
                    for message in messages:
                        error = message.error()
                        if error is not None:
                            if error.code() == KafkaError._PARTITION_EOF:
                                continue
                            raise_error(error, "cannot read", name)
                        at = message.offset()
                        if at is None or at < missing[0]:
                            continue
                        offset = at
                        reader.position = offset + 1
                        if offset > missing[-1]:
                            past = True
                        value = message.value()
                        if value is None:
                            continue
                        # keep what a sequential reader reads next, not only what was asked
                        table = decode(value)
                        self._remember(topic, partition, offset, table)
                        if offset in wanted:
                            found[offset] = table
                            wanted.discard(offset)
                    if past and wanted:
                        raise StorageError(
                            f"data message(s) {sorted(wanted)[:3]} missing from the broker",
                            reason="kafka_missing",
                            where=name,
                        )
            except BaseException:
                reader.position = -1  # unknown: seek on the next fetch
                raise
        return [found[offset] for offset in kafka_offsets]

    def _position(self, topic: str, partition: int, offset: int) -> _Reader:
        """The partition's reader, positioned at Kafka offset ``offset``.

        One consumer per partition read, kept assigned: a sequential reader (the sinks) finds
        the next messages already fetched, and a fresh ``assign`` costs ~70 ms on Tansu.
        """
        reader = self._readers.get((topic, partition))
        target = TopicPartition(self.prefix + topic, partition, offset)
        if reader is None:
            consumer = self._make()
            consumer.assign([target])
            reader = self._readers[(topic, partition)] = _Reader(consumer, offset)
        elif reader.position != offset:
            try:
                reader.consumer.seek(target)
            except KafkaException:  # not fetching yet (a seek needs an active partition)
                reader.consumer.assign([target])
            reader.position = offset
        return reader

    def _remember(self, topic: str, partition: int, offset: int, table: pa.Table) -> None:
        key = (topic, partition, offset)
        if key in self._cache:
            return
        self._cache[key] = table
        self._cache_bytes += table.nbytes
        while self._cache_bytes > CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes

    def close(self) -> None:
        """Close every consumer and drop the cache."""
        for reader in self._readers.values():
            reader.consumer.close()
        self._readers.clear()
        self._cache.clear()
        self._cache_bytes = 0
