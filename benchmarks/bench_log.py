"""Throughput of the embedded stores on station_status-shaped data (run by hand, not by pytest).

    .venv/bin/python benchmarks/bench_log.py [--rows 200000] [--appends 20]

Prints one JSON object and writes it to ``benchmarks/results/log.json``: append and read rows/s
of SqliteEventLog, and sink rows/s of the OfflineSink (log → Parquet + manifests + 1-minute
aggregate). One pass, not pinned to a core.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from dockline.core.contracts import STATION_STATUS_SCHEMA
from dockline.core.ports import ProducerState
from dockline.core.time import FixedClock, from_micros
from dockline.store import OfflineSink, OfflineStore, SqliteEventLog

START_US = 1_714_521_600_000_000  # 2024-05-01T00:00:00Z


def station_status(rows: int, step: int, stations: int = 1000) -> pa.Table:
    """``rows`` snapshots of ``stations`` stations, one snapshot per station per minute."""
    rng = np.random.default_rng(step)
    index = np.arange(step * rows, (step + 1) * rows)
    ids = np.array([f"station-{i:05d}" for i in range(stations)])
    event = START_US + (index // stations) * 60_000_000
    bikes = rng.integers(0, 30, rows).astype(np.int32)
    return pa.table(
        {
            "station_id": ids[index % stations],
            "event_ts": pa.array(event, pa.timestamp("us", tz="UTC")),
            "ingested_at": pa.array(event + 5_000_000, pa.timestamp("us", tz="UTC")),
            "num_bikes_available": bikes,
            "num_docks_available": (40 - bikes).astype(np.int32),
            "capacity": np.full(rows, 40, np.int32),
            "is_installed": np.ones(rows, bool),
            "is_renting": np.ones(rows, bool),
            "is_returning": np.ones(rows, bool),
            "source": pa.array(["bench"] * rows),
        },
        schema=STATION_STATUS_SCHEMA,
    )


def main() -> None:
    """Run the benchmark, print the numbers as JSON and write them to ``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--appends", type=int, default=20)
    parser.add_argument("--read-batch", type=int, default=500_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "log.json")
    args = parser.parse_args()
    tables = [station_status(args.rows, i) for i in range(args.appends)]
    total = args.rows * args.appends
    with tempfile.TemporaryDirectory() as tmp:
        log = SqliteEventLog(Path(tmp) / "log" / "log.sqlite")
        log.create_topic("station_status", 4)
        append_s = []
        for i, table in enumerate(tables):
            t0 = time.perf_counter()
            log.append(
                "station_status",
                table,
                key="station_id",
                state=ProducerState("bench", str(i).encode()),
            )
            append_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        read_rows = 0
        for partition, end in log.end_offsets("station_status").items():
            offset = 0
            while offset < end:
                batch = log.read("station_status", partition, offset, args.read_batch)
                read_rows += batch.num_rows
                offset += batch.num_rows
        read_s = time.perf_counter() - t0
        assert read_rows == total
        store = OfflineStore(Path(tmp) / "offline", clock=FixedClock(from_micros(START_US)))
        sink = OfflineSink(log, store, topic="station_status", read_batch=args.read_batch)
        t0 = time.perf_counter()
        report = sink.run_once()
        sink_s = time.perf_counter() - t0
        assert report.records == total
        db_bytes = sum(f.stat().st_size for f in (Path(tmp) / "log").iterdir())
        log.close()
    per_append = np.array(append_s)
    result = {
        "benchmark": "log",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pyarrow": pa.__version__,
        },
        "results": {
            "rows_per_append": args.rows,
            "appends": args.appends,
            "append_rows_per_s": round(total / per_append.sum()),
            "append_ms_per_100k_rows_median": round(
                float(np.median(per_append)) * 1e3 * 100_000 / args.rows, 2
            ),
            "read_rows_per_s": round(total / read_s),
            "read_batch": args.read_batch,
            "sink_rows_per_s": round(total / sink_s),
            "sink_dates": len(report.dates),
            "log_bytes_per_row": round(db_bytes / total, 1),
        },
    }
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(text)
    sys.stdout.write(text.decode())


if __name__ == "__main__":
    main()
