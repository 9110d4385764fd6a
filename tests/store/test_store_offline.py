"""OfflineStore and OfflineSink: layout, determinism, replay, aggregate, manifests, recovery."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_helpers import START, TOPIC, check_manifests, station_status

from dockline.core.contracts import STATION_STATUS_SCHEMA, DatasetMetadata
from dockline.core.errors import NotFoundError, StorageError, ValidationError
from dockline.core.time import FixedClock
from dockline.store import (
    AGGREGATE_1MIN,
    AGGREGATE_1MIN_SCHEMA,
    OfflineSink,
    OfflineStore,
    SqliteEventLog,
)

GROUP = "offline-sink"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2024, 6, 1, tzinfo=UTC))


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> OfflineStore:
    return OfflineStore(tmp_path / "offline", clock=clock)


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    handle = SqliteEventLog(tmp_path / "log" / "log.sqlite")
    handle.create_topic(TOPIC, 4)
    yield handle
    handle.close()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every Parquet file under ``root`` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def count(store: OfflineStore, source: str = TOPIC) -> tuple[int, int]:
    """(rows, distinct (station_id, event_ts)) in the store, via DuckDB."""
    result = (
        duckdb.connect()
        .execute(
            f"SELECT count(*), count(DISTINCT (station_id, event_ts)) FROM {store.scan(source)}"
        )
        .fetchone()
    )
    assert result is not None
    return int(result[0]), int(result[1])


def snap(
    station: str,
    event: datetime,
    ingested: datetime,
    bikes: int,
    *,
    capacity: int | None = 20,
    renting: bool = True,
) -> dict[str, object]:
    return {
        "station_id": station,
        "event_ts": event,
        "ingested_at": ingested,
        "num_bikes_available": bikes,
        "num_docks_available": 20 - bikes,
        "capacity": capacity,
        "is_installed": True,
        "is_renting": renting,
        "is_returning": True,
        "source": "hand",
    }


def table_of(snaps: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(snaps, schema=STATION_STATUS_SCHEMA)


# -- write ----------------------------------------------------------------------------------------


def test_write_splits_by_utc_date_sorts_and_drops_offsets(store: OfflineStore) -> None:
    midnight = datetime(2024, 5, 2, tzinfo=UTC)
    records = table_of(
        [
            snap("b", midnight + timedelta(seconds=30), midnight + timedelta(seconds=31), 1),
            snap("a", midnight - timedelta(seconds=1), midnight, 2),
            snap("a", midnight, midnight + timedelta(seconds=1), 3),
            snap("a", midnight - timedelta(minutes=5), midnight, 4),
        ]
    ).append_column("_offset", pa.array([10, 11, 12, 13], pa.int64()))
    paths = store.write(TOPIC, 2, 10, 13, records)
    names = sorted(str(p.relative_to(store.root)) for p in paths)
    assert names == [
        "station_status/date=2024-05-01/p002-000000000010-000000000013.parquet",
        "station_status/date=2024-05-02/p002-000000000010-000000000013.parquet",
    ]
    first = pq.read_table(paths[0]) if "05-01" in str(paths[0]) else pq.read_table(paths[1])
    second = pq.read_table(paths[1]) if "05-01" in str(paths[0]) else pq.read_table(paths[0])
    assert "_offset" not in first.column_names
    assert first["num_bikes_available"].to_pylist() == [4, 2]
    assert second["station_id"].to_pylist() == ["a", "b"]
    assert store.dates(TOPIC) == [date(2024, 5, 1), date(2024, 5, 2)]
    assert store.write(TOPIC, 0, 0, 0, records.slice(0, 0)) == []


def test_write_is_deterministic_bytes(tmp_path: Path) -> None:
    records = station_status(0, 5000)
    a = OfflineStore(tmp_path / "a", clock=FixedClock(START))
    b = OfflineStore(tmp_path / "b", clock=FixedClock(START + timedelta(days=3)))
    a.write(TOPIC, 1, 100, 5099, records)
    # No exact (station_id, event_ts, ingested_at) ties, so input order does not matter either.
    b.write(TOPIC, 1, 100, 5099, records.take(pa.array(range(4999, -1, -1))))
    assert snapshot(a.root) == snapshot(b.root)
    a.write(TOPIC, 1, 100, 5099, records)
    assert snapshot(a.root) == snapshot(b.root)


def test_write_rejects_bad_input(store: OfflineStore) -> None:
    records = station_status(0, 10)
    with pytest.raises(ValidationError):
        store.write(TOPIC, 0, 5, 4, records)
    with pytest.raises(ValidationError):
        store.write(TOPIC, 0, 0, 5, records)  # 10 records cannot fit 6 offsets
    with pytest.raises(ValidationError):
        store.write("../escape", 0, 0, 9, records)
    with pytest.raises(ValidationError):
        store.write(AGGREGATE_1MIN, 0, 0, 9, records)
    with pytest.raises(ValidationError):
        store.write(TOPIC, 0, 0, 9, records.drop_columns(["event_ts"]))


def test_discard_uncommitted(store: OfflineStore) -> None:
    records = station_status(0, 100)
    store.write(TOPIC, 0, 0, 99, records)
    store.write(TOPIC, 0, 100, 199, records)
    store.write(TOPIC, 1, 0, 99, records)
    stray = store.root / TOPIC / "date=2024-05-01" / "p000-000000000200-000000000299.parquet.tmp"
    stray.write_bytes(b"half a file")
    removed = store.discard_uncommitted(TOPIC, {0: 100})  # partition 1: nothing committed
    assert sorted(p.name for p in removed) == [
        "p000-000000000100-000000000199.parquet",
        "p001-000000000000-000000000099.parquet",
    ]
    assert not stray.exists()
    assert [p.name for p in store.files(TOPIC, date(2024, 5, 1))] == [
        "p000-000000000000-000000000099.parquet"
    ]


# -- sink, replay ---------------------------------------------------------------------------------


def test_sink_fills_the_store_and_replay_is_idempotent(
    log: SqliteEventLog, store: OfflineStore
) -> None:
    total = 40_000
    log.append(TOPIC, station_status(0, total), key="station_id")
    sink = OfflineSink(log, store, topic=TOPIC, read_batch=3000)
    progress: list[int] = []
    report = sink.run_once(progress.append)
    assert report.records == total == sum(progress)
    assert report.committed == log.end_offsets(TOPIC)
    assert report.dates == tuple(store.dates(TOPIC))
    assert count(store) == (total, total)
    before = snapshot(store.root)
    hashes = {day: store.manifest(TOPIC, day).content_hash for day in store.dates(TOPIC)}

    assert sink.run_once().records == 0  # nothing new
    log.commit(GROUP, TOPIC, dict.fromkeys(range(4), 0))  # replay from the start
    again = sink.run_once()
    assert again.records == total
    assert snapshot(store.root) == before
    assert count(store) == (total, total)
    assert {day: store.manifest(TOPIC, day).content_hash for day in store.dates(TOPIC)} == hashes

    # Rewind into the middle of files: they are rewritten whole, never duplicated.
    log.commit(GROUP, TOPIC, {0: 1, 1: 4500, 2: 7})
    sink.run_once()
    assert snapshot(store.root) == before
    assert count(store) == (total, total)
    assert check_manifests(store, TOPIC) == total


def test_sink_is_incremental_and_manifests_change_iff_data_changes(
    log: SqliteEventLog, store: OfflineStore, clock: FixedClock
) -> None:
    first_day = 50 * 288  # station_status: 50 stations every 5 minutes = one day
    log.append(TOPIC, station_status(0, 2 * first_day), key="station_id")
    sink = OfflineSink(log, store, topic=TOPIC)
    sink.run_once()
    day1, day2 = store.dates(TOPIC)
    m1, m2 = store.manifest(TOPIC, day1), store.manifest(TOPIC, day2)
    assert (m1.row_count, m2.row_count) == (first_day, first_day)
    assert m1.built_at == clock.now()
    assert m1.time_range_start == START
    assert m1.columns == STATION_STATUS_SCHEMA.names

    clock.advance(timedelta(hours=1))
    store.refresh(TOPIC, [day1])  # same data, new build time: same hash
    again = store.manifest(TOPIC, day1)
    assert again.content_hash == m1.content_hash
    assert again.built_at == clock.now() != m1.built_at

    log.append(TOPIC, station_status(2 * first_day, 100), key="station_id")  # a third day
    report = sink.run_once()
    assert report.records == 100
    assert report.dates == (date(2024, 5, 3),)
    assert store.manifest(TOPIC, day2).content_hash == m2.content_hash
    assert count(store) == (2 * first_day + 100, 2 * first_day + 100)

    late = station_status(first_day + 5, 1)  # another snapshot for day 2, ingested later
    late = late.set_column(1, "event_ts", pa.array([START + timedelta(days=1, seconds=1)]))
    log.append(TOPIC, late.cast(STATION_STATUS_SCHEMA), key="station_id")
    assert sink.run_once().dates == (day2,)
    assert store.manifest(TOPIC, day2).content_hash != m2.content_hash
    assert store.manifest(TOPIC, day2).row_count == first_day + 1
    assert check_manifests(store, TOPIC) == 2 * first_day + 101


def test_sink_recovers_dirty_dates_and_uncommitted_files(
    log: SqliteEventLog, store: OfflineStore
) -> None:
    log.append(TOPIC, station_status(0, 1000), key="station_id")
    sink = OfflineSink(log, store, topic=TOPIC)
    sink.run_once()
    # Crash 1: the next chunk was committed but its date never refreshed (dirty dates recorded).
    more = station_status(1000, 50)
    result = log.append(TOPIC, more, key="station_id")
    (p, (first, last)), *_ = sorted(result.ranges.items())
    chunk = log.read(TOPIC, p, first, last - first + 1)
    paths = store.write(TOPIC, p, first, last, chunk)
    store.set_dirty_dates(TOPIC, {date(2024, 5, 1)})
    log.commit(GROUP, TOPIC, {p: last + 1})
    # Crash 2: a file past the checkpoint, on a date of its own that a manifest already lists
    # (as after a group was rewound).
    orphan = store.write(TOPIC, 3, 10_000, 10_049, station_status(100_000, 50))
    orphan_day = date(2024, 5, 7)
    store.refresh(TOPIC, [orphan_day])
    assert store.manifest(TOPIC, orphan_day).row_count == 50
    report = sink.run_once()
    assert report.discarded == 1 and not orphan[0].exists()
    assert orphan_day in report.dates
    with pytest.raises(NotFoundError):
        store.manifest(TOPIC, orphan_day)
    assert all(path.exists() for path in paths)
    assert count(store) == (1050, 1050)
    assert check_manifests(store, TOPIC) == 1050
    assert store.dirty_dates(TOPIC) == set()


def test_sink_without_topic_does_nothing_and_sinks_exclude_each_other(
    tmp_path: Path, store: OfflineStore
) -> None:
    empty_log = SqliteEventLog(tmp_path / "empty.sqlite")
    sink = OfflineSink(empty_log, store, topic="nothing-here")
    assert sink.run_once().records == 0
    with store.exclusive("nothing-here"), pytest.raises(StorageError):
        sink.run_once()
    empty_log.close()


# -- aggregate ------------------------------------------------------------------------------------


def hand_example() -> list[pa.Table]:
    """Three appends; the hand-computed 1-minute aggregate is in ``test_aggregate_*``."""
    t = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    s = timedelta(seconds=1)
    first = table_of(
        [
            snap("A", t + 10 * s, t + 20 * s, 5),
            snap("A", t + 50 * s, t + 60 * s, 3),  # ties on event_ts; greatest ingested_at wins
            snap("A", t + 50 * s, t + 55 * s, 9),
            snap("B", t + 5 * s, t + 6 * s, 7, capacity=None),
            snap("A", t + 90 * s, t + 100 * s, 4),  # minute 12:01: exact tie with the next rows
        ]
    )
    second = table_of([snap("A", t + 90 * s, t + 100 * s, 6, capacity=None, renting=False)])
    third = table_of([snap("A", t + 61 * s, t + 200 * s, 1)])  # arrives last, not the latest
    return [first, second, third]


def expected_aggregate() -> list[dict[str, object]]:
    t = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    s = timedelta(seconds=1)
    return [
        {
            "station_id": "A",
            "minute": t,
            "bikes_last": 3,
            "bikes_min": 3,
            "bikes_max": 9,
            "docks_last": 17,
            "docks_min": 11,
            "docks_max": 17,
            "capacity_last": 20,
            "is_renting_last": True,
            "is_returning_last": True,
            "snapshot_count": 3,
            "last_event_ts": t + 50 * s,
            "max_ingested_at": t + 60 * s,
        },
        {
            "station_id": "A",
            "minute": t + 60 * s,
            # 12:01:30 twice with the same ingested_at: the one appended later (bikes 6) wins,
            # and its null capacity is the last capacity.
            "bikes_last": 6,
            "bikes_min": 1,
            "bikes_max": 6,
            "docks_last": 14,
            "docks_min": 14,
            "docks_max": 19,
            "capacity_last": None,
            "is_renting_last": False,
            "is_returning_last": True,
            "snapshot_count": 3,
            "last_event_ts": t + 90 * s,
            "max_ingested_at": t + 200 * s,
        },
        {
            "station_id": "B",
            "minute": t,
            "bikes_last": 7,
            "bikes_min": 7,
            "bikes_max": 7,
            "docks_last": 13,
            "docks_min": 13,
            "docks_max": 13,
            "capacity_last": None,
            "is_renting_last": True,
            "is_returning_last": True,
            "snapshot_count": 1,
            "last_event_ts": t + 5 * s,
            "max_ingested_at": t + 6 * s,
        },
    ]


@pytest.mark.parametrize("read_batch", [1, 2, 1000])
def test_aggregate_matches_a_hand_computed_example(
    tmp_path: Path, read_batch: int, clock: FixedClock
) -> None:
    log = SqliteEventLog(tmp_path / "log.sqlite")
    log.create_topic(TOPIC, 1)
    for table in hand_example():
        log.append(TOPIC, table, key="station_id")
    store = OfflineStore(tmp_path / "offline", clock=clock)
    OfflineSink(log, store, topic=TOPIC, read_batch=read_batch).run_once()
    aggregate = store.aggregate_1min(date(2024, 5, 1))
    assert aggregate.schema == AGGREGATE_1MIN_SCHEMA
    assert aggregate.to_pylist() == expected_aggregate()
    manifest = DatasetMetadata.read(
        store.root / AGGREGATE_1MIN / "date=2024-05-01" / "_manifest.json"
    )
    assert manifest.row_count == 3
    assert manifest.event_ts == "minute"
    assert manifest.time_range_end == datetime(2024, 5, 1, 12, 1, tzinfo=UTC)
    digest = hashlib.sha256(
        (store.root / AGGREGATE_1MIN / "date=2024-05-01" / "part-0.parquet").read_bytes()
    ).hexdigest()
    assert manifest.files[0].sha256 == digest
    log.close()


def test_refresh_of_an_emptied_date_removes_manifest_and_aggregate(
    log: SqliteEventLog, store: OfflineStore
) -> None:
    log.append(TOPIC, station_status(0, 100), key="station_id")
    OfflineSink(log, store, topic=TOPIC).run_once()
    day = date(2024, 5, 1)
    store.aggregate_1min(day)
    for path in store.files(TOPIC, day):
        path.unlink()
    store.refresh(TOPIC, [day])
    with pytest.raises(NotFoundError):
        store.manifest(TOPIC, day)
    with pytest.raises(NotFoundError):
        store.aggregate_1min(day)
    with pytest.raises(NotFoundError):
        store.scan(TOPIC)


def test_scan_reads_every_date_with_duckdb(log: SqliteEventLog, store: OfflineStore) -> None:
    log.append(TOPIC, station_status(0, 30_000), key="station_id")
    OfflineSink(log, store, topic=TOPIC, read_batch=7000).run_once()
    con = duckdb.connect()
    by_date = con.execute(
        f"SELECT date, count(*) FROM {store.scan(TOPIC)} GROUP BY date ORDER BY date"
    ).fetchall()
    assert [d for d, _ in by_date] == store.dates(TOPIC)
    assert [n for _, n in by_date] == [
        store.manifest(TOPIC, d).row_count for d in store.dates(TOPIC)
    ]
    minutes = con.execute(
        f"SELECT sum(snapshot_count) FROM {store.scan(AGGREGATE_1MIN)}"
    ).fetchone()
    assert minutes == (30_000,)
