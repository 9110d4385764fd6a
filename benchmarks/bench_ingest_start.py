"""Benchmark: how long a feed takes to start beside a large import in the same log.

Run: ``.venv/bin/python benchmarks/bench_ingest_start.py [--rows 20000000]``. Builds a log whose
``station_status`` topic holds ``--rows`` records of an archive source (300 stations, appended
in 300k-row batches, like an import), after a feed source appended a few documents and stopped;
then times (a) opening a new source, (b) reopening the feed (restoring its snapshot and the rows
it appended since), (c) a bare scan of the topic. ``--compare-src DIR`` also times (a) with
another checkout's ``src`` (e.g. the code before issue 12, which re-read the whole topic) in a
subprocess on the same log. Issue 12's target:
a feed starts in under 5 s after the full Divvy import (71.5M rows). Writes
``benchmarks/results/ingest_start.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from dockline.core.contracts import STATION_STATUS_SCHEMA, TOPIC_STATION_STATUS
from dockline.pipeline.ingest import IngestRun
from dockline.pipeline.platform import Platform

T0 = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
T0_S = int(T0.timestamp())
STATIONS = 300
CHUNK = 300_000


def _archive_batch(start_minute: int) -> pa.Table:
    idx = np.arange(CHUNK)
    minutes = start_minute + idx // STATIONS
    event = ((T0_S + 60 * minutes) * 1_000_000).astype("datetime64[us]")
    ts_type = STATION_STATUS_SCHEMA.field("event_ts").type
    return pa.Table.from_arrays(
        [
            pa.array([f"s{i}" for i in range(STATIONS)] * (CHUNK // STATIONS)),
            pa.array(event, ts_type),
            pa.array(event, ts_type),
            pa.array((idx % 11).astype(np.int32)),
            pa.array((idx % 13).astype(np.int32)),
            pa.array(np.full(CHUNK, 20, np.int32)),
            pa.array(np.ones(CHUNK, bool)),
            pa.array(np.ones(CHUNK, bool)),
            pa.array(np.ones(CHUNK, bool)),
            pa.array(["archive:big"] * CHUNK),
        ],
        schema=STATION_STATUS_SCHEMA,
    )


def _feed_doc(minute: int) -> bytes:
    stations = [
        {
            "station_id": f"f{i}",
            "num_bikes_available": 2,
            "num_docks_available": 5,
            "is_installed": True,
            "is_renting": True,
            "is_returning": True,
            "last_reported": T0_S + 60 * minute,
        }
        for i in range(1000)
    ]
    return orjson.dumps(
        {"last_updated": T0_S + 60 * minute, "ttl": 60, "data": {"stations": stations}}
    )


def _open_seconds(platform: Platform, source: str) -> float:
    started = time.perf_counter()
    run = IngestRun(platform, source, platform.open_log(), platform.open_deadletters())
    elapsed = time.perf_counter() - started
    run.close()
    return elapsed


_COMPARE = """
import sys, time
from pathlib import Path
from dockline.pipeline.ingest import IngestRun
from dockline.pipeline.platform import Platform
platform = Platform.open(Path(sys.argv[1]))
started = time.perf_counter()
run = IngestRun(platform, "gbfs:other", platform.open_log(), platform.open_deadletters())
print(time.perf_counter() - started)
run.close()
"""


def _compare(src: Path, data_dir: Path) -> float:
    """Seconds another checkout's code takes to open a new source on this log."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", _COMPARE, str(data_dir)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return round(float(out.strip().splitlines()[-1]), 3)


def main() -> None:
    """Build the log, time the starts, write the results file."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "ingest_start.json"
    )
    parser.add_argument("--compare-src", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dockline-bench-start-") as tmp:
        platform = Platform.open(Path(tmp))
        feed = IngestRun(platform, "gbfs:feed", platform.open_log(), platform.open_deadletters())
        for minute in range(40):  # past one snapshot: the restart has rows to re-observe
            feed.commit_status(
                feed.normalizer.normalize_document(
                    _feed_doc(minute),
                    ingested_at=T0 + timedelta(minutes=minute, seconds=5),
                    batch_id=str(minute),
                )
            )
        feed.close()
        log = platform.open_log()
        built = time.perf_counter()
        for number in range(args.rows // CHUNK):
            log.append(TOPIC_STATION_STATUS, _archive_batch(number * 1000), key="station_id")
        built = time.perf_counter() - built
        scan = time.perf_counter()
        for partition, end in log.end_offsets(TOPIC_STATION_STATUS).items():
            offset = 0
            while offset < end:
                offset += log.read(TOPIC_STATION_STATUS, partition, offset, 500_000).num_rows
        scan = time.perf_counter() - scan
        rows = sum(log.end_offsets(TOPIC_STATION_STATUS).values())
        log.close()
        result = {
            "benchmark": "ingest_start",
            "command": shlex.join(["python", *sys.argv]),
            "topic_rows": rows,
            "build_seconds": round(built, 2),
            "new_source_start_seconds": round(_open_seconds(platform, "gbfs:new"), 3),
            "feed_restart_seconds": round(_open_seconds(platform, "gbfs:feed"), 3),
            "full_topic_scan_seconds": round(scan, 2),
            "target_seconds": 5.0,
        }
        if args.compare_src is not None:
            result["compare_src"] = str(args.compare_src)
            result["compare_new_source_start_seconds"] = _compare(args.compare_src, Path(tmp))
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
