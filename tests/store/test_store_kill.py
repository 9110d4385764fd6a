"""kill -9 of real writer and sink processes: nothing is lost, nothing is duplicated."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from store_helpers import TOPIC, check_manifests, station_status

from dockline.core.contracts import DatasetMetadata
from dockline.store import AGGREGATE_1MIN, OfflineStore, SqliteEventLog

HELPER = str(Path(__file__).with_name("store_helpers.py"))


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, HELPER, *args])


def kill_after(proc: subprocess.Popen[bytes], ready: float, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` s after ``ready``; False if it finished first."""
    time.sleep(max(0.0, ready + delay - time.monotonic()))
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return True


def wait_for(condition, timeout: float = 20.0) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)
    return time.monotonic()


@pytest.mark.timeout(60)
def test_writer_killed_and_restarted_appends_every_row_once(tmp_path: Path) -> None:
    rng = random.Random(20240501)
    path = tmp_path / "log" / "log.sqlite"
    total, batch = 200_000, 500
    SqliteEventLog(path).create_topic(TOPIC, 4)
    observer = SqliteEventLog(path)
    kills = 0
    for _ in range(3):
        proc = spawn("writer", str(path), str(total), str(batch))
        ready = wait_for(lambda: observer.producer_state("writer") is not None)
        kills += kill_after(proc, ready, rng.uniform(0.05, 0.4))
        # The producer state always equals what the log holds: it commits with the append.
        state = observer.producer_state("writer")
        assert state is not None
        assert int(state) == sum(observer.end_offsets(TOPIC).values())
    assert kills >= 1, "the writer finished before any kill; make it slower"
    proc = spawn("writer", str(path), str(total), str(batch))
    assert proc.wait(timeout=60) == 0
    seen = []
    for partition, end in observer.end_offsets(TOPIC).items():
        table = observer.read(TOPIC, partition, 0, end + 1)
        assert table["_offset"].to_pylist() == list(range(end))
        station = table["station_id"].to_pylist()
        assert len(station) == end
        seen.append(table.select(["station_id", "event_ts"]))
    con = duckdb.connect()
    everything = pa.concat_tables(seen)  # noqa: F841 - read by DuckDB below
    rows, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (station_id, event_ts)) FROM everything"
    ).fetchone()  # type: ignore[misc]
    assert rows == distinct == total
    assert observer.producer_state("writer") == str(total).encode()
    observer.close()


@pytest.mark.timeout(60)
def test_sink_killed_and_restarted_stores_every_row_once(tmp_path: Path) -> None:
    rng = random.Random(7)
    log_path = tmp_path / "log" / "log.sqlite"
    root = tmp_path / "offline"
    total = 120_000
    log = SqliteEventLog(log_path)
    log.create_topic(TOPIC, 4)
    for start in range(0, total, 20_000):
        log.append(TOPIC, station_status(start, 20_000), key="station_id")
    store = OfflineStore(root)
    kills = 0
    for _ in range(3):
        proc = spawn("sink", str(log_path), str(root), "1500")
        ready = wait_for(lambda: any(root.glob("station_status/date=*/*.parquet")))
        kills += kill_after(proc, ready, rng.uniform(0.05, 0.5))
        # Whatever the sink committed is in the store; nothing committed is missing.
        committed = log.committed("offline-sink", TOPIC)
        con = duckdb.connect()
        if store.dates(TOPIC):
            stored = con.execute(f"SELECT count(*) FROM {store.scan(TOPIC)}").fetchone()
            assert stored is not None and stored[0] >= sum(committed.values())
        if proc.returncode == 0:
            break
    assert kills >= 1, "the sink finished before any kill; make it slower"
    proc = spawn("sink", str(log_path), str(root), "1500")
    assert proc.wait(timeout=60) == 0
    assert log.committed("offline-sink", TOPIC) == log.end_offsets(TOPIC)
    con = duckdb.connect()
    stored = con.execute(
        f"SELECT count(*), count(DISTINCT (station_id, event_ts)) FROM {store.scan(TOPIC)}"
    ).fetchone()
    assert stored == (total, total)
    assert check_manifests(store, TOPIC) == total
    assert not list(root.glob("station_status/*.json"))  # no dirty dates left
    # The aggregate covers every stored snapshot, per date, and its manifest matches.
    for day in store.dates(TOPIC):
        aggregate = store.aggregate_1min(day)
        files = store.files(TOPIC, day)
        day_rows = sum(f.rows for f in store.manifest(TOPIC, day).files)
        assert sum(aggregate["snapshot_count"].to_pylist()) == day_rows
        assert len(files) >= 1
        agg_manifest = DatasetMetadata.read(
            root / AGGREGATE_1MIN / f"date={day.isoformat()}" / "_manifest.json"
        )
        assert agg_manifest.row_count == aggregate.num_rows
        assert agg_manifest.extra["source_content_hash"] == store.manifest(TOPIC, day).content_hash
    log.close()
