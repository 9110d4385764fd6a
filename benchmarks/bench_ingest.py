"""Benchmark ingest: GBFS documents and a Divvy archive → validation → dead letters + event log.

Run: ``.venv/bin/python benchmarks/bench_ingest.py [--stations 1000] [--publications 100]
[--repeats 5] [--profile]``. Pinned to one core; every rate is the median of ``--repeats`` runs
and every ratio compares with a peer measured in the same run: ``orjson.loads`` of the same
payloads (the floor) for documents, reading the same file for the archive. Writes
``benchmarks/results/ingest.json``. Target: >= 200,000 station records/s per core (full path).
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import platform
import pstats
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from dockline.core.config import IngestConfig
from dockline.core.contracts import IngestSummary
from dockline.ingest import DIVVY_MAPPING, StationStatusNormalizer, iter_table_archive
from dockline.pipeline.ingest import IngestRun
from dockline.pipeline.platform import Platform
from dockline.sim import City, CityConfig, FaultConfig, FaultInjector, dumps, render_station_status

TARGET = 200_000
FETCH_DELAY = timedelta(seconds=2)  # ingested_at = publication time + a realistic fetch delay
DIVVY_MONTH = Path("/work/shared/data/divvy/station_status/2013-10.parquet")


def pin_one_core() -> int | None:
    """Pin to one core when the OS allows it (Linux); returns the core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


@dataclass(frozen=True)
class Feed:
    """One payload variant: ``(payload, ingested_at, batch_id)`` per publication, in order."""

    name: str
    docs: list[tuple[bytes, datetime, str]]
    records: int

    @classmethod
    def of(cls, name: str, docs: list[tuple[bytes, datetime, str]]) -> Feed:
        """The feed of ``docs``, counting their station records."""
        return cls(name, docs, sum(len(orjson.loads(p)["data"]["stations"]) for p, _, _ in docs))


def build_feeds(stations: int, publications: int, fault_rate: float) -> list[Feed]:
    """Clean and faulted v2.3 / v3.0 feeds of consecutive publications, as the server renders."""
    feeds = []
    for label, faults in (("", FaultConfig()), ("+faults", FaultConfig.all(fault_rate))):
        city = City(CityConfig(stations=stations, seed=0, faults=faults))
        injector = FaultInjector(faults, seed=0, n_stations=stations)
        lag = math.ceil(faults.out_of_order_lag / city.config.step)
        city.run(lag)  # history, so out-of-order faults can replay old counts
        docs: dict[str, list[tuple[bytes, datetime, str]]] = {"2.3": [], "3.0": []}
        for _ in range(publications):
            city.step()
            status = city.status()
            past = city.past_counts(lag)
            plan = injector.plan(
                city.time_s,
                status.last_reported,
                old_bikes=past[0] if past else None,
                old_docks=past[1] if past else None,
            )
            batch_id = f"station_status@{status.time.isoformat()}"
            for version in ("2.3", "3.0"):
                doc = render_station_status(status, city.station_ids, version, ttl=60, plan=plan)
                docs[version].append((dumps(doc), status.time + FETCH_DELAY, batch_id))
            injector.commit(plan)
        feeds += [Feed.of(f"v{version}{label}", items) for version, items in docs.items()]
    return feeds


def parse_floor(feed: Feed) -> float:
    """``orjson.loads`` of every payload: station records/s."""
    t0 = time.perf_counter()
    records = 0
    for payload, _, _ in feed.docs:
        records += len(orjson.loads(payload)["data"]["stations"])
    elapsed = time.perf_counter() - t0
    assert records == feed.records
    return records / elapsed


def normalize_only(feed: Feed) -> tuple[float, int]:
    """A fresh normalizer over the feed: (station records/s, dead letters)."""
    normalizer = StationStatusNormalizer("bench", IngestConfig())
    rejected = received = 0
    t0 = time.perf_counter()
    for payload, ingested_at, batch_id in feed.docs:
        batch = normalizer.normalize_document(payload, ingested_at=ingested_at, batch_id=batch_id)
        rejected += len(batch.dead_letters)
        received += batch.received
    elapsed = time.perf_counter() - t0
    assert received == feed.records
    return received / elapsed, rejected


def open_run(tmp: str, source: str) -> IngestRun:
    """The production ingest run (SQLite log + dead-letter store) in a fresh data dir."""
    plat = Platform.open(tmp)
    return IngestRun(plat, source, plat.open_log(), plat.open_deadletters())


