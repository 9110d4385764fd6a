"""Test data and the child processes of the kill -9 tests (``python store_helpers.py ...``).

writer LOG TOTAL BATCH      append rows 0..TOTAL-1, resuming from the producer state
sink LOG ROOT READ_BATCH    run the offline sink once over topic station_status

LOG is a SQLite log's path, or ``kafka://HOST:PORT/PREFIX`` for a Kafka log.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from dockline.core.contracts import STATION_STATUS_SCHEMA, DatasetMetadata
from dockline.core.ports import EventLog, ProducerState
from dockline.core.time import FixedClock
from dockline.store import OfflineSink, OfflineStore, SqliteEventLog

START = datetime(2024, 5, 1, tzinfo=UTC)
START_US = 1_714_521_600_000_000
TOPIC = "station_status"
PRODUCER = "writer"


def station_status(start: int, count: int, *, stations: int = 50, step_s: int = 300) -> pa.Table:
    """Rows ``start..start+count-1`` of a synthetic feed: one snapshot per station per step.

    Row ``i`` is station ``i % stations`` at ``START + (i // stations) * step_s`` seconds plus a
    per-station jitter, so (station_id, event_ts) is unique and the rows span several UTC dates.
    """
    index = np.arange(start, start + count, dtype=np.int64)
    station = index % stations
    event = START_US + (index // stations) * step_s * 1_000_000 + station * 1_000_000
    bikes = ((index * 7919) % 23).astype(np.int32)
    capacity = np.full(count, 30, np.int32)
    return pa.table(
        {
            "station_id": pa.array([f"s{s:03d}" for s in station.tolist()], pa.string()),
            "event_ts": pa.array(event, pa.timestamp("us", tz="UTC")),
            "ingested_at": pa.array(event + 4_000_000, pa.timestamp("us", tz="UTC")),
            "num_bikes_available": bikes,
            "num_docks_available": capacity - bikes,
            "capacity": capacity,
            "is_installed": np.ones(count, bool),
            "is_renting": (index % 11) != 0,
            "is_returning": np.ones(count, bool),
            "source": pa.array(["test"] * count),
        },
        schema=STATION_STATUS_SCHEMA,
    )


def check_manifests(store: OfflineStore, source: str) -> int:
    """Assert every date's manifest describes exactly its files; return the total rows."""
    total = 0
    for day in store.dates(source):
        manifest = store.manifest(source, day)
        files = store.files(source, day)
        assert [f.path for f in manifest.files] == [f.name for f in files], day
        for digest, path in zip(manifest.files, files, strict=True):
            assert digest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest.bytes == path.stat().st_size
        expected_hash = hashlib.sha256(
            "\n".join(sorted(f.sha256 for f in manifest.files)).encode()
        ).hexdigest()
        assert manifest.content_hash == expected_hash
        assert manifest.dataset_version == expected_hash[:16]
        assert manifest.partition == f"date={day.isoformat()}"
        total += manifest.row_count
    return total


def manifest_of(path: Path) -> DatasetMetadata:
    """Read a manifest file."""
    return DatasetMetadata.read(path)


def open_log(spec: str) -> EventLog:
    """A SQLite log at a path, or a Kafka log for ``kafka://HOST:PORT/PREFIX``."""
    if spec.startswith("kafka://"):
        from dockline.store.log.kafka import KafkaEventLog

        bootstrap, prefix = spec.removeprefix("kafka://").split("/", 1)
        return KafkaEventLog(bootstrap, topic_prefix=prefix)
    return SqliteEventLog(Path(spec))


def _writer(log_path: str, total: int, batch: int) -> None:
    log = open_log(log_path)
    state = log.producer_state(PRODUCER)
    done = int(state) if state is not None else 0
    while done < total:
        size = min(batch, total - done)
        log.append(
            TOPIC,
            station_status(done, size),
            key="station_id",
            state=ProducerState(PRODUCER, str(done + size).encode()),
        )
        done += size
    log.close()


def _sink(log_path: str, root: Path, read_batch: int) -> None:
    log = open_log(log_path)
    store = OfflineStore(root, clock=FixedClock(START))
    OfflineSink(log, store, topic=TOPIC, read_batch=read_batch).run_once()
    log.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "writer":
        _writer(args[0], int(args[1]), int(args[2]))
    elif command == "sink":
        _sink(args[0], Path(args[1]), int(args[2]))
    else:
        raise SystemExit(f"unknown command {command!r}")
