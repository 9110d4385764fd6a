"""SqliteEventLog: the shared EventLog contract plus SQLite specifics."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from contract_eventlog import EventLogContract, MakeLog, read_all, rows

from dockline.core.errors import StorageError, ValidationError
from dockline.core.ports import OFFSET_COLUMN, ProducerState
from dockline.store import SqliteEventLog


class TestSqliteEventLog(EventLogContract):
    @pytest.fixture
    def make_log(self, tmp_path: Path) -> MakeLog:
        return lambda: SqliteEventLog(tmp_path / "log" / "log.sqlite")


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    handle = SqliteEventLog(tmp_path / "log.sqlite", default_partitions=3)
    yield handle
    handle.close()


def test_append_creates_a_missing_topic_with_default_partitions(log: SqliteEventLog) -> None:
    result = log.append("new", rows(0, 30), key="key")
    assert result.count == 30
    assert log.partitions("new") == 3


def test_one_stored_batch_per_append_and_partition(log: SqliteEventLog) -> None:
    log.create_topic("t", 2)
    log.append("t", rows(0, 50), key="key")
    log.append("t", rows(50, 50), key="key")
    with sqlite3.connect(log.path) as conn:
        batches = conn.execute(
            "SELECT partition, base_offset, count FROM batches WHERE topic = 't'"
            " ORDER BY partition, base_offset"
        ).fetchall()
    conn.close()
    assert len(batches) == 4
    for partition in (0, 1):
        mine = [b for b in batches if b[0] == partition]
        assert mine[1][1] == mine[0][2]  # second batch starts where the first ended


def test_threads_append_concurrently_without_gaps(log: SqliteEventLog) -> None:
    log.create_topic("t", 3)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for step in range(20):
                log.append("t", rows(worker * 10_000 + step * 10, 10), key="key")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    seen = []
    for partition in range(3):
        table = read_all(log, "t", partition)
        assert table[OFFSET_COLUMN].to_pylist() == list(range(table.num_rows))
        seen.extend(table["seq"].to_pylist())
    assert sorted(seen) == sorted(w * 10_000 + i for w in range(4) for i in range(200))


def test_processes_append_concurrently_without_gaps(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    SqliteEventLog(path).create_topic("t", 2)
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[3]);"
        "from contract_eventlog import rows; from dockline.store import SqliteEventLog;"
        "log = SqliteEventLog(Path(sys.argv[1])); w = int(sys.argv[2])\n"
        "for s in range(30): log.append('t', rows(w * 1000 + s * 10, 10), key='key')\n"
        "log.close()"
    )
    here = str(Path(__file__).parent)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path), str(w), here]) for w in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    log = SqliteEventLog(path)
    seen = []
    for partition in range(2):
        table = read_all(log, "t", partition)
        assert table[OFFSET_COLUMN].to_pylist() == list(range(table.num_rows))
        seen.extend(table["seq"].to_pylist())
    log.close()
    assert sorted(seen) == sorted(w * 1000 + i for w in range(3) for i in range(300))


def test_reads_across_a_schema_change(log: SqliteEventLog) -> None:
    log.create_topic("t", 1)
    log.append("t", pa.table({"key": ["a", "a"], "v": [1, 2]}), key="key")
    log.append("t", pa.table({"key": ["a"], "v": [3], "extra": ["x"]}), key="key")
    table = log.read("t", 0, 0, 10)
    assert table["v"].to_pylist() == [1, 2, 3]
    assert table["extra"].to_pylist() == [None, None, "x"]
    # An incompatible type stops the read before that batch; the next read continues there.
    log.append("t", pa.table({"key": ["a"], "v": pa.array([[1]], pa.list_(pa.int64()))}), key="key")
    assert log.read("t", 0, 0, 10).num_rows == 3
    assert log.read("t", 0, 3, 10)["v"].to_pylist() == [[1]]
    # An empty read has the topic's last schema.
    assert log.read("t", 0, 4, 10).schema.field("v").type == pa.list_(pa.int64())


def test_records_with_an_offset_column_are_rejected(log: SqliteEventLog) -> None:
    log.create_topic("t", 1)
    log.append("t", rows(0, 3), key="key")
    with pytest.raises(ValueError, match="_offset"):
        log.append("t", log.read("t", 0, 0, 10), key="key")


def test_closed_log_raises_storage_error(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.sqlite")
    log.append("t", rows(0, 3), key="key")
    log.close()
    with pytest.raises(StorageError):
        log.read("t", 0, 0, 1)
    with pytest.raises(StorageError):
        log.append("t", rows(0, 3), key="key")


def test_sqlite_errors_become_storage_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StorageError):
        SqliteEventLog(tmp_path / "dir.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError):
        SqliteEventLog(junk)


def test_append_many_writes_several_topics_and_the_state_together(log: SqliteEventLog) -> None:
    results = log.append_many(
        [("a", rows(0, 10)), ("b", rows(10, 4))], key="key", state=ProducerState("p", b"1")
    )
    assert [r.count for r in results] == [10, 4]
    assert sum(log.end_offsets("a").values()) == 10 and sum(log.end_offsets("b").values()) == 4
    assert log.producer_state("p") == b"1"
    # one bad table refuses the whole call: nothing of the good one is written either
    with pytest.raises(ValidationError):
        log.append_many(
            [("a", rows(20, 5)), ("b", rows(25, 5).drop_columns(["key"]))],
            key="key",
            state=ProducerState("p", b"2"),
        )
    assert sum(log.end_offsets("a").values()) == 10
    assert log.producer_state("p") == b"1"
