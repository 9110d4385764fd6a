"""GBFS → online store, end to end: DESIGN's ingest target measured on the whole path.

    .venv/bin/python benchmarks/bench_ingest_online.py [--stations 1000] [--publications 60]
        [--live 1000] [--interval 0.25] [--repeats 3]

A simulated city's history (``--history-days``, as an archive: ``ingest_archive`` + the offline
sink, so the bike-share plan's batch features have their runs) is materialized first, untimed.
Then the same city goes on publishing GBFS v2.3 ``station_status`` documents (JSON bytes, as
the simulator's server renders them, one per simulated minute):

* **throughput** — ``--publications`` documents, each ``normalize_document`` →
  ``IngestRun.commit_status`` (dead letters + log append with producer state, as ``dockline
  ingest`` does), then one ``Materializer.run_once`` (the bike-share plan, batch features
  included, per-entity state and vectors written to the SQLite online store, as ``dockline
  features materialize`` does): station records/s over both stages, and each stage's own rate.
  This process is pinned to one core. Median of ``--repeats`` rounds on the same data dir.
* **event → online** — a child process runs ``dockline.pipeline.features.materialize(...,
  follow=True)`` (the product's follower); this process ingests one document every
  ``--interval`` s and watches ``--watched`` stations' per-entity state in the online store
  (``read_many`` every millisecond). Per document: the wall time from the moment its bytes were
  handed to the normalizer (the fetch) until every watched station's state knows it
  (``as_of >= ingested_at``); a document not visible within ``--timeout`` s is a failure.

Documents carry simulated times (the city runs in its own past), so freshness is measured on
the wall clock only. Writes ``benchmarks/results/ingest_online.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from dockline.core.time import to_micros
from dockline.features.materialize import STATE_GROUP, Materializer
from dockline.pipeline.features import (
    _state_path,
    load_plan,
    materialize,
    offline_executor,
    open_online_store,
)
from dockline.pipeline.ingest import IngestRun, ingest_archive, sink_offline
from dockline.pipeline.platform import Platform
from dockline.sim import City, CityConfig, dumps, render_station_status, write_archive

HERE = Path(__file__).resolve().parent
START = datetime(2026, 5, 4, tzinfo=UTC)  # the simulated history's first day
FETCH_DELAY = timedelta(seconds=2)  # ingested_at = publication time + a fetch delay
TARGET_RECORDS_S = 200_000  # DESIGN.md: GBFS → online store, per core
TARGET_P99_MS = 250.0  # DESIGN.md: event → online store


class LiveCity:
    """The city after its archived history: one GBFS v2.3 document per simulated minute."""

    def __init__(self, stations: int, history_days: float) -> None:
        self.city = City(CityConfig(stations=stations, seed=1, start=START))
        self.city.run(round(history_days * 1440))  # the archive's steps: same ids, same state

    def next_doc(self) -> tuple[bytes, datetime, str]:
        """The next publication: (payload, ingested_at, batch_id)."""
        self.city.step()
        status = self.city.status()
        doc = render_station_status(status, self.city.station_ids, "2.3", ttl=60)
        return dumps(doc), status.time + FETCH_DELAY, f"station_status@{status.time.isoformat()}"


def ingest_docs(run: IngestRun, docs: list[tuple[bytes, datetime, str]]) -> tuple[int, int]:
    """Normalize and commit ``docs``: (records received, dead letters)."""
    received = rejected = 0
    for payload, ingested_at, batch_id in docs:
        batch = run.normalizer.normalize_document(
            payload, ingested_at=ingested_at, batch_id=batch_id
        )
        run.commit_status(batch)
        received += batch.received
        rejected += len(batch.dead_letters)
    return received, rejected


def setup(root: Path, stations: int, history_days: float) -> Platform:
    """History archived, sunk offline and materialized (the state every later step starts from)."""
    config = CityConfig(stations=stations, seed=1, start=START)
    write_archive(config, history_days, root / "archive")
    platform = Platform.open(root / "data")
    ingest_archive(platform, root / "archive", source="archive:history").check_accounting()
    sink_offline(platform)
    materialize(platform)
    return platform


def throughput(platform: Platform, city: LiveCity, publications: int) -> dict[str, Any]:
    """One round: ``publications`` documents ingested, then materialized."""
    docs = [city.next_doc() for _ in range(publications)]
    run = IngestRun(platform, "gbfs:bench", platform.open_log(), platform.open_deadletters())
    try:
        began = time.perf_counter()
        received, rejected = ingest_docs(run, docs)
        ingest_s = time.perf_counter() - began
    finally:
        run.close()
    plan = load_plan(platform)
    log = platform.open_log()
    store = open_online_store(platform)
    try:
        with offline_executor(platform, plan) as offline:
            materializer = Materializer(
                plan,
                log,
                store,
                clock=platform.clock,
                state_path=_state_path(platform, plan),
                batch_provider=offline.batch_run,
            )
            began = time.perf_counter()
            report = materializer.run_once()
            materialize_s = time.perf_counter() - began
    finally:
        store.close()
        log.close()
    accepted = received - rejected
    assert report.events == accepted, (report.events, accepted)
    return {
        "documents": publications,
        "records": received,
        "dead_letters": rejected,
        "ingest_s": round(ingest_s, 3),
        "materialize_s": round(materialize_s, 3),
        "ingest_records_per_s": round(received / ingest_s),
        "materialize_events_per_s": round(report.events / materialize_s),
        "end_to_end_records_per_s": round(received / (ingest_s + materialize_s)),
        "entities_written": report.entities,
    }


def follower(root: Path) -> None:
    """Child: the product's materializer follower until ``root/stop`` exists."""
    platform = Platform.open(root / "data")
    (root / "ready").touch()
    report = materialize(platform, follow=True, stop=(root / "stop").exists)
    print(json.dumps({"events": report.events, "micro_batches": report.micro_batches}))


