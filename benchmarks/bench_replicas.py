"""Serving replicas behind nginx: requests/s and latency through nginx with 1 vs 2 replicas.

    .venv/bin/python benchmarks/bench_replicas.py [--stations 60] [--concurrency 16]
        [--duration 5] [--repeats 3] [--out benchmarks/results/replicas.json]

One data dir whose online store is a private redis-server (simulated city, ingested, sunk and
materialized into Redis, a champion registered), two ``dockline serve`` processes over it, and
two nginx instances rendered from ``deploy/nginx/dockline.conf``: one balancing replica 0 alone,
one balancing both. wrk (closed loop, ``--concurrency`` connections, one thread) sends
``POST /v1/predict`` for every station in turn to each of three systems — replica 0 directly,
nginx → 1 replica, nginx → 2 replicas — in interleaved repeats (outside load falls on all alike);
each cell is the median of the repeats. Needs nginx, redis-server and wrk (``make servers``,
``apt-get install wrk``). Everything shares the machine's cores: on 2 cores the client, nginx,
Redis and the replicas compete, so a second replica adds processes, not cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_serving's wrk script and runner
sys.path.insert(0, str(HERE.parent / "tests" / "serve"))  # the replica test's helpers

from replica_helpers import build_served_dir, nginx, redis_server, replicas  # noqa: E402

from bench_serving import WRK_SCRIPT, _wrk  # noqa: E402

RESULTS = HERE / "results" / "replicas.json"
CELL = ("rps", "p50_ms", "p90_ms", "p99_ms")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _warm(url: str, entities: list[str]) -> dict[str, int]:
    """One request per station; the answers' HTTP statuses."""
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for e in entities:
            key = str(client.post("/v1/predict", json={"entity": e}).status_code)
            statuses[key] = statuses.get(key, 0) + 1
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=60)
    parser.add_argument("--days", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        with redis_server(root / "redis") as redis_url:
            served = build_served_dir(root, redis_url, stations=args.stations, days=args.days)
            setup_s = time.perf_counter() - began
            script = root / "bench.lua"
            script.write_text(
                WRK_SCRIPT.format(ids=", ".join(json.dumps(e) for e in served.entities))
            )
            with (
                replicas(served, 2, root / "logs") as started,
                nginx(root / "nginx-1", [started[0].url]) as one,
                nginx(root / "nginx-2", [r.url for r in started]) as two,
            ):
                systems = {"direct-1": started[0].url, "nginx-1": one, "nginx-2": two}
                probes = {name: _warm(url, served.entities) for name, url in systems.items()}
                print(json.dumps({"setup_s": round(setup_s, 1), "probes": probes}), flush=True)
                for rep in range(args.repeats):
                    for name, url in systems.items():
                        run = _wrk(_port(url), args.concurrency, args.duration, script)
                        runs.setdefault(name, []).append(run)
                        print(rep, name, json.dumps(run), flush=True)
    cells = {
        name: {
            **{k: round(statistics.median(r[k] for r in rs), 2) for k in CELL},
            "requests": sum(r["requests"] for r in rs),
            "errors": sum(r["errors"] + r["timeouts"] for r in rs),
            "runs": [{k: round(r[k], 2) for k in CELL} for r in rs],
        }
        for name, rs in runs.items()
    }
    result = {
        "benchmark": "bench_replicas",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "stations": args.stations,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "repeats": args.repeats,
        "online_store": "redis",
        "systems": cells,
        "speedup_2_vs_1_replica": round(cells["nginx-2"]["rps"] / cells["nginx-1"]["rps"], 2),
        "nginx_overhead_p50_ms": round(cells["nginx-1"]["p50_ms"] - cells["direct-1"]["p50_ms"], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "systems"}, indent=2))
    for name, cell in cells.items():
        print(name, {k: cell[k] for k in (*CELL, "requests", "errors")})


if __name__ == "__main__":
    main()
