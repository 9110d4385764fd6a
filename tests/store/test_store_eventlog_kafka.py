"""KafkaEventLog on a real Kafka-protocol broker (Tansu): the shared EventLog contract plus
Kafka specifics — headers, the commit protocol, groups in the broker, dead-letter topic."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition
from contract_eventlog import EventLogContract, MakeLog, read_all, rows

from dockline.core.ports import OFFSET_COLUMN, ProducerState
from dockline.store.log.kafka import COMMIT_TOPIC, SCHEMA_VERSION, KafkaEventLog


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}."


class TestKafkaEventLog(EventLogContract):
    @pytest.fixture
    def make_log(self, kafka_bootstrap: str) -> MakeLog:
        prefix = _prefix()  # one fresh namespace per test: groups and producers do not leak
        return lambda: KafkaEventLog(kafka_bootstrap, topic_prefix=prefix, poll_timeout=0.1)


@pytest.fixture
def log(kafka_bootstrap: str):  # type: ignore[no-untyped-def]
    handle = KafkaEventLog(kafka_bootstrap, topic_prefix=_prefix(), default_partitions=3)
    yield handle
    handle.close()


def _raw(bootstrap: str, topic: str, partition: int) -> list:  # type: ignore[type-arg]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "raw"})
    consumer.assign([TopicPartition(topic, partition, 0)])
    messages = []
    while batch := consumer.consume(100, timeout=0.5):
        messages.extend(m for m in batch if m.error() is None)
    consumer.close()
    return messages


def test_messages_carry_schema_version_and_count_headers(
    log: KafkaEventLog, kafka_bootstrap: str
) -> None:
    log.create_topic("t", 1)
    log.append("t", rows(0, 5), key="key")
    versioned = rows(5, 2).replace_schema_metadata({"schema_version": "v2"})
    log.append("t", versioned, key="key")
    messages = _raw(kafka_bootstrap, log.prefix + "t", 0)
    headers = [dict(m.headers()) for m in messages]
    assert [h["schema_version"] for h in headers] == [SCHEMA_VERSION.encode(), b"v2"]
    assert [h["dockline-count"] for h in headers] == [b"5", b"2"]
    assert headers[0]["content-type"] == b"application/vnd.apache.arrow.stream"


def test_append_creates_a_missing_topic_with_default_partitions(log: KafkaEventLog) -> None:
    assert log.append("new", rows(0, 30), key="key").count == 30
    assert log.partitions("new") == 3


def test_orphaned_data_without_a_commit_record_is_invisible(
    log: KafkaEventLog, kafka_bootstrap: str
) -> None:
    """What a producer killed between its data and its commit record leaves: never read."""
    from confluent_kafka import Producer

    log.create_topic("t", 1)
    log.append("t", rows(0, 3), key="key", state=ProducerState("p", b"3"))
    orphan = rows(100, 4).slice(0, 4)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, orphan.schema) as writer:
        writer.write_table(orphan)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(log.prefix + "t", value=sink.getvalue().to_pybytes(), partition=0)
    producer.flush(10)
    log.append("t", rows(3, 2), key="key", state=ProducerState("p", b"5"))
    table = read_all(log, "t", 0)
    assert table["seq"].to_pylist() == [0, 1, 2, 3, 4]
    assert table[OFFSET_COLUMN].to_pylist() == [0, 1, 2, 3, 4]
    assert log.end_offsets("t") == {0: 5}
    assert log.producer_state("p") == b"5"
    # the commit topic names the two appends only
    assert len(_raw(kafka_bootstrap, log.prefix + COMMIT_TOPIC, 0)) == 2


def test_large_appends_are_split_into_several_messages(kafka_bootstrap: str) -> None:
    log = KafkaEventLog(kafka_bootstrap, topic_prefix=_prefix(), max_message_bytes=4096)
    try:
        log.create_topic("t", 1)
        result = log.append("t", rows(0, 2000), key="key")
        assert result.ranges == {0: (0, 1999)}
        assert len(_raw(kafka_bootstrap, log.prefix + "t", 0)) > 1
        assert read_all(log, "t", 0, batch=333)["seq"].to_pylist() == list(range(2000))
    finally:
        log.close()


def test_group_offsets_live_in_the_broker(log: KafkaEventLog, kafka_bootstrap: str) -> None:
    log.create_topic("t", 2)
    log.append("t", rows(0, 20), key="key")
    log.commit("sink", "t", {0: 3})
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": log.prefix + "sink"})
    found = consumer.committed([TopicPartition(log.prefix + "t", 0)], timeout=10)
    consumer.close()
    assert found[0].offset == 3


def test_two_handles_see_each_others_appends(kafka_bootstrap: str) -> None:
    prefix = _prefix()
    first = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    second = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    try:
        first.create_topic("t", 2)
        for start in range(0, 60, 10):
            (first if start % 20 else second).append("t", rows(start, 10), key="key")
        for handle in (first, second):
            assert sum(handle.end_offsets("t").values()) == 60
            seen = sorted(s for p in range(2) for s in read_all(handle, "t", p)["seq"].to_pylist())
            assert seen == list(range(60))
    finally:
        first.close()
        second.close()


def test_concurrent_writers_get_the_offsets_their_records_are_read_at(
    kafka_bootstrap: str,
) -> None:
    """Writers interleave on the broker, so commit order differs from the data's Kafka order;
    each append's reported offsets still hold exactly its records."""
    import threading

    prefix = _prefix()
    KafkaEventLog(kafka_bootstrap, topic_prefix=prefix).create_topic("t", 2)
    results: list[tuple[int, int, dict[int, tuple[int, int]]]] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        log = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
        try:
            for step in range(15):
                start = worker * 10_000 + step * 10
                results.append(
                    (start, 10, dict(log.append("t", rows(start, 10), key="key").ranges))
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            log.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    reader = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    try:
        tables = {p: read_all(reader, "t", p) for p in range(2)}
    finally:
        reader.close()
    for table in tables.values():
        assert table[OFFSET_COLUMN].to_pylist() == list(range(table.num_rows))
    seen = sorted(s for t in tables.values() for s in t["seq"].to_pylist())
    assert seen == sorted(w * 10_000 + i for w in range(3) for i in range(150))
    for start, count, ranges in results:
        for partition, (first, last) in ranges.items():
            got = tables[partition]["seq"].to_pylist()[first : last + 1]
            assert set(got) <= set(range(start, start + count))
            assert len(got) == last - first + 1
        assert sum(last - first + 1 for first, last in ranges.values()) == count


def test_a_reader_sees_every_commit_made_before_it_asks_even_with_slow_fetches(
    kafka_bootstrap: str,
) -> None:
    """A refresh reads up to the watermark it saw, however long the fetch takes: a reader sees
    every append committed before it asks, and its producer state."""
    prefix = _prefix()
    # a poll shorter than any fetch stands in for a loaded machine
    reader = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix, poll_timeout=0.0001)
    writer = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    try:
        writer.create_topic("t", 2)
        assert reader.end_offsets("t") == {0: 0, 1: 0}
        for start in range(0, 50, 10):
            writer.append("t", rows(start, 10), key="key", state=ProducerState("p", b"%d" % start))
            assert sum(reader.end_offsets("t").values()) == start + 10
            assert reader.producer_state("p") == b"%d" % start
    finally:
        writer.close()
        reader.close()
