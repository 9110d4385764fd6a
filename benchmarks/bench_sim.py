"""Benchmark the city simulator (station-minutes/s) and GBFS rendering (ms per publication).

Run: ``.venv/bin/python benchmarks/bench_sim.py [--stations 1000] [--steps 2000] [--repeats 5]``.
Writes ``benchmarks/results/sim.json``. Target: >= 1,000,000 station-minutes/s on one core.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from dockline.sim import City, CityConfig, FaultConfig, FaultInjector, dumps, render_station_status

TARGET = 1_000_000


def pin_one_core() -> int | None:
    """Pin to one core when the OS allows it (Linux); returns the core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def bench_city(stations: int, steps: int, repeats: int) -> list[float]:
    runs = []
    for seed in range(repeats):
        city = City(CityConfig(stations=stations, seed=seed))
        t0 = time.perf_counter()
        city.run(steps)
        runs.append(stations * steps / (time.perf_counter() - t0))
    return runs


def bench_render(stations: int, repeats: int, faults: FaultConfig) -> dict[str, float]:
    city = City(CityConfig(stations=stations, seed=0, faults=faults))
    injector = FaultInjector(faults, seed=0, n_stations=stations)
    out: dict[str, float] = {}
    for version in ("2.3", "3.0"):
        times = []
        for _ in range(repeats):
            city.step()
            status = city.status()
            t0 = time.perf_counter()
            plan = injector.plan(city.time_s, status.last_reported)
            dumps(render_station_status(status, city.station_ids, version, ttl=60, plan=plan))
            times.append((time.perf_counter() - t0) * 1000)
        out[version] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sim.json")
    args = parser.parse_args()
    core = pin_one_core()
    bench_city(args.stations, 100, 1)  # warm-up
    runs = bench_city(args.stations, args.steps, args.repeats)
    median = statistics.median(runs)
    clean = bench_render(args.stations, 50, FaultConfig())
    faulted = bench_render(args.stations, 50, FaultConfig.all(0.005))
    result = {
        "benchmark": "sim",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_1min": round(os.getloadavg()[0], 2),
        "stations": args.stations,
        "steps": args.steps,
        "repeats": args.repeats,
        "pinned_core": core,
        "median_station_minutes_per_s": round(median),
        "runs": [round(r) for r in runs],
        "target_station_minutes_per_s": TARGET,
        "meets_target": median >= TARGET,
        "render_ms_per_publication": {
            "stations": args.stations,
            "v2.3": round(clean["2.3"], 3),
            "v3.0": round(clean["3.0"], 3),
            "v2.3_faults_all": round(faulted["2.3"], 3),
            "v3.0_faults_all": round(faulted["3.0"], 3),
        },
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(
        f"city: median {median:,.0f} station-minutes/s over {args.repeats} runs "
        f"({args.stations} stations x {args.steps} steps; target {TARGET:,})"
    )
    print(
        f"render {args.stations} stations: v2.3 {clean['2.3']:.2f} ms, v3.0 {clean['3.0']:.2f} ms;"
        f" with faults all: {faulted['2.3']:.2f} / {faulted['3.0']:.2f} ms"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
