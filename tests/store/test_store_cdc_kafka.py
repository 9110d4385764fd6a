"""Seed 000's path, whole: rows another system writes into PostgreSQL → logical replication
(the initial snapshot, then the stream) → the Kafka-protocol log → the offline store. The same
rows and counts as through the embedded SQLite log; nothing touches the embedded log; the
dead letter also reaches the dead-letter topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from dockline.core.time import FixedClock
from dockline.pipeline.cdc import ingest_cdc
from dockline.pipeline.ingest import sink_offline
from dockline.pipeline.platform import Platform
from dockline.store.log.kafka import DEAD_LETTER_TOPIC, KafkaEventLog

psycopg2 = pytest.importorskip("psycopg2")

T0 = datetime(2024, 5, 6, 12, tzinfo=UTC)
CLOCK = T0 + timedelta(hours=2)


def _database(postgres: Any) -> Any:
    name = f"cdc_kafka_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(postgres.dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    conn = psycopg2.connect(postgres.dsn(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE station_status (id bigserial PRIMARY KEY, station_id text,"
            " num_bikes_available integer, num_docks_available integer,"
            " last_reported timestamptz)"
        )
    return conn


def _insert(conn: Any, rows: list[tuple[str, int, int, datetime]]) -> None:
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.executemany(
            "INSERT INTO station_status"
            " (station_id, num_bikes_available, num_docks_available, last_reported)"
            " VALUES (%s, %s, %s, %s)",
            rows,
        )
        cur.execute("COMMIT")


def _offline(platform: Platform) -> pa.Table:
    files = sorted(str(p) for p in platform.data.offline("station_status").rglob("*.parquet"))
    with duckdb.connect() as con:
        return con.sql(
            "select * exclude (date) from read_parquet($files, hive_partitioning = true)"
            " order by all",
            params={"files": files},
        ).to_arrow_table()


@pytest.mark.slow
def test_postgres_cdc_into_the_kafka_log_equals_cdc_into_sqlite(
    postgres: Any, kafka_bootstrap: str, tmp_path: Path
) -> None:
    conn = _database(postgres)
    dsn = postgres.dsn(conn.info.dbname)
    prefix = f"cdc-{uuid.uuid4().hex[:8]}."
    kafka = (
        f'[log]\nkind = "kafka"\nbootstrap_servers = "{kafka_bootstrap}"\n'
        f'topic_prefix = "{prefix}"\n'
    )
    platforms = {}
    for kind, text in (("sqlite", ""), ("kafka", kafka)):
        root = tmp_path / kind
        root.mkdir()
        (root / "dockline.toml").write_text(text)
        platforms[kind] = Platform.open(root, clock=FixedClock(CLOCK))
    # rows written before dockline ever ran: the initial snapshot reads them
    _insert(conn, [(f"st{i:02d}", i % 7, 20, T0 + timedelta(minutes=i // 30)) for i in range(120)])
    runs: dict[str, list[Any]] = {kind: [] for kind in platforms}
    for kind, platform in platforms.items():
        runs[kind].append(ingest_cdc(platform, dsn, slot=f"s_{kind}", source="cdc", once=True))
    # then three transactions, one of them with a bad row, while both slots exist: the stream
    for k in range(3):
        rows = [(f"st{i:02d}", (i + k) % 9, 20, T0 + timedelta(minutes=10 + k)) for i in range(40)]
        if k == 1:
            rows.append(("st99", -2, 20, T0 + timedelta(minutes=11)))  # negative count
        _insert(conn, rows)
    for kind, platform in platforms.items():
        runs[kind].append(ingest_cdc(platform, dsn, slot=f"s_{kind}", source="cdc", once=True))
        sink_offline(platform)
    conn.close()

    def counts(summary: Any) -> tuple[int, int, int, int]:
        return (
            summary.received,
            summary.accepted,
            sum(summary.dead_letters.values()),
            summary.snapshot_rows,
        )

    sqlite, on_kafka = runs["sqlite"], runs["kafka"]
    assert [counts(s) for s in sqlite] == [(120, 120, 0, 120), (121, 120, 1, 0)]
    assert [counts(s) for s in on_kafka] == [counts(s) for s in sqlite]
    offline = {kind: _offline(platform) for kind, platform in platforms.items()}
    assert offline["sqlite"].num_rows == 240
    assert offline["kafka"].equals(offline["sqlite"])
    # nothing in the embedded log with kafka; the records are in the broker
    assert not (tmp_path / "kafka" / "log").exists()
    assert (tmp_path / "sqlite" / "log" / "log.sqlite").exists()
    log = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    try:
        assert sum(log.end_offsets("station_status").values()) == 240
    finally:
        log.close()
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"{prefix}dlq-test"})
    consumer.assign([TopicPartition(prefix + DEAD_LETTER_TOPIC, 0, 0)])
    letters = []
    while batch := consumer.consume(10, timeout=1.0):
        letters.extend(m for m in batch if m.error() is None)
    consumer.close()
    assert [dict(m.headers())["reason"] for m in letters] == [b"negative_count"]