def full_path(feed: Feed, profile: cProfile.Profile | None = None) -> tuple[float, IngestSummary]:
    """Normalize, store dead letters, append to the log with producer state: (records/s, summary).

    Opening and closing the stores is outside the timed loop.
    """
    with tempfile.TemporaryDirectory(prefix="dockline-bench-") as tmp:
        run = open_run(tmp, f"bench:{feed.name}")
        try:
            if profile is not None:
                profile.enable()
            t0 = time.perf_counter()
            for payload, ingested_at, batch_id in feed.docs:
                run.commit_status(
                    run.normalizer.normalize_document(
                        payload, ingested_at=ingested_at, batch_id=batch_id
                    )
                )
            elapsed = time.perf_counter() - t0
            if profile is not None:
                profile.disable()
        finally:
            run.close()
    summary = run.summary
    summary.check_accounting()
    assert summary.received == feed.records
    return summary.received / elapsed, summary


def archive_batches(path: Path, batch_rows: int) -> Iterator[tuple[str, pa.Table]]:
    """The archive as the production import reads it (Divvy columns mapped)."""
    return iter_table_archive(path, DIVVY_MAPPING, batch_rows=batch_rows)


def archive_read(path: Path, batch_rows: int) -> tuple[float, int]:
    """Reading the archive only (the peer): (rows/s, rows)."""
    t0 = time.perf_counter()
    rows = sum(table.num_rows for _, table in archive_batches(path, batch_rows))
    return rows / (time.perf_counter() - t0), rows


def archive_normalize(path: Path, batch_rows: int) -> tuple[float, int]:
    """Read + ``normalize_table`` with a fresh normalizer: (rows/s, dead letters)."""
    normalizer = StationStatusNormalizer("bench", IngestConfig())
    rows = rejected = 0
    t0 = time.perf_counter()
    for batch_id, table in archive_batches(path, batch_rows):
        batch = normalizer.normalize_table(table, batch_id=batch_id)
        rows += batch.received
        rejected += len(batch.dead_letters)
    return rows / (time.perf_counter() - t0), rejected


def archive_full(path: Path, batch_rows: int) -> tuple[float, IngestSummary]:
    """Read + normalize + dead letters + log append with producer state: (rows/s, summary)."""
    with tempfile.TemporaryDirectory(prefix="dockline-bench-") as tmp:
        run = open_run(tmp, f"bench:{path.name}")
        try:
            t0 = time.perf_counter()
            for batch_id, table in archive_batches(path, batch_rows):
                run.commit_status(run.normalizer.normalize_table(table, batch_id=batch_id))
            elapsed = time.perf_counter() - t0
        finally:
            run.close()
    run.summary.check_accounting()
    return run.summary.received / elapsed, run.summary


def stat(runs: list[float], peer: list[float] | None = None) -> dict[str, Any]:
    """Median and runs; with ``peer``, the ratio of medians (same run, same data)."""
    median = statistics.median(runs)
    out: dict[str, Any] = {"median_per_s": round(median), "runs": [round(r) for r in runs]}
    if peer is not None:
        out["ratio_to_peer"] = round(median / statistics.median(peer), 3)
    return out


def bench_feeds(feeds: list[Feed], repeats: int) -> dict[str, dict[str, Any]]:
    """Floor, normalize and full path per feed; stages interleaved so load drift hits all."""
    runs: dict[str, dict[str, list[float]]] = {
        f.name: {"floor": [], "normalize": [], "full": []} for f in feeds
    }
    outcome: dict[str, tuple[int, IngestSummary]] = {}
    for _ in range(repeats):
        for feed in feeds:
            runs[feed.name]["floor"].append(parse_floor(feed))
            rate, rejected = normalize_only(feed)
            runs[feed.name]["normalize"].append(rate)
            rate, summary = full_path(feed)
            runs[feed.name]["full"].append(rate)
            outcome[feed.name] = (rejected, summary)
    results = {}
    for feed in feeds:
        r = runs[feed.name]
        rejected, summary = outcome[feed.name]
        assert rejected == summary.rejected  # the two paths must agree on what they reject
        full = stat(r["full"], r["floor"])
        full["meets_target"] = full["median_per_s"] >= TARGET
        results[feed.name] = {
            "documents": len(feed.docs),
            "records": feed.records,
            "accepted": summary.accepted,
            "dead_letters": dict(sorted(summary.dead_letters.items())),
            "orjson_floor": stat(r["floor"]),
            "normalize": stat(r["normalize"], r["floor"]),
            "full": full,
        }
    return results


