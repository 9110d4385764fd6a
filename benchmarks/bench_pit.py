"""Benchmark point-in-time training sets: dockline vs a hand-written DuckDB ASOF floor vs Feast.

Run: ``.venv/bin/python benchmarks/bench_pit.py [--entities 2000] [--snapshots 5000]
[--rows 1000000] [--repeats 3] [--no-feast] [--no-divvy]``.

One run measures, on the same Parquet inputs (a station feed: each entity reports once a minute,
``event_ts`` = last_reported a few seconds before the poll, ``ingested_at`` = poll + 2 s):

* **dockline** — ``OfflineExecutor.features`` (five ``last`` features, TTL 1 h, one group),
  as-known-at correct (rules 1–3 of docs/features.md), rows sorted;
* **floor** — a hand-written DuckDB ``ASOF JOIN`` on event time (no as-known-at correction,
  no TTL, unsorted): the least work any DuckDB-based answer can do;
* **Feast 0.67** ``get_historical_features`` with its DuckDB offline store, in a separate venv
  (``benchmarks/.venv-feast``, created on demand), at a small size and at full size (with a
  time limit).

Each measurement runs in its own child process: wall time of the timed section (inputs already
loaded), and the child's peak RSS (``wait4``). Medians over ``--repeats``; ratios compare runs of
the same invocation. Also times the full bike-share feature set on the real Divvy data (all
stations × every 5 min of one month). Writes ``benchmarks/results/pit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FEAST_VENV = HERE / ".venv-feast"
FEAST_REQUIREMENT = "feast[duckdb]==0.67.*"
START = datetime(2024, 5, 1, tzinfo=UTC)
COLUMNS = [
    "num_bikes_available",
    "num_docks_available",
    "capacity",
    "is_renting",
    "is_returning",
]
TARGET_VS_FLOOR = 1.3
TARGET_VS_FEAST = 50.0
TARGET_RSS_MB = 2048

FEAST_CHILD = r"""
import json, sys, time, warnings
from datetime import timedelta
warnings.filterwarnings("ignore")
import pyarrow.parquet as pq
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.repo_config import RepoConfig
from feast.types import Bool, Int32

