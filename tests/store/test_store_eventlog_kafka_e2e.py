"""``[log] kind = "kafka"`` end to end: a simulated city's archive → ingest → offline sink →
materialize gives the same offline rows and online vectors as the SQLite log; nothing touches
the embedded log; dead letters also reach the dead-letter topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Consumer, TopicPartition

from dockline.core.config import DocklineConfig
from dockline.core.errors import StorageError
from dockline.core.time import FixedClock
from dockline.features.materialize import FEATURES_GROUP, STATE_GROUP
from dockline.pipeline.features import materialize, open_online_store
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import CityConfig, write_archive
from dockline.store.log.kafka import DEAD_LETTER_TOPIC, KafkaEventLog

START = datetime(2024, 5, 6, 5, tzinfo=UTC)
CLOCK = datetime(2024, 6, 1, tzinfo=UTC)
TABLES = ("station_status", "station_information", "station_status.confirmed")


def _platform(root: Path, log_toml: str) -> Platform:
    root.mkdir(parents=True)
    (root / "dockline.toml").write_text(log_toml)
    return Platform.open(root, clock=FixedClock(CLOCK))


def _kafka_toml(bootstrap: str) -> tuple[str, str]:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}."
    return (
        prefix,
        f'[log]\nkind = "kafka"\nbootstrap_servers = "{bootstrap}"\ntopic_prefix = "{prefix}"\n',
    )


def _offline(platform: Platform, table: str) -> pa.Table:
    files = sorted(str(p) for p in platform.data.offline(table).rglob("*.parquet"))
    if not files:
        return pa.table({})
    with duckdb.connect() as con:
        return con.sql(
            "select * exclude (date) from read_parquet($files, hive_partitioning = true)"
            " order by all",
            params={"files": files},
        ).to_arrow_table()


@pytest.mark.slow
def test_kafka_log_gives_the_same_offline_rows_and_vectors_as_sqlite(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    write_archive(CityConfig(stations=10, seed=7, start=START), 2.0, tmp_path / "archive")
    prefix, toml = _kafka_toml(kafka_bootstrap)
    outcomes = {}
    for kind, text in (("sqlite", ""), ("kafka", toml)):
        platform = _platform(tmp_path / kind, text)
        summary = ingest_archive(platform, tmp_path / "archive", source="city")
        sinks = sink_offline(platform)
        report = materialize(platform)
        store = open_online_store(platform)
        try:
            stations = _offline(platform, "station_information")["station_id"].to_pylist()
            groups = [FEATURES_GROUP, STATE_GROUP]
            vectors = [
                {g: (v.values, v.as_of_us) if v else None for g, v in row.items()}
                for row in store.read_many(sorted(set(stations)), groups)
            ]
        finally:
            store.close()
        outcomes[kind] = (
            summary.accepted,
            {t: r.records for t, r in sinks.items()},
            (report.events, report.vectors),
            {t: _offline(platform, t) for t in TABLES},
            vectors,
        )
    assert outcomes["sqlite"][0] > 1000
    assert outcomes["kafka"][:3] == outcomes["sqlite"][:3]
    for table in TABLES:
        assert outcomes["kafka"][3][table].equals(outcomes["sqlite"][3][table]), table
    assert outcomes["kafka"][4] == outcomes["sqlite"][4]
    assert any(v is not None for row in outcomes["kafka"][4] for v in row.values())
    # with kafka nothing is written to the embedded log
    assert not (tmp_path / "kafka" / "log").exists()
    assert (tmp_path / "sqlite" / "log" / "log.sqlite").exists()
    # and the records are in the broker, under the configured prefix
    log = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    try:
        assert sum(log.end_offsets("station_status").values()) == outcomes["kafka"][0]
    finally:
        log.close()


def test_dead_letters_also_go_to_the_dead_letter_topic(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    t0 = int(START.timestamp())
    stations = [
        {"station_id": "a", "num_bikes_available": 3, "num_docks_available": 5},
        {"station_id": "b", "num_bikes_available": -4, "num_docks_available": 5},
        {"station_id": "c", "num_bikes_available": "x", "num_docks_available": 5},
    ]
    for s in stations:
        s |= {"is_installed": True, "is_renting": True, "is_returning": True}
        s["last_reported"] = t0 - 30
    archive = tmp_path / "gbfs"
    archive.mkdir()
    doc = {"last_updated": t0, "ttl": 60, "version": "2.3", "data": {"stations": stations}}
    (archive / "station_status_1.json").write_bytes(orjson.dumps(doc))
    prefix, toml = _kafka_toml(kafka_bootstrap)
    platform = _platform(tmp_path / "data", toml)
    summary = ingest_archive(platform, archive)
    assert summary.accepted == 1
    rejected = sum(summary.dead_letters.values())
    assert rejected == 2
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "dlq-test"})
    consumer.assign([TopicPartition(prefix + DEAD_LETTER_TOPIC, 0, 0)])
    messages = []
    while batch := consumer.consume(10, timeout=1.0):
        messages.extend(m for m in batch if m.error() is None)
    consumer.close()
    assert len(messages) == rejected
    letters = [orjson.loads(m.value()) for m in messages]
    assert {letter["key"] for letter in letters} == {"b", "c"}
    for message, letter in zip(messages, letters, strict=True):
        headers = dict(message.headers())
        assert headers["reason"].decode() == letter["reason"]
        assert headers["schema_version"] == b"v1"
        assert message.key().decode() == letter["id"]
    # the SQLite store stays the store of record
    store = platform.open_deadletters()
    try:
        assert sum(store.counts().values()) == rejected
    finally:
        store.close()


def test_kafka_config_needs_bootstrap_servers() -> None:
    with pytest.raises(ValueError, match="bootstrap_servers"):
        DocklineConfig.model_validate({"log": {"kind": "kafka"}})
    config = DocklineConfig.model_validate(
        {"log": {"kind": "kafka", "bootstrap_servers": "127.0.0.1:9092"}}
    )
    assert config.log.topic_prefix == "dockline." and config.log.retention_ms == -1


def test_an_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    from tansu_broker import free_port

    text = f'[log]\nkind = "kafka"\nbootstrap_servers = "127.0.0.1:{free_port()}"\ntimeout = 1.0\n'
    platform = _platform(tmp_path / "data", text)
    with pytest.raises(StorageError, match=r"broker at 127\.0\.0\.1:\d+") as info:
        platform.open_log()
    assert info.value.reason == "kafka_unreachable"
