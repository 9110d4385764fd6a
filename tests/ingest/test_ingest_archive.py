"""normalize_table on real Divvy data, and the JSON/Parquet/CSV archive readers."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dockline.core.config import IngestConfig
from dockline.core.contracts import STATION_STATUS_SCHEMA, RejectReason
from dockline.core.errors import ConfigError, SourceError
from dockline.ingest import (
    DIVVY_MAPPING,
    Batch,
    StationStatusNormalizer,
    iter_json_archive,
    iter_table_archive,
    map_columns,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def check(batch: Batch, received: int) -> None:
    assert batch.received == received
    assert received == batch.accepted.num_rows + batch.unchanged + len(batch.dead_letters)
    assert batch.accepted.schema == STATION_STATUS_SCHEMA
    assert batch.accepted.column("event_ts").type.tz == "UTC"


def divvy_slice(divvy_dir: Path, month: str, rows: int) -> pa.Table:
    parquet = pq.ParquetFile(divvy_dir / "station_status" / f"{month}.parquet")
    batch = next(parquet.iter_batches(batch_size=rows))
    return map_columns(pa.Table.from_batches([batch]), DIVVY_MAPPING)


def test_divvy_first_100k_rows(divvy_dir: Path) -> None:
    table = divvy_slice(divvy_dir, "2013-07", 100_000)
    norm = StationStatusNormalizer("divvy", IngestConfig())
    batch = norm.normalize_table(table, batch_id="2013-07.parquet#0")
    check(batch, 100_000)
    accepted = batch.accepted
    assert accepted.column("ingested_at").equals(accepted.column("event_ts"))  # delay 0
    # the first 100k rows of 2013-07 are clean (its repeated snapshots start in 2013-11)
    assert batch.dead_letters == []
    # Divvy has no is_installed/is_returning: they default to True; is_renting is kept
    assert pc.all(accepted.column("is_installed")).as_py()
    assert pc.all(accepted.column("is_returning")).as_py()
    assert accepted.column("is_renting").equals(table.column("is_renting"))
    assert accepted.column("capacity").to_pylist() == table.column("capacity").to_pylist()
    assert norm.counters["received"] == 100_000


def test_divvy_real_repeats_are_unchanged_or_conflicts(divvy_dir: Path) -> None:
    # 2013-07 has no repeated snapshots; 2014-02 does (same station, same obs_ts): a repeat
    # with the same counts is the station's newest event again (unchanged), one with other
    # counts is a conflict
    table = divvy_slice(divvy_dir, "2014-02", 100_000)
    keys = pc.binary_join_element_wise(
        table["station_id"], pc.cast(pc.cast(table["event_ts"], pa.int64()), pa.string()), "|"
    )
    expected = table.num_rows - len(pc.unique(keys))
    assert expected > 0
    norm = StationStatusNormalizer("divvy", IngestConfig(publication_delay=timedelta(seconds=30)))
    batch = norm.normalize_table(table, batch_id="2014-02.parquet#0")
    check(batch, 100_000)
    reasons = {d.reason for d in batch.dead_letters}
    assert reasons <= {RejectReason.CONFLICT}
    assert batch.unchanged + len(batch.dead_letters) == expected
    assert batch.unchanged > 0
    # the same rows cut into batches of 7,001 rows get the same decisions
    cut = StationStatusNormalizer("divvy", IngestConfig(publication_delay=timedelta(seconds=30)))
    pieces = [
        cut.normalize_table(table.slice(i, 7001), batch_id="2014-02.parquet#0")
        for i in range(0, table.num_rows, 7001)
    ]
    assert sum(b.unchanged for b in pieces) == batch.unchanged
    assert sum(b.accepted.num_rows for b in pieces) == batch.accepted.num_rows
    assert [d.reason for b in pieces for d in b.dead_letters] == [
        d.reason for d in batch.dead_letters
    ]
    accepted = norm.normalize_table(table.slice(0, 2000), batch_id="x").accepted
    assert accepted.num_rows == 0
    tampered = table.slice(0, 1).set_column(
        table.schema.get_field_index("num_bikes_available"),
        "num_bikes_available",
        pa.array([999], table.schema.field("num_bikes_available").type),
    )
    conflict = StationStatusNormalizer("divvy", IngestConfig())
    conflict.normalize_table(table.slice(0, 1), batch_id="a")
    letters = conflict.normalize_table(tampered, batch_id="b").dead_letters
    assert [d.reason for d in letters] == [RejectReason.CONFLICT]
    letter = letters[0]
    raw = orjson.loads(letter.raw)
    assert raw["station_id"] == letter.key
    assert letter.event_ts is not None
    assert letter.ingested_at == letter.event_ts
    first = batch.accepted.slice(0, 1).to_pylist()[0]
    assert first["ingested_at"] - first["event_ts"] == timedelta(seconds=30)
    # feeding the same rows again: every one is now unchanged, a duplicate or late
    again = norm.normalize_table(table.slice(0, 1000), batch_id="again")
    assert again.accepted.num_rows == 0
    assert {d.reason for d in again.dead_letters} <= {RejectReason.DUPLICATE, RejectReason.LATE}


def test_normalize_table_rejects_and_coerces() -> None:
    base = int(T0.timestamp())
    table = pa.table(
        {
            "station_id": pa.array([1, 2, None, 4, 5, 6, 1, 7], pa.int64()),
            "event_ts": pa.array(
                [
                    str(base),
                    "2024-05-01T11:59:00Z",
                    str(base),
                    "garbage",
                    str(base),
                    str(base + 7200),
                    str(base),
                    None,
                ]
            ),
            "ingested_at": pa.array([T0] * 8, pa.timestamp("us", tz="UTC")),
            "num_bikes_available": pa.array([1, 2, 3, 4, -5, 6, 1, 1], pa.int16()),
            "num_docks_available": pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.5]),
            "is_renting": pa.array([1, 0, 1, 1, 1, 1, 1, 1], pa.int8()),
        }
    )
    batch = StationStatusNormalizer("t", IngestConfig()).normalize_table(table, batch_id="x")
    check(batch, 8)
    rows = batch.accepted.to_pylist()
    assert [(r["station_id"], r["is_renting"]) for r in rows] == [("1", True), ("2", False)]
    assert rows[1]["event_ts"] == T0 - timedelta(minutes=1)
    assert [(d.key, d.reason) for d in batch.dead_letters] == [
        (None, RejectReason.MISSING_FIELD),
        ("4", RejectReason.BAD_VALUE),
        ("5", RejectReason.NEGATIVE_COUNT),
        ("6", RejectReason.FUTURE),
        ("7", RejectReason.MISSING_FIELD),  # missing beats the fractional dock count
    ]
    assert batch.unchanged == 1  # station 1 again, same time and values


def test_normalize_table_late_in_unsorted_batch() -> None:
    # station a; 5 is 25 min behind 30 → late, 29 is fine, 0 again is 30 min behind → late
    # (an accepted event older than the lateness window is not remembered, in one batch or two)
    minutes = [0, 30, 5, 29, 31, 0]
    table = pa.table(
        {
            "station_id": ["a", "a", "a", "a", "b", "a"],
            "event_ts": pa.array(
                [T0 + timedelta(minutes=m) for m in minutes], pa.timestamp("s", tz="UTC")
            ),
            "num_bikes_available": [1] * 6,
            "num_docks_available": [1] * 6,
        }
    )
    batch = StationStatusNormalizer("t", IngestConfig()).normalize_table(table, batch_id="x")
    check(batch, 6)
    assert batch.accepted["event_ts"].to_pylist() == [
        T0 + timedelta(minutes=m) for m in (0, 30, 29, 31)
    ]
    assert [d.reason for d in batch.dead_letters] == [RejectReason.LATE, RejectReason.LATE]


def test_normalize_table_schema_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="event_ts"):
        StationStatusNormalizer("t", IngestConfig()).normalize_table(
            pa.table({"station_id": ["a"]}), batch_id="x"
        )
    naive = pa.table(
        {
            "station_id": ["a"],
            "event_ts": pa.array([datetime(2024, 1, 1)], pa.timestamp("us")),
            "num_bikes_available": [1],
            "num_docks_available": [1],
        }
    )
    with pytest.raises(ConfigError, match="timezone-aware"):
        StationStatusNormalizer("t", IngestConfig()).normalize_table(naive, batch_id="x")


def test_iter_table_archive_parquet_directory(divvy_dir: Path, tmp_path: Path) -> None:
    src = pq.ParquetFile(divvy_dir / "station_status" / "2013-07.parquet")
    head = pa.Table.from_batches([next(src.iter_batches(batch_size=2500))])
    (tmp_path / "b").mkdir()
    pq.write_table(head.slice(0, 1500), tmp_path / "b" / "2.parquet")
    pq.write_table(head.slice(1500), tmp_path / "1.parquet")
    batches = list(iter_table_archive(tmp_path, batch_rows=1000))
    assert [bid for bid, _ in batches] == ["1.parquet#0", "b/2.parquet#0", "b/2.parquet#1"]
    assert [t.num_rows for _, t in batches] == [1000, 1000, 500]
    assert all("event_ts" in t.column_names and "obs_ts" not in t.column_names for _, t in batches)
    assert batches == list(iter_table_archive(tmp_path, batch_rows=1000))  # deterministic
    single = list(iter_table_archive(tmp_path / "1.parquet", batch_rows=10_000))
    assert [bid for bid, _ in single] == ["1.parquet#0"]


def test_iter_table_archive_csv(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text(
        "station_id,when,num_bikes_available,num_docks_available\n"
        "a,2024-05-01T12:00:00Z,1,2\n"
        "a,1714565100,1,2\n"
        "b,2024-05-01T12:00:00+02:00,3,4\n"
        "c,not-a-time,3,4\n",
        encoding="utf-8",
    )
    ((bid, table),) = iter_table_archive(tmp_path, {"when": "event_ts"})
    assert bid == "s.csv#0"
    batch = StationStatusNormalizer("csv", IngestConfig()).normalize_table(table, batch_id=bid)
    check(batch, 4)
    assert batch.accepted["event_ts"].to_pylist() == [
        T0,
        T0 + timedelta(minutes=5),
        T0 - timedelta(hours=2),
    ]
    assert [d.reason for d in batch.dead_letters] == [RejectReason.BAD_VALUE]


def test_iter_table_archive_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        list(iter_table_archive(tmp_path / "missing"))
    with pytest.raises(SourceError):
        list(iter_table_archive(tmp_path))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="obs_ts"):
        list(iter_table_archive(tmp_path))


def test_iter_json_archive_order_and_times(gbfs_dir: Path, tmp_path: Path) -> None:
    fixtures = gbfs_dir / "fixtures"
    shutil.copy(
        fixtures / "v2.3/mobilitydata-spec-examples/station_status.json",
        tmp_path / "station_status_b.json",
    )
    (tmp_path / "old").mkdir()
    shutil.copy(
        fixtures / "v3.0/mobilitydata-gbfs-json-schema-testFixtures/station_status.json",
        tmp_path / "old" / "station_status.json",
    )
    shutil.copy(
        fixtures / "v3.0/mobilitydata-spec-examples/station_information-1.json",
        tmp_path / "station_information.json",
    )
    (tmp_path / "station_status_broken.json").write_bytes(b"{not json")
    (tmp_path / "system_information.json").write_bytes(b"{}")  # not ours: skipped
    docs = list(iter_json_archive(tmp_path, publication_delay=timedelta(seconds=10)))
    assert [d.batch_id for d in docs] == [
        "station_information.json",
        "old/station_status.json",  # 2019
        "station_status_b.json",  # 2021
        "station_status_broken.json",  # unreadable: last
    ]
    assert [d.kind for d in docs] == ["station_information"] + ["station_status"] * 3
    assert docs[1].last_updated == datetime(2019, 7, 4, 13, 33, 3, 969000, tzinfo=UTC)
    assert docs[1].ingested_at == docs[1].last_updated + timedelta(seconds=10)
    assert docs[3].last_updated is None and docs[3].ingested_at == docs[2].ingested_at
    norm = StationStatusNormalizer("archive", IngestConfig(stale_after=timedelta(days=3650)))
    batch = norm.normalize_document(docs[3].payload, ingested_at=docs[3].ingested_at, batch_id="x")
    assert batch.dead_letters[0].reason == RejectReason.MALFORMED


def test_timestamps_beyond_python_datetime_are_bad_values() -> None:
    far = pa.array([T0.timestamp() * 1_000_000, 300_000_000_000 * 1_000_000], pa.int64())
    table = pa.table(
        {
            "station_id": ["a", "b"],
            "event_ts": far.cast(pa.timestamp("us", tz="UTC")),
            "ingested_at": pa.array([T0, T0], pa.timestamp("us", tz="UTC")),
            "num_bikes_available": [1, 1],
            "num_docks_available": [1, 1],
        }
    )
    batch = StationStatusNormalizer("t", IngestConfig()).normalize_table(table, batch_id="x")
    check(batch, 2)
    assert [(d.key, d.reason, d.event_ts) for d in batch.dead_letters] == [
        ("b", RejectReason.BAD_VALUE, None)
    ]