def freshness(
    root: Path,
    platform: Platform,
    city: LiveCity,
    live: int,
    interval: float,
    watched_n: int,
    timeout: float,
    seed: int,
) -> dict[str, Any]:
    """One live run: per document, fetch → every watched station's state knows it (ms)."""
    (root / "stop").unlink(missing_ok=True)
    (root / "ready").unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (root / "ready").exists():
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the materializer child did not start")
        time.sleep(0.01)
    rng = np.random.default_rng(seed)
    ids = list(city.city.station_ids)
    store = open_online_store(platform)
    run = IngestRun(platform, "gbfs:bench", platform.open_log(), platform.open_deadletters())
    per_doc_ms: list[float] = []
    per_station_ms: list[float] = []
    failures = 0
    try:
        for k in range(live + 1):  # document 0 warms the follower up (opening it): not counted
            next_due = time.monotonic() + interval
            payload, ingested_at, batch_id = city.next_doc()
            watched = [ids[i] for i in rng.choice(len(ids), watched_n, replace=False)]
            target = to_micros(ingested_at)
            fetched = time.perf_counter()
            ingest_docs(run, [(payload, ingested_at, batch_id)])
            pending = set(watched)
            seen_at: dict[str, float] = {}
            limit = fetched + (timeout if k else 120.0)
            while pending and time.perf_counter() < limit:
                asked = sorted(pending)
                rows = store.read_many(asked, [STATE_GROUP])
                now = time.perf_counter()
                for entity, groups in zip(asked, rows, strict=True):
                    vector = groups[STATE_GROUP]
                    if vector is not None and vector.as_of_us >= target:
                        seen_at[entity] = now
                        pending.discard(entity)
                if pending:
                    time.sleep(0.001)
            if k == 0:
                continue
            if pending:
                failures += 1
                per_doc_ms.append(float("inf"))
                per_station_ms += [float("inf")] * len(pending)
            else:
                per_doc_ms.append((max(seen_at.values()) - fetched) * 1000)
            per_station_ms += [(t - fetched) * 1000 for t in seen_at.values()]
            time.sleep(max(0.0, next_due - time.monotonic()))
    finally:
        run.close()
        store.close()
        (root / "stop").touch()
        out, _ = child.communicate(timeout=120)
    return {
        "documents": live,
        "failures": failures,
        "per_doc_ms": [round(x, 2) for x in per_doc_ms],
        "per_station_ms": per_station_ms,
        "follower": json.loads(out.strip().splitlines()[-1]) if out.strip() else None,
    }


