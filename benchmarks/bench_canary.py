"""Benchmark the canary's two goals end to end: bad models rolled back within 2 analysis windows,
no false rollback on replayed healthy releases.

Run: ``.venv/bin/python benchmarks/bench_canary.py [--cities 5 6] [--traffic-seeds 0 1 2]
[--stations 60]``.

For each simulated city (``--cities``: seeds), 20 minutes of its GBFS feed are ingested and
materialized; a champion (a logistic regression over the ``__last`` features, a real ONNX bundle)
is registered in the real MLflow registry and served by the real app
(``pipeline.serve.BackgroundServer``). Then each release is run through the loop
(``pipeline.loop.run_cycle``, default ``[monitor.canary]`` rules except a 2-minute window,
``min_requests`` 30, ``success_windows`` 2): shadow → canary → promote or roll back, with
traffic every window — per round each station is asked with probability 0.8, in a random order
(``--traffic-seeds``), four rounds per window, the clock advancing over the window.

Releases:

* healthy: ``identical`` (the champion's own model as a new version) and ``retrain`` (its
  weights moved 2 %, a retrain on slightly different data);
* bad: ``constant_low`` (always 0.03), ``constant_high`` (always 0.97), ``shuffled`` (trained on
  shuffled labels) and ``inverted`` (learned the opposite).

Writes ``benchmarks/results/canary.json``: per run the outcome, the analysis windows it took
and their verdicts; the summary counts false rollbacks and the worst windows-to-rollback.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "monitor"))  # the loop tests' bundle maker

WINDOW = timedelta(minutes=2)
RELEASES: dict[str, dict[str, Any]] = {
    "identical": {"constant": None},
    "retrain": {"constant": None, "scale": 1.02},
    "constant_low": {"constant": 0.03},
    "constant_high": {"constant": 0.97},
    "shuffled": {"constant": None, "shuffle": True},
    "inverted": {"constant": None, "scale": -1.0},
}
HEALTHY = {"identical", "retrain"}


def _city(root: Path, seed: int, stations: int) -> tuple[Path, list[str], list[str], str, Any]:
    from dockline.core.time import FixedClock
    from dockline.pipeline.features import load_plan, materialize
    from dockline.pipeline.ingest import ingest_feed, sink_offline
    from dockline.pipeline.platform import Platform
    from dockline.sim import City, CityConfig, SimServer

    city = City(CityConfig(stations=stations, seed=seed))
    clock = FixedClock(city.time)
    platform = Platform.open(root / "data", clock=clock)
    end = city.time + timedelta(minutes=20)
    with SimServer(city, speed=6000.0, clock=clock) as server:
        ingest_feed(
            platform,
            server.url + "/gbfs.json",
            stop=lambda: clock.now() >= end,
            clock_source="feed",
            on_progress=lambda _: clock.advance(timedelta(minutes=1)),
        )
    sink_offline(platform)
    materialize(platform)
    plan = load_plan(platform)
    features = [n for n in plan.feature_names if n.endswith("__last") and "is_" not in n]
    return root / "data", list(city.station_ids), features, plan.hash, end


def _run(
    base: Path,
    work: Path,
    name: str,
    release: str,
    stations: list[str],
    features: list[str],
    plan_hash: str,
    end: datetime,
    traffic_seed: int,
    max_windows: int,
) -> dict[str, Any]:
    import httpx
    import numpy as np
    from loop_helpers import TOKEN, bundle, verdict

    from dockline.core.time import FixedClock
    from dockline.pipeline.demo_loop import wait_for_log
    from dockline.pipeline.loop import HttpServingControl, TrainResult, run_cycle
    from dockline.pipeline.platform import Platform
    from dockline.pipeline.serve import BackgroundServer, create_serving_app
    from dockline.train.registry import MlflowRegistry

    data = work / name
    shutil.copytree(base, data)
    clock = FixedClock(end + timedelta(seconds=5))
    (data / "dockline.toml").write_text(
        f'[serve]\nmodel_name = "{name}"\nreload_poll = "1h"\nadmin_token = "{TOKEN}"\n'
        'prediction_flush_interval = "100ms"\n[clock]\nkind = "data"\n'
        '[monitor.canary]\nanalysis_window = "2m"\nmin_requests = 30\nsuccess_windows = 2\n'
    )
    platform = Platform.open(data, clock=clock)
    registry = MlflowRegistry.for_data_dir(platform.data, clock)
    champion = bundle(work / f"{name}-a", features, plan_hash, constant=None)
    registry.register(name, champion.path, run_id=None, gate=verdict())
    registry.set_alias(name, "champion", 1, actor="bench", reason="seed", action="promote")
    challenger = bundle(work / f"{name}-b", features, plan_hash, **RELEASES[release])

    def trainer(platform: Platform, at: datetime) -> TrainResult:
        version = registry.register(name, challenger.path, run_id=None, gate=verdict()).version
        registry.set_alias(
            name, "challenger", version, actor="bench", reason="gate", action="register"
        )
        return TrainResult(version, "challenger", True)

    rng = np.random.default_rng(traffic_seed)
    analyses: list[dict[str, Any]] = []
    outcome = "undecided"
    with (
        BackgroundServer(create_serving_app(platform)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        control = HttpServingControl(server.url, TOKEN)
        run_cycle(platform, control, trainer=trainer, force_train=True)
        for _ in range(max_windows):
            began, answered = clock.now(), 0
            for _ in range(4):
                for station in rng.permutation(stations):
                    if rng.random() < 0.8:
                        r = client.post("/v1/predict", json={"entity": str(station)})
                        answered += r.status_code == 200
                clock.advance(WINDOW / 4)
            clock.advance(timedelta(seconds=1))
            wait_for_log(platform, began, answered)  # the log's writer flushes on its thread
            report = run_cycle(platform, control, trainer=trainer)
            analyses.extend(
                {
                    "phase": a.phase,
                    "verdict": a.verdict,
                    "reason": a.reason,
                    "shift": next(m.score for m in a.metrics if m.name == "prediction_shift"),
                }
                for a in report.analyses
            )
            actions = [a["action"] for a in report.actions]
            if "rollback" in actions:
                outcome = "rolled_back"
                break
            if "promote" in actions:
                outcome = "promoted"
                break
    shutil.rmtree(data, ignore_errors=True)
    return {
        "release": release,
        "healthy": release in HEALTHY,
        "traffic_seed": traffic_seed,
        "outcome": outcome,
        "windows": len(analyses),
        "analyses": analyses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cities", type=int, nargs="+", default=[5, 6])
    parser.add_argument("--traffic-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stations", type=int, default=60)
    parser.add_argument("--max-windows", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "canary.json")
    args = parser.parse_args()
    began = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-canary-") as tmp:
        for city_seed in args.cities:
            root = Path(tmp) / f"city{city_seed}"
            base, stations, features, plan_hash, end = _city(root, city_seed, args.stations)
            for release in RELEASES:
                # healthy releases get every traffic seed (false rollbacks are the rare event)
                seeds = args.traffic_seeds if release in HEALTHY else args.traffic_seeds[:1]
                for traffic_seed in seeds:
                    name = f"c{city_seed}-{release}-{traffic_seed}"
                    run = _run(base, root, name, release, stations, features, plan_hash, end,
                               traffic_seed, args.max_windows)  # fmt: skip
                    run["city_seed"] = city_seed
                    runs.append(run)
                    print(
                        f"city {city_seed} {release:14s} traffic {traffic_seed}: {run['outcome']}"
                        f" after {run['windows']} windows"
                        f" ({', '.join(a['verdict'] for a in run['analyses'])})",
                        flush=True,
                    )
    bad = [r for r in runs if not r["healthy"]]
    healthy = [r for r in runs if r["healthy"]]
    summary = {
        "bad_runs": len(bad),
        "bad_rolled_back": sum(r["outcome"] == "rolled_back" for r in bad),
        "bad_max_windows_to_rollback": max((r["windows"] for r in bad), default=None),
        "healthy_runs": len(healthy),
        "healthy_false_rollbacks": sum(r["outcome"] == "rolled_back" for r in healthy),
        "healthy_promoted": sum(r["outcome"] == "promoted" for r in healthy),
        "goal_rollback_within_2_windows": all(
            r["outcome"] == "rolled_back" and r["windows"] <= 2 for r in bad
        ),
        "goal_no_false_rollback": all(r["outcome"] != "rolled_back" for r in healthy),
    }
    result = {
        "benchmark": "canary",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seconds": round(time.perf_counter() - began, 1),
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