def bench_archive(path: Path, batch_rows: int, repeats: int) -> dict[str, Any]:
    """Read, read + normalize, read + full path over one archive file."""
    read: list[float] = []
    norm: list[float] = []
    full: list[float] = []
    rows = rejected = 0
    summary = IngestSummary(source="")
    for _ in range(repeats):
        rate, rows = archive_read(path, batch_rows)
        read.append(rate)
        rate, rejected = archive_normalize(path, batch_rows)
        norm.append(rate)
        rate, summary = archive_full(path, batch_rows)
        full.append(rate)
    assert summary.received == rows and summary.rejected == rejected
    return {
        "file": str(path),
        "rows": rows,
        "batch_rows": batch_rows,
        "accepted": summary.accepted,
        "dead_letters": dict(sorted(summary.dead_letters.items())),
        "read": stat(read),
        "normalize": stat(norm, read),
        "full": stat(full, read),
    }


def print_profile(feeds: list[Feed], top: int) -> None:
    """cProfile of one full-path pass per feed: the ``top`` functions by own time."""
    for feed in feeds:
        profile = cProfile.Profile()
        full_path(feed, profile)
        print(f"\n--- profile: full path, {feed.name} (own time, top {top}) ---")
        pstats.Stats(profile).sort_stats("tottime").print_stats(top)


def machine(core: int | None) -> dict[str, Any]:
    """What the numbers were measured on."""
    model = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "pinned_core": core,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
        "orjson": orjson.__version__,
    }


def report(feeds: dict[str, dict[str, Any]], archive: dict[str, Any] | None) -> None:
    """Print the medians and ratios as a table."""
    print(f"{'payload':<14}{'records':>9}{'rejected':>9}{'orjson floor':>14}", end="")
    print(f"{'normalize':>21}{'full path':>21}  target {TARGET:,}/s")
    for name, r in feeds.items():
        rejected = sum(r["dead_letters"].values())
        norm, full = r["normalize"], r["full"]
        print(
            f"{name:<14}{r['records']:>9,}{rejected:>9,}{r['orjson_floor']['median_per_s']:>12,}/s"
            f"{norm['median_per_s']:>12,}/s ({norm['ratio_to_peer']:.2f}x)"
            f"{full['median_per_s']:>12,}/s ({full['ratio_to_peer']:.2f}x)"
            f"  {'meets' if full['meets_target'] else 'MISSES'}"
        )
    if archive is not None:
        a = archive
        print(
            f"archive {Path(a['file']).name}: {a['rows']:,} rows, "
            f"{sum(a['dead_letters'].values()):,} rejected; read {a['read']['median_per_s']:,}/s, "
            f"read+normalize {a['normalize']['median_per_s']:,}/s "
            f"({a['normalize']['ratio_to_peer']:.2f}x), "
            f"read+full {a['full']['median_per_s']:,}/s ({a['full']['ratio_to_peer']:.2f}x)"
        )


def main() -> None:
    """Run the benchmark, print the table and write the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fault-rate", type=float, default=0.01)
    parser.add_argument("--archive", type=Path, default=DIVVY_MONTH)
    parser.add_argument("--batch-rows", type=int, default=IngestConfig().batch_rows)
    parser.add_argument("--profile", action="store_true", help="cProfile the full path after")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "ingest.json"
    )
    args = parser.parse_args()
    core = pin_one_core()
    started = time.perf_counter()
    feeds = build_feeds(args.stations, args.publications, args.fault_rate)
    # warm-up: lazy imports, caches, the first SQLite files
    bench_feeds([Feed.of(f.name, f.docs[:5]) for f in feeds], 1)
    gbfs = bench_feeds(feeds, args.repeats)
    archive = None
    if args.archive.exists():
        archive = bench_archive(args.archive, args.batch_rows, args.repeats)
    else:
        print(f"skipping the archive benchmark: {args.archive} does not exist")
    seconds = time.perf_counter() - started
    result = {
        "benchmark": "ingest",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
        "machine": machine(core),
        "params": {
            "stations": args.stations,
            "publications": args.publications,
            "repeats": args.repeats,
            "fault_rate": args.fault_rate,
            "batch_rows": args.batch_rows,
        },
        "target_records_per_s": TARGET,
        "results": {"gbfs": gbfs, "archive": archive},
        "seconds": round(seconds, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(
        f"ingest: {args.stations} stations x {args.publications} publications, median of"
        f" {args.repeats} runs on core {core}; ratios vs the peer in the same run"
    )
    report(gbfs, archive)
    print(f"wrote {args.out} ({seconds:.0f} s)")
    if args.profile:
        print_profile(feeds, 15)


if __name__ == "__main__":
    main()