def _pct(values: list[float], q: float) -> float:
    """A percentile that is a sample (no interpolation): ``inf`` (``Infinity`` in the JSON) when
    that sample is a failure."""
    return round(float(np.percentile(np.array(values), q, method="higher")), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--history-days", type=float, default=1.0)
    parser.add_argument("--publications", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live", type=int, default=1000, help="documents per freshness run")
    parser.add_argument("--live-runs", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--watched", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ingest_online.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        follower(args.child)
        return
    load_before = os.getloadavg()[0]
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="dockline-bench-ingest-online-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        platform = setup(root, args.stations, args.history_days)
        setup_s = time.perf_counter() - began
        city = LiveCity(args.stations, args.history_days)
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if affinity is not None:
            os.sched_setaffinity(0, {min(affinity)})  # the throughput rounds: one core
        rounds = [throughput(platform, city, args.publications) for _ in range(args.repeats)]
        for r in rounds:
            print(json.dumps(r), flush=True)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)  # the live run: follower and ingest side by side
        live = [
            freshness(root, platform, city, args.live, args.interval, args.watched, args.timeout, i)
            for i in range(args.live_runs)
        ]
    per_doc = [x for r in live for x in r["per_doc_ms"]]
    per_station = [x for r in live for x in r.pop("per_station_ms")]
    e2e = statistics.median(r["end_to_end_records_per_s"] for r in rounds)
    result = {
        "benchmark": "ingest_online",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "started": started.isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "python": sys.version.split()[0],
        },
        "setup": {
            "stations": args.stations,
            "history_days": args.history_days,
            "setup_s": round(setup_s, 1),
            "gbfs_version": "2.3",
            "online_store": "sqlite",
        },
        "throughput": {
            "rounds": rounds,
            "median_end_to_end_records_per_s": round(e2e),
            "median_ingest_records_per_s": round(
                statistics.median(r["ingest_records_per_s"] for r in rounds)
            ),
            "median_materialize_events_per_s": round(
                statistics.median(r["materialize_events_per_s"] for r in rounds)
            ),
            "target_records_per_s": TARGET_RECORDS_S,
            "meets_target": e2e >= TARGET_RECORDS_S,
        },
        "event_to_online": {
            "interval_s": args.interval,
            "watched_stations": args.watched,
            "timeout_s": args.timeout,
            "documents": len(per_doc),
            "failures": sum(r["failures"] for r in live),
            "per_doc_p50_ms": _pct(per_doc, 50),
            "per_doc_p99_ms": _pct(per_doc, 99),
            "per_doc_max_ms": _pct(per_doc, 100),
            "station_samples": len(per_station),
            "per_station_p50_ms": _pct(per_station, 50),
            "per_station_p99_ms": _pct(per_station, 99),
            "target_p99_ms": TARGET_P99_MS,
            "meets_target": _pct(per_doc, 99) < TARGET_P99_MS,
            "runs": live,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    t, f = result["throughput"], result["event_to_online"]
    print(
        f"GBFS → online store, {args.stations} stations: median"
        f" {t['median_end_to_end_records_per_s']:,} records/s end to end"
        f" (ingest {t['median_ingest_records_per_s']:,}/s, materialize"
        f" {t['median_materialize_events_per_s']:,} events/s); target {TARGET_RECORDS_S:,}"
    )
    print(
        f"event → online: {f['documents']} documents, p50 {f['per_doc_p50_ms']} ms,"
        f" p99 {f['per_doc_p99_ms']} ms, max {f['per_doc_max_ms']} ms, failures {f['failures']};"
        f" per station ({f['station_samples']} samples) p99 {f['per_station_p99_ms']} ms"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