repo, events, spine = sys.argv[1:4]
config = RepoConfig(
    project="pit",
    registry=f"{repo}/registry.db",
    provider="local",
    offline_store={"type": "duckdb"},
    online_store={"type": "sqlite", "path": f"{repo}/online.db"},
    entity_key_serialization_version=3,
)
store = FeatureStore(config=config)
station = Entity(name="station", join_keys=["station_id"])
source = FileSource(path=events, timestamp_field="event_ts", created_timestamp_column="ingested_at")
types = {"is_renting": Bool, "is_returning": Bool}
view = FeatureView(
    name="availability",
    entities=[station],
    ttl=timedelta(hours=1),
    schema=[Field(name=c, dtype=types.get(c, Int32)) for c in COLUMNS],
    source=source,
)
store.apply([station, view])
entity_df = pq.read_table(spine).to_pandas().rename(columns={"as_of": "event_timestamp"})
started = time.perf_counter()
result = store.get_historical_features(
    entity_df=entity_df, features=[f"availability:{c}" for c in COLUMNS]
).to_arrow()
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rows": result.num_rows}))
"""


# -- inputs ---------------------------------------------------------------------------------


def write_inputs(workdir: Path, entities: int, snapshots: int, rows: int, seed: int) -> Path:
    """Events (entities × snapshots, one a minute) and a random spine, as Parquet."""
    out = workdir / f"e{entities}-s{snapshots}-r{rows}"
    if (out / "spine.parquet").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = int(START.timestamp()) * 1_000_000
    n = entities * snapshots
    entity = np.repeat(np.arange(entities, dtype=np.int32), snapshots)
    minute = np.tile(np.arange(snapshots, dtype=np.int64), entities)
    poll = base + minute * 60_000_000
    event_ts = poll - rng.integers(0, 30_000_000, n)  # last_reported: before the poll
    ingested = poll + 2_000_000  # fetched 2 s after the poll
    names = pa.array([f"s{i:05d}" for i in range(entities)], pa.string())
    capacity = rng.integers(10, 40, entities, dtype=np.int32)[entity]
    bikes = (rng.random(n) * capacity).astype(np.int32)
    events = pa.table(
        {
            "station_id": names.take(pa.array(entity)),
            "event_ts": pa.array(event_ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "ingested_at": pa.array(ingested, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "num_bikes_available": pa.array(bikes),
            "num_docks_available": pa.array(capacity - bikes),
            "capacity": pa.array(capacity),
            "is_renting": pa.array(rng.random(n) > 0.01),
            "is_returning": pa.array(rng.random(n) > 0.01),
        }
    )
    pq.write_table(events, out / "events.parquet", row_group_size=1_048_576)
    del events
    span = snapshots * 60_000_000
    times = base + 3_600_000_000 + rng.integers(0, max(1, span - 3_600_000_000), rows)
    spine = pa.table(
        {
            "station_id": names.take(pa.array(rng.integers(0, entities, rows))),
            "as_of": pa.array(times, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        }
    )
    pq.write_table(spine, out / "spine.parquet")
    return out


# -- children -------------------------------------------------------------------------------


def child(kind: str, data: Path, threads: int) -> dict[str, Any]:
    """Run one timed measurement in this (child) process."""
    if kind == "divvy":
        return child_divvy(data, threads)
    spine = pq.read_table(data / "spine.parquet")
    events = str(data / "events.parquet")
    if kind == "floor":
        import duckdb

        con = duckdb.connect(config={"threads": threads})
        con.register("spine", spine)
        started = time.perf_counter()
        result = con.sql(
            "SELECT s.station_id, s.as_of, e.event_ts, e.num_bikes_available,"
            " e.num_docks_available, e.capacity, e.is_renting, e.is_returning FROM spine s"
            f" ASOF LEFT JOIN read_parquet('{events}') e ON s.station_id = e.station_id"
            " AND e.event_ts <= s.as_of"
        ).to_arrow_table()
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "rows": result.num_rows}
    from dockline.features import Entity, FeatureGroup, Project, Source, compile_project, last
    from dockline.features.offline import OfflineExecutor

    station = Entity("station", key="station_id")
    status = Source("station_status", entity=station)
    group = FeatureGroup(
        "availability", source=status, ttl="1h", features=[last(c) for c in COLUMNS]
    )
    plan = compile_project(Project(name="bench", entity=station, groups=[group]))
    started = time.perf_counter()
    executor = OfflineExecutor(plan, {"station_status": events}, threads=threads)
    result = executor.features(spine)
    seconds = time.perf_counter() - started
    executor.close()
    known = result.column("num_bikes_available__last").null_count
    return {"seconds": seconds, "rows": result.num_rows, "null_last": known}


def child_divvy(data: Path, threads: int) -> dict[str, Any]:
    import pyarrow.compute as pc

    from dockline.features import compile_project, load_project
    from dockline.features.offline import OfflineExecutor, grid_spine

    month = datetime.fromisoformat(os.environ["PIT_DIVVY_MONTH"] + "-01").replace(tzinfo=UTC)
    end = (month + timedelta(days=32)).replace(day=1)
    plan = compile_project(load_project(REPO / "examples" / "bikeshare"))
    store = {t: str(data / "offline" / t) for t in ("station_status", "station_information")}
    started = time.perf_counter()
    executor = OfflineExecutor(plan, store, threads=threads)
    stations = executor.entities(month, end)
    spine = grid_spine(stations, month, end, timedelta(minutes=5), key=plan.key)
    result = executor.features(spine, labels=True)
    seconds = time.perf_counter() - started
    executor.close()
    rate = pc.mean(pc.cast(result.column("empty_next_hour"), pa.int64())).as_py()
    nulls = {n: result.column(n).null_count for n in plan.feature_names}
    return {
        "seconds": seconds,
        "rows": result.num_rows,
        "stations": len(stations),
        "features": len(plan.feature_names),
        "empty_next_hour_rate": rate,
        "max_null_fraction": max(nulls.values()) / max(1, result.num_rows),
    }


def spawn(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child; its JSON result plus wall time and peak RSS, or an error/timeout."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            return {
                "error": f"timeout after {timeout:.0f} s",
                "peak_rss_mb": usage.ru_maxrss / 1024,
            }
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        return {"error": f"exit {code}: {err.strip().splitlines()[-3:]}"}
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["process_seconds"] = round(time.perf_counter() - started, 3)
    return result


def ensure_feast() -> Path:
    """The Feast venv's python, creating the venv on first use."""
    python = FEAST_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {FEAST_VENV} with {FEAST_REQUIREMENT} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", FEAST_REQUIREMENT], check=True)
    return python


def run_feast(python: Path, data: Path, workdir: Path, timeout: float) -> dict[str, Any]:
    repo = Path(tempfile.mkdtemp(prefix="feast-", dir=workdir))
    script = repo / "feast_child.py"
    script.write_text(f"COLUMNS = {COLUMNS!r}\n" + FEAST_CHILD)
    return spawn(
        [
            str(python),
            str(script),
            str(repo),
            str(data / "events.parquet"),
            str(data / "spine.parquet"),
        ],
        timeout,
    )


