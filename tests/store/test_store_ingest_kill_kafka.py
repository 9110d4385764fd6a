"""``kill -9`` of a real ``dockline ingest --archive`` process on the Kafka log, then resume:
the offline store ends with exactly the rows the SQLite log gives for the same archive."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from dockline.sim import CityConfig, write_archive
from dockline.store.log.kafka import KafkaEventLog

START = datetime(2024, 5, 6, 5, tzinfo=UTC)
# small batches: many appends, each committing the run's resume point with its records
TOML = "[ingest]\nbatch_rows = 400\n"


def _ingest(data_dir: Path, archive: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "dockline", "--data-dir", str(data_dir), "ingest"]
    command += ["--archive", str(archive), "--source", "city", "--json"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def _offline(data_dir: Path) -> pa.Table:
    files = sorted(str(p) for p in (data_dir / "offline" / "station_status").rglob("*.parquet"))
    with duckdb.connect() as con:
        return con.sql(
            "select * exclude (date) from read_parquet($f, hive_partitioning = true) order by all",
            params={"f": files},
        ).to_arrow_table()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ingest_killed_and_resumed_on_kafka_equals_sqlite(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    rng = random.Random(1717)
    archive = tmp_path / "archive"
    write_archive(CityConfig(stations=40, seed=5, start=START), 2.0, archive)
    baseline = tmp_path / "sqlite"
    baseline.mkdir()
    (baseline / "dockline.toml").write_text(TOML)
    assert _ingest(baseline, archive).wait(timeout=120) == 0
    prefix = f"ingest-kill-{uuid.uuid4().hex[:8]}."
    data = tmp_path / "kafka"
    data.mkdir()
    (data / "dockline.toml").write_text(
        TOML + f'[log]\nkind = "kafka"\nbootstrap_servers = "{kafka_bootstrap}"\n'
        f'topic_prefix = "{prefix}"\n'
    )
    observer = KafkaEventLog(kafka_bootstrap, topic_prefix=prefix)
    kills = 0
    try:
        for _ in range(3):
            before = observer.producer_state("ingest:city")
            proc = _ingest(data, archive)
            deadline = time.monotonic() + 120
            while observer.producer_state("ingest:city") == before:
                assert proc.poll() is None, "the ingest finished before it could be killed"
                assert time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(rng.uniform(0.05, 0.4))
            if proc.poll() is not None:
                break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
        assert kills >= 1
        assert _ingest(data, archive).wait(timeout=120) == 0
    finally:
        observer.close()
    expected = _offline(baseline)
    got = _offline(data)
    assert got.num_rows == expected.num_rows > 10_000
    assert got.equals(expected)
    assert not (data / "log").exists()
