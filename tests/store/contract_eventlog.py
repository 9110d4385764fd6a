"""The contract every :class:`~dockline.core.ports.EventLog` implementation passes.

Subclass :class:`EventLogContract` and provide the ``make_log`` fixture: a factory that opens a
new handle on ONE underlying log (the same file, the same broker), so tests can close and
reopen it. Each test uses fresh topic names, so a shared server works too (group and producer
names repeat across tests: give each test its own namespace, as the Kafka subclass does with a
fresh topic prefix). Subclasses: test_store_eventlog_sqlite.py, test_store_eventlog_kafka.py.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockline.core.errors import ConfigError, NotFoundError, ValidationError
from dockline.core.ports import OFFSET_COLUMN, EventLog, ProducerState, stable_partition

MakeLog = Callable[[], EventLog]

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def rows(start: int, count: int, keys: int = 7) -> pa.Table:
    """``count`` rows with a global sequence number ``seq`` and ``keys`` distinct keys."""
    seq = np.arange(start, start + count, dtype=np.int64)
    return pa.table(
        {
            "key": pa.array([f"k{i % keys}" for i in seq.tolist()], pa.string()),
            "seq": seq,
            "ts": pa.array(seq * 1_000_000, pa.timestamp("us", tz="UTC")),
        }
    )


def read_all(log: EventLog, topic: str, partition: int, batch: int = 1000) -> pa.Table:
    """Every record of one partition, read ``batch`` at a time."""
    pieces = []
    offset = 0
    while True:
        table = log.read(topic, partition, offset, batch)
        if table.num_rows == 0:
            break
        pieces.append(table)
        offset += table.num_rows
    if not pieces:
        return log.read(topic, partition, 0, 1)
    return pa.concat_tables(pieces)


class EventLogContract:
    """Shared tests of the EventLog port (Dagster's pattern: one class, many backends)."""

    @pytest.fixture
    def make_log(self) -> MakeLog:
        """Override: return a factory of handles on one underlying log."""
        raise NotImplementedError

    @pytest.fixture
    def log(self, make_log: MakeLog) -> Iterator[EventLog]:
        handle = make_log()
        yield handle
        handle.close()

    @pytest.fixture
    def new_topic(self) -> Callable[[], str]:
        counter = itertools.count()
        prefix = uuid.uuid4().hex[:8]
        return lambda: f"t-{prefix}-{next(counter)}"

    @pytest.fixture
    def topic(self, new_topic: Callable[[], str]) -> str:
        return new_topic()

    # -- topics ---------------------------------------------------------------------------------

    def test_implements_the_port(self, log: EventLog) -> None:
        assert isinstance(log, EventLog)

    def test_create_topic_is_idempotent_and_checks_partitions(
        self, log: EventLog, topic: str
    ) -> None:
        log.create_topic(topic, 3)
        log.create_topic(topic, 3)
        assert log.partitions(topic) == 3
        assert log.end_offsets(topic) == {0: 0, 1: 0, 2: 0}
        with pytest.raises(ConfigError):
            log.create_topic(topic, 5)

    def test_unknown_topic_and_partition_raise_not_found(self, log: EventLog, topic: str) -> None:
        for call in (
            lambda: log.partitions(topic),
            lambda: log.read(topic, 0, 0, 10),
            lambda: log.end_offsets(topic),
            lambda: log.committed("g", topic),
            lambda: log.commit("g", topic, {0: 0}),
        ):
            with pytest.raises(NotFoundError):
                call()
        log.create_topic(topic, 2)
        for partition in (-1, 2, 99):
            with pytest.raises(NotFoundError):
                log.read(topic, partition, 0, 10)
            with pytest.raises(NotFoundError):
                log.commit("g", topic, {partition: 0})
        assert isinstance(NotFoundError("x"), KeyError)

    # -- appending ------------------------------------------------------------------------------

    def test_offsets_are_contiguous_per_partition(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 3)
        next_offset = {0: 0, 1: 0, 2: 0}
        total = 0
        for step, size in enumerate([1, 50, 7, 0, 130, 2]):
            result = log.append(topic, rows(total, size), key="key")
            total += size
            assert result.count == size, step
            for partition, (first, last) in result.ranges.items():
                assert first == next_offset[partition]
                assert last >= first
                next_offset[partition] = last + 1
        assert log.end_offsets(topic) == next_offset
        assert sum(next_offset.values()) == total
        for partition in range(3):
            table = read_all(log, topic, partition, batch=17)
            assert table[OFFSET_COLUMN].to_pylist() == list(range(next_offset[partition]))
            assert table.schema.field(OFFSET_COLUMN).type == pa.int64()

    def test_order_is_kept_within_a_partition_and_nothing_is_lost(
        self, log: EventLog, topic: str
    ) -> None:
        log.create_topic(topic, 4)
        for start in range(0, 1000, 100):
            log.append(topic, rows(start, 100, keys=13), key="key")
        seen: list[int] = []
        for partition in range(4):
            seq = read_all(log, topic, partition, batch=64)["seq"].to_pylist()
            assert seq == sorted(seq)
            seen.extend(seq)
        assert sorted(seen) == list(range(1000))

    def test_a_key_always_lands_in_its_stable_partition(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 5)
        for start in (0, 40, 80):
            log.append(topic, rows(start, 40, keys=11), key="key")
        for partition in range(5):
            table = read_all(log, topic, partition)
            if table.num_rows:
                expected = stable_partition(table["key"], 5)
                assert (expected == partition).all()

    def test_values_and_types_round_trip(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 1)
        table = pa.table(
            {
                "key": ["a", "b", "a"],
                "ts": pa.array([T0, T0, T0], pa.timestamp("us", tz="UTC")),
                "n": pa.array([1, None, 3], pa.int32()),
                "flag": [True, False, None],
                "x": [0.5, -1.0, float("inf")],
            }
        )
        log.append(topic, table, key="key")
        back = log.read(topic, 0, 0, 10)
        assert back.drop_columns([OFFSET_COLUMN]).equals(table)

    def test_bad_keys_are_rejected_and_store_nothing(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 2)
        with pytest.raises(ValidationError):
            log.append(topic, rows(0, 3), key="missing")
        with pytest.raises(ValidationError):
            log.append(topic, pa.table({"key": ["a", None]}), key="key")
        assert log.end_offsets(topic) == {0: 0, 1: 0}

    # -- reading --------------------------------------------------------------------------------

    def test_read_from_the_middle_of_a_batch(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 1)
        log.append(topic, rows(0, 10), key="key")
        table = log.read(topic, 0, 3, 4)
        assert table[OFFSET_COLUMN].to_pylist() == [3, 4, 5, 6]
        assert table["seq"].to_pylist() == [3, 4, 5, 6]
        assert log.read(topic, 0, 9, 100)["seq"].to_pylist() == [9]

    def test_max_records_spans_batches(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 1)
        for start in (0, 5, 10, 15):
            log.append(topic, rows(start, 5), key="key")
        table = log.read(topic, 0, 2, 10)
        assert table.num_rows == 10
        assert table[OFFSET_COLUMN].to_pylist() == list(range(2, 12))
        assert table["seq"].to_pylist() == list(range(2, 12))
        assert log.read(topic, 0, 0, 1000).num_rows == 20

    def test_empty_reads(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 2)
        empty = log.read(topic, 0, 0, 10)
        assert empty.num_rows == 0
        assert OFFSET_COLUMN in empty.column_names
        log.create_topic(topic, 2)
        log.append(topic, rows(0, 20), key="key")
        for partition, end in log.end_offsets(topic).items():
            for offset in (end, end + 1, end + 1000):
                table = log.read(topic, partition, offset, 10)
                assert table.num_rows == 0
                assert set(table.column_names) == {"key", "seq", "ts", OFFSET_COLUMN}
        with pytest.raises(ValidationError):
            log.read(topic, 0, -1, 10)
        with pytest.raises(ValidationError):
            log.read(topic, 0, 0, 0)

    @settings(
        max_examples=25,
        deadline=None,
        # differing_executors: every backend's subclass runs this one method (the point of a
        # shared contract); examples depend on nothing but the log each subclass provides
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        sizes=st.lists(st.integers(0, 40), min_size=1, max_size=8),
        reads=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 90)), max_size=6),
    )
    def test_reads_match_a_model(
        self,
        log: EventLog,
        new_topic: Callable[[], str],
        sizes: list[int],
        reads: list[tuple[int, int]],
    ) -> None:
        topic = new_topic()
        log.create_topic(topic, 2)
        model: dict[int, list[int]] = {0: [], 1: []}
        start = 0
        for size in sizes:
            table = rows(start, size, keys=5)
            parts = stable_partition(table["key"], 2) if size else np.array([])
            for seq, partition in zip(table["seq"].to_pylist(), parts.tolist(), strict=True):
                model[partition].append(seq)
            log.append(topic, table, key="key")
            start += size
        for partition in (0, 1):
            for offset, max_records in reads:
                got = log.read(topic, partition, offset, max_records)
                want = model[partition][offset : offset + max_records]
                # A partition that never stored a batch may not know the schema yet.
                assert (got["seq"].to_pylist() if got.num_rows else []) == want
                assert got[OFFSET_COLUMN].to_pylist() == list(range(offset, offset + len(want)))

    # -- consumer groups and producer state -----------------------------------------------------

    def test_commits_and_replay(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 2)
        log.append(topic, rows(0, 40), key="key")
        ends = log.end_offsets(topic)
        assert log.committed("g", topic) == {0: 0, 1: 0}
        log.commit("g", topic, ends)
        assert log.committed("g", topic) == ends
        assert log.committed("other", topic) == {0: 0, 1: 0}
        # Rewinding is allowed: that is how a group replays.
        log.commit("g", topic, {0: 1})
        assert log.committed("g", topic) == {0: 1, 1: ends[1]}
        replay = log.read(topic, 0, log.committed("g", topic)[0], 1000)
        assert replay[OFFSET_COLUMN].to_pylist() == list(range(1, ends[0]))
        with pytest.raises(ValidationError):
            log.commit("g", topic, {0: -1})

    def test_producer_state_commits_with_the_append(self, log: EventLog, topic: str) -> None:
        log.create_topic(topic, 2)
        assert log.producer_state("p") is None
        log.append(topic, rows(0, 10), key="key", state=ProducerState("p", b"10"))
        assert log.producer_state("p") == b"10"
        # A failed append commits neither records nor state.
        with pytest.raises(ValidationError):
            log.append(topic, rows(10, 5), key="nope", state=ProducerState("p", b"15"))
        assert log.producer_state("p") == b"10"
        assert sum(log.end_offsets(topic).values()) == 10
        # An empty append still advances the producer's resume point.
        log.append(topic, rows(10, 0), key="key", state=ProducerState("p", b"\x00state"))
        assert log.producer_state("p") == b"\x00state"
        assert log.producer_state("q") is None
        # Several producers' states commit together (a resume point plus a snapshot).
        both = [ProducerState("p", b"small"), ProducerState("p#snapshot", b"large")]
        log.append(topic, rows(10, 3), key="key", state=both)
        assert (log.producer_state("p"), log.producer_state("p#snapshot")) == (b"small", b"large")
        with pytest.raises(ValidationError):
            log.append(topic, rows(13, 3), key="nope", state=[ProducerState("p", b"lost")])
        assert log.producer_state("p") == b"small"

    def test_reopen_after_close_keeps_everything(self, make_log: MakeLog, topic: str) -> None:
        first = make_log()
        first.create_topic(topic, 3)
        first.append(topic, rows(0, 100), key="key", state=ProducerState("p", b"100"))
        first.commit("g", topic, {1: 2})
        ends = first.end_offsets(topic)
        tables = [read_all(first, topic, p) for p in range(3)]
        first.close()
        second = make_log()
        try:
            assert second.partitions(topic) == 3
            assert second.end_offsets(topic) == ends
            assert second.committed("g", topic) == {0: 0, 1: 2, 2: 0}
            assert second.producer_state("p") == b"100"
            for partition in range(3):
                assert read_all(second, topic, partition).equals(tables[partition])
            result = second.append(topic, rows(100, 10), key="key")
            for partition, (first_offset, _) in result.ranges.items():
                assert first_offset == ends[partition]
        finally:
            second.close()