def median(runs: list[dict[str, Any]], key: str = "seconds") -> float | None:
    values = [r[key] for r in runs if key in r]
    return round(statistics.median(values), 3) if values else None


def measure_size(
    args: argparse.Namespace,
    workdir: Path,
    entities: int,
    rows: int,
    feast: Path | None,
    feast_timeout: float,
) -> dict[str, Any]:
    data = write_inputs(workdir, entities, args.snapshots, rows, args.seed)
    me = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads)]
    runs: dict[str, list[dict[str, Any]]] = {"floor": [], "dockline": [], "feast": []}
    for rep in range(args.repeats):
        order = ["floor", "dockline"] if rep % 2 == 0 else ["dockline", "floor"]
        for kind in order:
            result = spawn([*me, "--child", kind, "--data", str(data)], args.timeout)
            print(f"  {entities}×{args.snapshots} / {rows:,} rows  {kind:8s} {result}", flush=True)
            runs[kind].append(result)
    if feast is not None:
        for _ in range(args.feast_repeats if feast_timeout >= args.timeout else 1):
            result = run_feast(feast, data, workdir, feast_timeout)
            print(f"  {entities}×{args.snapshots} / {rows:,} rows  feast    {result}", flush=True)
            runs["feast"].append(result)
            if "error" in result:
                break
    summary: dict[str, Any] = {
        "entities": entities,
        "snapshots": args.snapshots,
        "feature_rows": entities * args.snapshots,
        "label_rows": rows,
        "runs": runs,
    }
    for kind in runs:
        summary[f"{kind}_median_s"] = median(runs[kind])
        rss = [r["peak_rss_mb"] for r in runs[kind] if "peak_rss_mb" in r and "error" not in r]
        summary[f"{kind}_peak_rss_mb"] = max(rss) if rss else None
    d, f, fe = summary["dockline_median_s"], summary["floor_median_s"], summary["feast_median_s"]
    summary["dockline_vs_floor"] = round(d / f, 2) if d and f else None
    summary["feast_vs_dockline"] = round(fe / d, 1) if d and fe else None
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--snapshots", type=int, default=5000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small-entities", type=int, default=200)
    parser.add_argument("--small-rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feast-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--feast-timeout", type=float, default=900.0)
    parser.add_argument("--no-feast", action="store_true")
    parser.add_argument("--no-divvy", action="store_true")
    parser.add_argument("--divvy-data", default="/tmp/divvy-data")
    parser.add_argument("--divvy-month", default="2014-04")
    parser.add_argument("--workdir", default=None, help="keep generated inputs here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.data), args.threads)))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dockline-bench-pit-"))
    workdir.mkdir(parents=True, exist_ok=True)
    feast = None if args.no_feast else ensure_feast()
    load_before = os.getloadavg()
    sizes = {
        "small": measure_size(
            args, workdir, args.small_entities, args.small_rows, feast, args.timeout
        ),
        "full": measure_size(args, workdir, args.entities, args.rows, feast, args.feast_timeout),
    }
    divvy: dict[str, Any] | None = None
    if not args.no_divvy and Path(args.divvy_data, "offline").is_dir():
        env = {**os.environ, "PIT_DIVVY_MONTH": args.divvy_month}
        me = [sys.executable, str(Path(__file__).resolve()), "--threads", str(args.threads)]
        divvy = spawn([*me, "--child", "divvy", "--data", args.divvy_data], 1800, env)
        divvy["month"] = args.divvy_month
        print(f"  divvy bikeshare {args.divvy_month}: {divvy}", flush=True)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)

    import duckdb

    report = {
        "benchmark": "pit",
        "command": "python benchmarks/bench_pit.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "duckdb": duckdb.__version__,
            "pyarrow": pa.__version__,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "targets": {
            "dockline_vs_floor_max": TARGET_VS_FLOOR,
            "feast_vs_dockline_min": TARGET_VS_FEAST,
            "peak_rss_mb_max": TARGET_RSS_MB,
        },
        "sizes": sizes,
        "divvy_bikeshare": divvy,
    }
    out = HERE / "results" / "pit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    for name, s in sizes.items():
        print(
            f"{name:5s} {s['feature_rows']:>11,} feature rows × {s['label_rows']:>9,} label rows:"
            f" dockline {s['dockline_median_s']} s ({s['dockline_peak_rss_mb']} MB),"
            f" floor {s['floor_median_s']} s, feast {s['feast_median_s']} s"
            f" → dockline/floor {s['dockline_vs_floor']}×, feast/dockline {s['feast_vs_dockline']}×"
        )
    if divvy:
        print(f"divvy {divvy}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
