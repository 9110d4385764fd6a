"""Point-in-time training set on Spark vs DuckDB, same plan, same data (run by hand, not by pytest).

    .venv/bin/python benchmarks/bench_pit_spark.py [--stations 40] [--days 8] [--hours 24]
        [--every 5m] [--repeats 3]

A simulated city (``--stations`` stations, ``--days`` days) is ingested and sunk into an offline
store (Parquet, as ``dockline ingest`` leaves it); both engines then compute the full bike-share
plan (every feature kind and the three labels) for every station every ``--every`` over the last
``--hours`` of it. Each timed run opens a fresh executor on the store and returns the Arrow table
(``features(spine, labels=True)``); runs alternate engines, median of ``--repeats``. Spark's
session start and its first (cold: JIT and code generation) run are reported apart. The two
tables are compared (largest relative difference of any value; nulls must agree).

Writes ``benchmarks/results/pit_spark.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dockline.core.time import FixedClock
from dockline.features import compile_project, load_project
from dockline.features.offline import OfflineExecutor, entities_in, grid_spine
from dockline.features.spark import SparkExecutor, spark_session
from dockline.pipeline.ingest import ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import CityConfig, write_archive

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent / "examples" / "bikeshare"
START = datetime(2024, 5, 6, 5, tzinfo=UTC)


def max_relative_difference(a: pa.Table, b: pa.Table) -> float:
    """Largest relative difference of two same-shaped tables' float columns (nulls must agree)."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    worst = 0.0
    for name in a.column_names:
        if not pa.types.is_floating(a.schema.field(name).type):
            assert a.column(name).equals(b.column(name)), name
            continue
        x = np.asarray(a.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        y = np.asarray(b.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        ok = ~np.isnan(x)
        scale = np.maximum(np.abs(y[ok]), 1e-300)
        if ok.any():
            worst = max(worst, float(np.max(np.abs(x[ok] - y[ok]) / scale)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stations", type=int, default=40)
    parser.add_argument("--days", type=float, default=8.0)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--every", type=int, default=5, help="spine step in minutes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pit_spark.json")
    args = parser.parse_args()

    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="bench-pit-spark-"))
    write_archive(CityConfig(stations=args.stations, seed=7, start=START), args.days, root / "a")
    city = Platform.open(root / "data", clock=FixedClock(datetime(2024, 6, 1, tzinfo=UTC)))
    ingest_archive(city, root / "a")
    sink_offline(city)
    store = {t: str(city.data.offline(t)) for t in ("station_status", "station_information")}
    events = sum(
        1 for _ in Path(store["station_status"]).rglob("*.parquet")
    )  # files, for the record
    plan = compile_project(load_project(PROJECT))
    end = START + timedelta(days=args.days)
    begin = end - timedelta(hours=args.hours)
    stations = entities_in(plan, store, START, end)
    spine = grid_spine(stations, begin, end, timedelta(minutes=args.every))

    def run_duckdb() -> tuple[float, pa.Table]:
        began = time.perf_counter()
        with OfflineExecutor(plan, store, threads=2) as ex:
            table = ex.features(spine, labels=True)
        return time.perf_counter() - began, table

    def run_spark() -> tuple[float, pa.Table]:
        began = time.perf_counter()
        with SparkExecutor(plan, store) as ex:
            table = ex.features(spine, labels=True)
        return time.perf_counter() - began, table

    began = time.perf_counter()
    session = spark_session()
    session_start = time.perf_counter() - began
    spark_first, first = run_spark()
    duck_s: list[float] = []
    spark_s: list[float] = []
    duck_table = spark_table = first
    for _ in range(args.repeats):
        seconds, duck_table = run_duckdb()
        duck_s.append(seconds)
        seconds, spark_table = run_spark()
        spark_s.append(seconds)
    rows_of_events = session.read.parquet(store["station_status"]).count()
    result: dict[str, Any] = {
        "benchmark": "pit_spark",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_pit_spark.py "
        + f"--stations {args.stations} --days {args.days:g} --hours {args.hours:g}"
        + f" --every {args.every} --repeats {args.repeats}",
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "spark": session.version,
            "spark_master": session.sparkContext.master,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "data": {
            "stations": len(stations),
            "days": args.days,
            "status_events": rows_of_events,
            "status_files": events,
            "spine_rows": spine.num_rows,
            "features": len(plan.feature_names),
            "labels": len(plan.labels),
        },
        "duckdb_s": [round(x, 3) for x in duck_s],
        "spark_s": [round(x, 3) for x in spark_s],
        "duckdb_median_s": round(statistics.median(duck_s), 3),
        "spark_median_s": round(statistics.median(spark_s), 3),
        "spark_session_start_s": round(session_start, 3),
        "spark_first_run_s": round(spark_first, 3),
        "spark_over_duckdb": round(statistics.median(spark_s) / statistics.median(duck_s), 2),
        "max_relative_difference": max_relative_difference(spark_table, duck_table),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
