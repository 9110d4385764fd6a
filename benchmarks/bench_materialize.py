"""Materialization throughput and event → online-store freshness (run by hand, not by pytest).

    .venv/bin/python benchmarks/bench_materialize.py [--stations 1000] [--backlog 60]
        [--live 20] [--interval 0.5] [--poll-interval 0.2 0.05] [--repeats 3]

The plan is the bike-share project's streaming part (``examples/bikeshare`` without its batch
features — profiles and neighbourhoods come from scheduled offline runs, not from the log).
Events are GBFS-like polls of ``--stations`` stations: every event of a poll has the poll's
``ingested_at``, ``event_ts`` (last_reported) up to 60 s earlier.

* **throughput** — ``--backlog`` one-minute polls are appended to a fresh ``SqliteEventLog``;
  one ``Materializer.run_once`` (SQLite online store, state snapshot on) consumes them: events/s
  and vectors/s, median over ``--repeats`` fresh runs.
* **freshness** — a live loop in separate processes, as ``dockline ingest --follow`` and
  ``dockline features materialize --follow`` run: this process appends a poll stamped
  ``ingested_at = now`` every ``--interval`` s; a child process runs ``Materializer.follow``
  (after consuming the same backlog) with the given ``poll_interval``; this process watches the
  online store (``read_many`` of 20 sampled stations every millisecond) and records, per poll,
  the time its vectors became visible minus its ``ingested_at``. Target: p99 < 250 ms.

Writes ``benchmarks/results/materialize.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dockline.core.contracts import STATION_STATUS_SCHEMA, TS_TYPE
from dockline.core.time import SystemClock, to_micros
from dockline.features import Plan, compile_project, load_project
from dockline.features.materialize import FEATURES_GROUP, Materializer
from dockline.store import SqliteEventLog, SqliteOnlineStore

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent / "examples" / "bikeshare"
TOPIC = "station_status"
MINUTE_US = 60_000_000
TARGET_P99_MS = 250.0
WATCHED = 20


def streaming_plan() -> Plan:
    """The bike-share plan without batch features (and the derived features that use them)."""
    project = load_project(PROJECT)
    blocked = {p.name for p in project.profiles} | {n.name for n in project.neighbourhoods}
    derived = []
    for item in project.derived:
        if item.expr.columns() & blocked:
            blocked.add(item.name)
        else:
            derived.append(item)
    return compile_project(
        dataclasses.replace(project, profiles=[], neighbourhoods=[], derived=derived)
    )


class Feed:
    """Seeded GBFS-like polls of ``stations`` stations (a random walk of bikes)."""

    def __init__(self, stations: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.ids = pa.array([f"s{i:05d}" for i in range(stations)], pa.string())
        self.capacity = self.rng.integers(10, 40, stations)
        self.bikes = (self.rng.random(stations) * self.capacity).astype(np.int64)

    def poll(self, ingested_us: int) -> pa.Table:
        """One poll: every station, ``ingested_at`` = ``ingested_us``."""
        n = len(self.ids)
        step = self.rng.integers(-2, 3, n)
        self.bikes = np.clip(self.bikes + step, 0, self.capacity)
        event_ts = ingested_us - self.rng.integers(0, 60_000_000, n)
        return pa.table(
            {
                "station_id": self.ids,
                "event_ts": pa.array(event_ts, pa.int64()).cast(TS_TYPE),
                "ingested_at": pa.array(np.full(n, ingested_us), pa.int64()).cast(TS_TYPE),
                "num_bikes_available": pa.array(self.bikes, pa.int32()),
                "num_docks_available": pa.array(self.capacity - self.bikes, pa.int32()),
                "capacity": pa.array(self.capacity, pa.int32()),
                "is_installed": pa.array(np.ones(n, dtype=bool)),
                "is_renting": pa.array(self.rng.random(n) > 0.02),
                "is_returning": pa.array(self.rng.random(n) > 0.02),
                "source": pa.array(["bench"] * n, pa.string()),
            },
            schema=STATION_STATUS_SCHEMA,
        )


def append_backlog(log: SqliteEventLog, feed: Feed, polls: int, now_us: int) -> int:
    """``polls`` one-minute polls ending a minute before ``now_us``; events appended."""
    events = 0
    for k in range(polls):
        table = feed.poll(now_us - (polls - k) * MINUTE_US)
        log.append(TOPIC, table, key="station_id")
        events += table.num_rows
    return events


def throughput_run(stations: int, backlog: int, seed: int) -> dict[str, Any]:
    """One fresh backlog materialization: events/s, vectors/s."""
    with tempfile.TemporaryDirectory(prefix="dockline-bench-mat-") as tmp:
        root = Path(tmp)
        log = SqliteEventLog(root / "log.sqlite")
        store = SqliteOnlineStore(root / "online.sqlite")
        clock = SystemClock()
        try:
            append_backlog(log, Feed(stations, seed), backlog, to_micros(clock.now()))
            materializer = Materializer(
                streaming_plan(), log, store, clock=clock, state_path=root / "state.msgpack"
            )
            report = materializer.run_once()
        finally:
            store.close()
            log.close()
    return {
        "events": report.events,
        "vectors": report.vectors,
        "micro_batches": report.micro_batches,
        "seconds": round(report.seconds, 3),
        "events_per_s": round(report.events / report.seconds),
        "vectors_per_s": round(report.vectors / report.seconds),
    }


def follower(root: Path, poll_interval: float) -> None:
    """Child: materialize the backlog, say ready, then follow the log until told to stop."""
    log = SqliteEventLog(root / "log.sqlite")
    store = SqliteOnlineStore(root / "online.sqlite")
    stop_file = root / "stop"
    try:
        materializer = Materializer(
            streaming_plan(), log, store, clock=SystemClock(), state_path=root / "state.msgpack"
        )
        materializer.run_once()
        (root / "ready").touch()
        report = materializer.follow(stop=stop_file.exists, poll_interval=poll_interval)
    finally:
        store.close()
        log.close()
    sys.stdout.write(
        json.dumps(
            {
                "events": report.events,
                "micro_batches": report.micro_batches,
                "written_minus_T_p50_ms": (report.freshness_p50_us or 0) / 1000,
                "written_minus_T_p99_ms": (report.freshness_p99_us or 0) / 1000,
            }
        )
        + "\n"
    )


def freshness_run(
    stations: int, backlog: int, live: int, interval: float, poll_interval: float, seed: int
) -> dict[str, Any]:
    """One live loop: per poll, visible-in-store time minus ingested_at (ms)."""
    with tempfile.TemporaryDirectory(prefix="dockline-bench-fresh-") as tmp:
        root = Path(tmp)
        log = SqliteEventLog(root / "log.sqlite")
        feed = Feed(stations, seed)
        append_backlog(log, feed, backlog, time.time_ns() // 1000)
        me = [sys.executable, str(Path(__file__).resolve())]
        child = subprocess.Popen(
            [*me, "--child", str(root), "--poll-interval", str(poll_interval)],
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 300
        while not (root / "ready").exists():
            if child.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the materializer child did not start")
            time.sleep(0.01)
        store = SqliteOnlineStore(root / "online.sqlite")
        rng = np.random.default_rng(seed)
        ids = feed.ids.to_pylist()
        lags_ms: list[float] = []
        missed = 0
        try:
            for _ in range(live):
                next_poll = time.monotonic() + interval
                ingested_us = time.time_ns() // 1000
                log.append(TOPIC, feed.poll(ingested_us), key="station_id")
                watched = [ids[i] for i in rng.choice(len(ids), WATCHED, replace=False)]
                seen = None
                while time.monotonic() < next_poll + 5 * interval:
                    vectors = store.read_many(watched, [FEATURES_GROUP])
                    if all(
                        (v := row[FEATURES_GROUP]) is not None and v.as_of_us >= ingested_us
                        for row in vectors
                    ):
                        seen = time.time_ns() // 1000
                        break
                    time.sleep(0.001)
                if seen is None:
                    missed += 1
                else:
                    lags_ms.append((seen - ingested_us) / 1000)
                time.sleep(max(0.0, next_poll - time.monotonic()))
        finally:
            (root / "stop").touch()
            out, _ = child.communicate(timeout=120)
            store.close()
            log.close()
    child_report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    samples = np.array(lags_ms) if lags_ms else np.array([np.nan])
    return {
        "poll_interval_s": poll_interval,
        "polls": live,
        "missed": missed,
        "p50_ms": round(float(np.percentile(samples, 50)), 1),
        "p99_ms": round(float(np.percentile(samples, 99)), 1),
        "max_ms": round(float(np.max(samples)), 1),
        "samples_ms": [round(x, 1) for x in lags_ms],
        "materializer": child_report,
    }


def main() -> None:
    """Run both measurements, print a summary, write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=60)
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--poll-interval", type=float, nargs="+", default=[0.2, 0.05])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "materialize.json", help="JSON result"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        follower(Path(args.child), args.poll_interval[0])
        return

    load_before = os.getloadavg()
    throughput = []
    for rep in range(args.repeats):
        run = throughput_run(args.stations, args.backlog, args.seed + rep)
        print(f"throughput {rep}: {run}", flush=True)
        throughput.append(run)
    freshness: dict[str, list[dict[str, Any]]] = {}
    for poll_interval in args.poll_interval:
        runs = freshness[str(poll_interval)] = []
        for rep in range(args.repeats):
            run = freshness_run(
                args.stations,
                args.backlog,
                args.live,
                args.interval,
                poll_interval,
                args.seed + rep,
            )
            brief = {k: v for k, v in run.items() if k != "samples_ms"}
            print(f"freshness poll_interval={poll_interval} {rep}: {brief}", flush=True)
            runs.append(run)
    summary = {
        "events_per_s_median": statistics.median(r["events_per_s"] for r in throughput),
        "vectors_per_s_median": statistics.median(r["vectors_per_s"] for r in throughput),
        "freshness": {
            interval: {
                "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
                "p99_ms_all_runs": round(
                    float(np.percentile([x for r in runs for x in r["samples_ms"]], 99)), 1
                ),
                "target_p99_ms": TARGET_P99_MS,
            }
            for interval, runs in freshness.items()
        },
    }
    import duckdb

    result = {
        "benchmark": "materialize",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pyarrow": pa.__version__,
            "duckdb": duckdb.__version__,
        },
        "setup": {
            "stations": args.stations,
            "backlog_polls": args.backlog,
            "live_polls": args.live,
            "live_interval_s": args.interval,
            "watched_stations": WATCHED,
            "plan": "examples/bikeshare without batch features",
            "online_store": "SqliteOnlineStore",
        },
        "summary": summary,
        "throughput": throughput,
        "freshness": freshness,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
